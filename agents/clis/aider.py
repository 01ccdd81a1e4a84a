"""aider: ``aider --message-file PROMPT --yes-always --no-pretty --no-stream ... --file F ...``.

aider has no structured output mode, so this parser reads its plain text (``--no-pretty``):

- ``Applied edit to PATH`` -- a ``step`` (``edit``, the path)
- ``Tokens: 2.1k sent, 1.2k cache write, 3.4k cache hit, 143 received.`` and
  ``Cost: $0.0067 message, $0.02 session.`` (same line or the next) -- one ``tokens`` event per
  model message. aider rounds counts above 1000 (``2.1k``, ``12k``): the totals are approximate.
- a ``litellm.RateLimitError`` / "rate limited you" message followed by ``Retrying in 0.5
  seconds...`` -- ``rate_limited``; another error followed by ``Retrying`` is logged
- an error line with no retry after it and no edit applied later fails the run: aider itself
  exits 0 after giving up on an API error

With orch's model server (a ``model_server:`` variant) aider is pointed at it as ``openai/orch``
through ``OPENAI_BASE_URL``, whose path carries the worktree (``context.session_url``): aider
edits by text, so the server answers with the task's edits as file listings or SEARCH/REPLACE
blocks (``orchestrator.modelserver.textedits``), computed from the worktree's files.

File scope entries that name files become ``--file`` arguments (aider edits files added to the
chat, and others only after asking), except files in a directory that does not exist yet: given
one, aider takes that directory for its root and writes outside the repository. Its histories go to the scratch directory, auto-commits are off (orch commits), and
``.gitignore`` is left alone; the repo-map cache it leaves in the worktree root is removed.

aider calls no tools, so it cannot be given orch's coordination server (``Invocation.mcp``): in
agent-driven variants it can only execute tasks assigned to it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from coordstore.errors import AgentError
from gitwork.runner import git

from agents.clis.base import MODEL_SERVER_ENV, CliEvent, Invocation, Parser, Preset, error, log, step, tokens
from agents.clis.serverurl import session_url

SERVED_MODEL = "openai/orch"  # aider's name for orch's model server (an OpenAI-compatible endpoint)

_TOKENS = re.compile(r"Tokens: (?P<sent>[\d.]+k?) sent(?:, (?P<write>[\d.]+k?) cache write)?"
                     r"(?:, (?P<hit>[\d.]+k?) cache hit)?, (?P<recv>[\d.]+k?) received\.")
_COST = re.compile(r"Cost: \$(?P<msg>[\d.]+) message, \$(?P<session>[\d.]+) session\.")
_APPLIED = re.compile(r"^Applied edit to (?P<path>.+?)\s*$")
_RETRY = re.compile(r"^Retrying in (?P<s>[\d.]+) seconds")
_ERROR = re.compile(r"(litellm\.\w+Error|\w+Error:|The API provider)")
_RATE = re.compile(r"RateLimitError|rate limited you", re.I)
_GLOB = re.compile(r"[*?\[]")


def _count(text: str | None) -> int:
    if not text:
        return 0
    return int(round(float(text[:-1]) * 1000)) if text.endswith("k") else int(float(text))


def build(inv: Invocation) -> list[str]:
    if inv.mcp:
        raise AgentError("CLI preset 'aider': aider calls no tools, so it cannot use orch's coordination server "
                         "(in agent-driven variants it can only execute tasks assigned to it)")
    argv = ["--message-file", inv.prompt_file, "--yes-always", "--no-pretty", "--no-stream", "--no-auto-commits",
            "--no-dirty-commits", "--no-gitignore", "--no-check-update", "--no-analytics", "--no-show-model-warnings",
            "--no-fancy-input", "--input-history-file", str(Path(inv.scratch) / "input.history"),
            "--chat-history-file", str(Path(inv.scratch) / "chat.history.md")]
    if inv.settings["edit_format"]:
        argv += ["--edit-format", inv.settings["edit_format"]]
    if os.environ.get(MODEL_SERVER_ENV) and not inv.model:
        argv += ["--model", SERVED_MODEL]
    if inv.model:
        argv += ["--model", inv.model]
    for rel in inv.file_scope:  # files only: aider's --file takes no directories or globs
        path = Path(inv.worktree) / rel
        if rel.endswith("/") or _GLOB.search(rel) or path.is_dir():
            continue
        if not path.parent.is_dir():  # aider would take the missing directory for its root, outside the repo
            continue
        argv += ["--file", rel]
    return argv + list(inv.extra_args)


def git_identity_env(worktree: str) -> dict[str, str]:
    """When git has no ``user.name``/``user.email``, aider writes placeholders ("Your Name") into
    the repository's config, which all worktrees share: a change to the user's repository, and a
    lock race between aiders starting together. A stand-in identity for aider's process alone
    (``GIT_CONFIG_COUNT``) prevents that; orch's commits carry the agent's identity anyway."""
    stand_in = {"user.name": "orch agent", "user.email": "agent@orch.invalid"}
    got = git(worktree, "config", "--get-regexp", r"^user\.(name|email)$", ok=None).stdout  # 1: none set
    have = {key for key, _, value in (ln.partition(" ") for ln in got.splitlines()) if value}  # aider skips empty ones too
    missing = [k for k in stand_in if k not in have]
    if not missing:
        return {}
    n = int(os.environ.get("GIT_CONFIG_COUNT") or 0)  # after any the environment already gives
    env = {"GIT_CONFIG_COUNT": str(n + len(missing))}
    for i, key in enumerate(missing, start=n):
        env[f"GIT_CONFIG_KEY_{i}"], env[f"GIT_CONFIG_VALUE_{i}"] = key, stand_in[key]
    return env


def aider_env(inv: Invocation) -> dict[str, str]:
    """A git identity if git has none (``git_identity_env``). With the run's model server, also its
    base URL with the worktree in the path, since the server must read the worktree's files and
    aider's prompt never names it (litellm reads ``OPENAI_BASE_URL`` before aider's
    ``--openai-api-base``, so both variables are set), and litellm's price table from its package
    rather than the network."""
    env = git_identity_env(inv.worktree)
    served = os.environ.get(MODEL_SERVER_ENV)
    if served:
        base = f"{session_url(served, worktree=inv.worktree)}/v1"
        env.update({"OPENAI_BASE_URL": base, "OPENAI_API_BASE": base, "LITELLM_LOCAL_MODEL_COST_MAP": "True"})
    return env


class AiderParser(Parser):
    def __init__(self) -> None:
        super().__init__()
        self.pending: dict | None = None  # a Tokens line waiting for its Cost line
        self.last_error: str | None = None  # an error not (yet) followed by a retry
        self.rate_error = False

    def feed(self, line: str) -> list[CliEvent]:
        text = line.rstrip("\n")
        out: list[CliEvent] = []
        m = _TOKENS.search(text)
        if m:
            out += self._flush()
            write, hit = _count(m["write"]), _count(m["hit"])
            # "sent" already holds the cache writes; cache hits are reported apart
            self.pending = {"in": _count(m["sent"]), "cached": hit, "out": _count(m["recv"]), "write": write}
        c = _COST.search(text)
        if c and self.pending is not None:
            p, self.pending = self.pending, None
            return out + [tokens(p["in"], p["out"], p["cached"], 0, float(c["msg"]))]
        if m:
            return out
        out += self._flush()
        a = _APPLIED.match(text)
        if a:
            self.last_error = None
            return out + [step("edit", a["path"])]
        r = _RETRY.match(text)
        if r:
            seconds = float(r["s"])
            was_rate = self.rate_error
            self.last_error, self.rate_error = None, False
            if was_rate:
                return out + [self._rate_limited(seconds)]
            return out + [log(f"aider retries in {seconds:g}s", "warning")]
        if _ERROR.search(text):
            self.last_error = text.strip()[:500]
            self.rate_error = self.rate_error or bool(_RATE.search(text))
            return out + [log(f"aider: {self.last_error}", "warning")]
        return out

    def _flush(self) -> list[CliEvent]:
        """A Tokens line with no Cost line after it (models without prices): tokens, no cost."""
        if self.pending is None:
            return []
        p, self.pending = self.pending, None
        return [tokens(p["in"], p["out"], p["cached"], 0, None)]

    def finish(self, returncode: int) -> list[CliEvent]:
        out = self._flush()
        if self.last_error and self.failure is None:
            self.failure = f"aider: {self.last_error}"
            if self.rate_error:
                self.gave_up_rate_limited = self.last_retry_after or 60.0
            out.append(error(self.failure))
        return out


PRESET = Preset(
    name="aider",
    binary="aider",
    install="pip install aider-chat (best in its own virtualenv, with its bin/ on PATH)",
    key_env=("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "OPENROUTER_API_KEY", "DEEPSEEK_API_KEY",
             "GROQ_API_KEY", "XAI_API_KEY", "AIDER_OPENAI_API_KEY", "AIDER_ANTHROPIC_API_KEY"),
    key_files=(),
    settings={"edit_format": ""},  # aider's --edit-format (whole, diff, ...); empty: the model's default
    build=build,
    parser=AiderParser,
    help_argv=("--help",),
    env=aider_env,
    scratch_paths=(".aider.tags.cache.v4", ".aider.chat.history.md", ".aider.input.history"),
    doc="aider, plain-text output read line by line",
    takes_mcp=False,
)
