"""Run-scoped tokens, one per agent: who is calling the coordination tools.

They live in ``<run dir>/coordination.json`` (``{"tokens": {"<agent>": "<token>"}}``), a file only
its owner can read (``coordstore.private``), made at run setup and read once by the server. A
token reads ``orch.<run id>.<secret>``, so a token of another run is refused by name ("belongs to
run X, not Y") rather than as an unknown string; the secret is compared in constant time.
A resumed run keeps its tokens: ``ensure_tokens`` only adds the agents that have none.
"""

from __future__ import annotations

import hmac
import json
import secrets
from pathlib import Path

from coordstore.errors import InputError
from coordstore.private import write_private

from orchestrator.rundir import RunPaths, RunSpec

FILE_NAME = "coordination.json"
PREFIX = "orch"
SECRET_BYTES = 24  # 192 bits: not guessable, short enough for an environment variable


class TokenRefused(Exception):
    """A token that does not name an agent of this run; the text says why (never the token)."""


def token_file(paths: RunPaths) -> Path:
    return paths.root / FILE_NAME


def new_token(run_id: str) -> str:
    return f"{PREFIX}.{run_id}.{secrets.token_urlsafe(SECRET_BYTES)}"


def read_tokens(paths: RunPaths) -> dict[str, str]:
    """agent -> token from the run's file; ``InputError`` naming the file when missing or bad."""
    f = token_file(paths)
    try:
        raw = json.loads(f.read_text())
    except FileNotFoundError as e:
        raise InputError(f"{f}: no coordination tokens (the run was set up without them)") from e
    except (ValueError, OSError) as e:
        raise InputError(f"{f}: unreadable ({e})") from e
    tokens = raw.get("tokens") if isinstance(raw, dict) else None
    if not isinstance(tokens, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tokens.items()):
        raise InputError(f"{f}: key 'tokens' must map agent ids to token strings")
    return tokens


def ensure_tokens(paths: RunPaths, spec: RunSpec) -> dict[str, str]:
    """A token for every agent of ``spec``: the file's own kept, missing ones added (and written)."""
    try:
        tokens = read_tokens(paths)
    except InputError:
        if token_file(paths).exists():
            raise  # a damaged file is the user's to look at, not ours to overwrite
        tokens = {}
    missing = [a.id for a in spec.agents if a.id not in tokens]
    if missing or not token_file(paths).exists():
        tokens.update({a: new_token(spec.run_id) for a in missing})
        write_private(token_file(paths), json.dumps({"tokens": tokens}, indent=2, sort_keys=True) + "\n")
    return tokens


class TokenBook:
    """Who a token stands for, in this run. Lookups are dictionary reads: the file is read once."""

    def __init__(self, run_id: str, tokens: dict[str, str]):
        self.run_id = run_id
        self._by_secret = {t: a for a, t in tokens.items()}
        self._tokens = dict(tokens)

    def token_of(self, agent: str) -> str:
        return self._tokens[agent]

    def agent_of(self, token: str | None) -> str:
        """The agent ``token`` belongs to; ``TokenRefused`` saying why otherwise."""
        if not token:
            raise TokenRefused("no token")
        parts = token.split(".")
        if len(parts) < 3 or parts[0] != PREFIX:
            raise TokenRefused("not an orch coordination token")
        run = ".".join(parts[1:-1])
        if run != self.run_id:
            raise TokenRefused(f"the token belongs to run {run}, not {self.run_id}")
        agent = None
        for known, who in self._by_secret.items():  # constant time per comparison; a run has few agents
            if hmac.compare_digest(known.encode(), token.encode()):
                agent = who
        if agent is None:
            raise TokenRefused(f"the token is not one of run {self.run_id}'s")
        return agent


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, None without one."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None
