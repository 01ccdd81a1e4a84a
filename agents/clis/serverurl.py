"""Which conversation a request belongs to, carried in the base URL an agent is given.

Agent CLIs let one set a base URL but rarely headers, so the session rides in the URL path:

    http://127.0.0.1:PORT                  the default session, the server's default script
    http://127.0.0.1:PORT/s/NAME           a named session (its own fault state)
    http://127.0.0.1:PORT/ctx/B64          a session with a context: base64url of a JSON object

The context says what the ``sim`` and ``replay`` scripts need to know about the task: ``task``
(id, title, file_scope, estimate, meta.commit / meta.sim / meta.model_faults), ``seed``,
``attempt``, ``time_scale``, ``worktree``, and optionally ``script`` to override the server's
default. ``agent_env`` builds the environment that points the usual CLIs at such a URL.

Standard library only: the agent side imports this in every runner.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from typing import Any

CTX_PREFIX = "ctx"
NAME_PREFIX = "s"
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
# task fields a script may use; the rest (long descriptions, bookkeeping) stays out of the URL
TASK_FIELDS = ("id", "title", "file_scope", "time_estimate_ms", "points")
TASK_META = ("commit", "sim", "model_faults")
# the model server's scripts that play a role for a whole agent session (agent-driven variants)
ROLE_SCRIPTS = ("coordinator", "worker", "lead", "decomposer")


@dataclass
class SessionContext:
    session: str = "default"
    script: str | None = None  # None: the server's default script
    task: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    attempt: int = 1
    time_scale: float = 1.0
    worktree: str | None = None
    # a long-lived role session (agent-driven variants): who plays, and the role script's options
    agent: str | None = None
    run: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, {}, "default")}


def encode(ctx: SessionContext) -> str:
    raw = json.dumps(ctx.to_json(), separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(token: str) -> SessionContext:
    """The context of a ``/ctx/TOKEN`` prefix; ValueError if it is not one."""
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, TypeError) as e:
        raise ValueError(f"session context {token[:24]}...: not base64url JSON ({e})") from e
    if not isinstance(data, dict):
        raise ValueError("session context: not a JSON object")
    known = SessionContext.__dataclass_fields__
    return SessionContext(**{k: v for k, v in data.items() if k in known})


def split_path(path: str) -> tuple[SessionContext, str]:
    """(session context, the API path after the session prefix) of a request path."""
    parts = path.split("/", 3)  # "", prefix, token, rest
    if len(parts) >= 3 and parts[1] == CTX_PREFIX:
        ctx = decode(parts[2])
        if ctx.session == "default" and ctx.task:  # without a task, the prompt's task names it (tasksource)
            ctx.session = f"ctx-{parts[2][-16:]}"
        return ctx, "/" + (parts[3] if len(parts) > 3 else "")
    if len(parts) >= 3 and parts[1] == NAME_PREFIX and _NAME.match(parts[2]):
        return SessionContext(session=parts[2]), "/" + (parts[3] if len(parts) > 3 else "")
    return SessionContext(), path


def task_context(task: Any) -> dict[str, Any]:
    """The part of a task (a ``coordstore.models.Task`` or a dict) a script may need."""
    get = task.get if isinstance(task, dict) else (lambda k, d=None: getattr(task, k, d))
    out = {k: get(k) for k in TASK_FIELDS if get(k) not in (None, [], "")}
    meta = get("meta") or {}
    kept = {k: meta[k] for k in TASK_META if k in meta}
    if kept:
        out["meta"] = kept
    return out


def session_url(server_url: str, *, session: str | None = None, task: Any = None, seed: int = 0, attempt: int = 1,
                time_scale: float = 1.0, worktree: str | None = None, script: str | None = None,
                agent: str | None = None, run: str | None = None, options: dict[str, Any] | None = None) -> str:
    """The base URL that puts an agent's requests in their own session (with a context when a
    task is given)."""
    base = server_url.rstrip("/")
    if task is None and script is None and worktree is None:
        return f"{base}/{NAME_PREFIX}/{session or 'default'}"
    tctx = task_context(task) if task is not None else {}
    name = session or (f"{tctx.get('id', 'task')}.{attempt}" if tctx else "default")
    ctx = SessionContext(session=name, script=script, task=tctx, seed=seed, attempt=attempt, time_scale=time_scale,
                         worktree=str(worktree) if worktree else None, agent=agent, run=run, options=dict(options or {}))
    return f"{base}/{CTX_PREFIX}/{encode(ctx)}"


def agent_env(base_url: str, key: str) -> dict[str, str]:
    """Environment variables that point the common agent CLIs and SDKs at ``base_url``, with the
    server's ``key`` as their API key (each sends it its own way; the server takes them all).

    Anthropic clients append ``/v1/messages`` to their base URL; OpenAI clients expect the
    ``/v1`` in it; Gemini clients (``GOOGLE_GEMINI_BASE_URL``) add ``/v1beta``."""
    # opencode takes providers only from its config: declare the server as provider "orch"
    opencode = {"provider": {"orch": {"npm": "@ai-sdk/openai-compatible", "name": "orch",
                                      "options": {"baseURL": f"{base_url}/v1", "apiKey": key},
                                      "models": {"orch": {"name": "orch", "tool_call": True}}}}}
    return {
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": key,
        "OPENAI_BASE_URL": f"{base_url}/v1",
        "OPENAI_API_KEY": key,
        "OPENCODE_CONFIG_CONTENT": json.dumps(opencode),
        "GOOGLE_GEMINI_BASE_URL": base_url,  # the Gemini SDKs append /v1beta/models/...
        "GEMINI_API_KEY": key,
    }
