"""What every CLI preset is made of: how to call the CLI, and a parser from its output to orch events.

A ``Preset`` names the executable, how to install it, which credentials it needs, the settings
it accepts (with defaults), ``build(inv) -> argv``, a ``Parser`` class and, optionally,
``env(inv)``: environment variables of its own for one invocation.
A parser is fed the CLI's stdout (and stderr) line by line and returns ``CliEvent``s -- the orch event types
``step``, ``tokens``, ``log``, ``error``, ``rate_limited`` -- which the ``command`` kind writes
with the agent's ``EventWriter``. When the stream ends, ``finish(returncode)`` lets the parser
decide whether the run failed (``failure``) and whether it gave up on a rate limit
(``gave_up_rate_limited``: seconds to wait before the kind may try again).

Token accounting is the same for every preset: ``in`` = input tokens NOT served from a cache
(cache writes included), ``cached`` = input tokens read from a cache, ``out`` = output tokens
(reasoning included unless the CLI reports it apart, then it goes to ``thinking``), ``cost_usd``
as the CLI reports it, or None when it reports none.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_RETRY_AFTER_S = 30.0  # back-off when a CLI says "rate limited" but not for how long
LINE_SHOWN = 300  # characters of an unparsed output line kept in a log event


# set by orch for runs with a `model_server:` variant: presets that need more than base-URL
# variables (a provider declaration, a known model) read it
MODEL_SERVER_ENV = "ORCH_MODEL_SERVER_URL"

@dataclass
class CliEvent:
    type: str  # step | tokens | log | error | rate_limited
    data: dict[str, Any] = field(default_factory=dict)


def step(name: str, args: Any = None) -> CliEvent:
    return CliEvent("step", {"name": name, "args": args})


def tokens(tin: int = 0, tout: int = 0, cached: int = 0, thinking: int = 0, cost_usd: float | None = None) -> CliEvent:
    return CliEvent("tokens", {"in": int(tin or 0), "out": int(tout or 0), "cached": int(cached or 0),
                               "thinking": int(thinking or 0), "cost_usd": None if cost_usd is None else float(cost_usd)})


def log(msg: str, level: str = "info") -> CliEvent:
    return CliEvent("log", {"msg": msg, "level": level})


def error(msg: str) -> CliEvent:
    return CliEvent("error", {"msg": msg})


def rate_limited(retry_after: float) -> CliEvent:
    return CliEvent("rate_limited", {"retry_after": round(max(0.0, float(retry_after)), 3)})


_RETRY_IN = re.compile(r"(?:retry|try again)[^0-9]{0,20}?(\d+(?:\.\d+)?)\s*(ms|milliseconds?|s|secs?|seconds?|m|mins?|minutes?)\b", re.I)
_RATE_WORDS = re.compile(r"\b429\b|rate.?limit|too many requests|resource.?exhausted|quota", re.I)


def looks_rate_limited(text: str) -> bool:
    """Whether an error message from a CLI or its provider is about a rate limit or quota."""
    return bool(_RATE_WORDS.search(text or ""))


def retry_after_in(text: str, default: float = DEFAULT_RETRY_AFTER_S) -> float:
    """Seconds to wait, read from phrases like "try again in 20s" / "retry after 1500 ms"."""
    m = _RETRY_IN.search(text or "")
    if not m:
        return default
    value, unit = float(m.group(1)), m.group(2).lower()
    if unit.startswith("ms") or unit.startswith("milli"):
        return value / 1000.0
    if unit.startswith("m"):
        return value * 60.0
    return value


MCP_SERVER_NAME = "orch"  # the name orch's coordination server has in every CLI's configuration


@dataclass(frozen=True)
class McpEndpoint:
    """orch's coordination server as a CLI is configured to reach it (agent-driven variants)."""

    url: str  # streamable HTTP endpoint (``.../mcp``)
    token: str  # the agent's run-scoped token, sent as ``Authorization: Bearer``
    name: str = MCP_SERVER_NAME


# how the CLIs name a tool ``T`` of an MCP server ``S``: claude ``mcp__S__T``, codex ``T`` in the
# namespace ``mcp__S`` (its parser's steps: ``mcp:S.T``), opencode ``S_T``, gemini ``mcp_S_T``
# (older gemini versions: ``T``, ``S__T`` when two servers offer ``T``)
_MCP_PREFIXES = ("mcp__{s}__", "mcp:{s}.", "{s}__", "mcp_{s}_", "{s}_", "{s}.")

# The agent's token reaches a CLI only through this variable: each preset's configuration names
# it (every CLI expands variables in its MCP headers), so no token is in an argv, a log or a file.
MCP_TOKEN_ENV = "ORCH_MCP_TOKEN"
MCP_STARTUP_S = 60  # connecting and listing the tools (the CLIs' defaults: 5 to 30 s)
# one tool call: a completing update commits, verifies and merges the agent's work (codex's
# default is 60 s, opencode's 5 s)
MCP_TOOL_TIMEOUT_S = 900


def mcp_env(inv: "Invocation") -> dict[str, str]:
    """The variable every preset's MCP configuration reads the agent's token from."""
    return {MCP_TOKEN_ENV: inv.mcp.token} if inv.mcp else {}


def scratch_json(inv: "Invocation", rel: str, data: dict[str, Any]) -> Path:
    """``data`` written as JSON to ``rel`` below the invocation's scratch directory: a CLI's
    private settings, gone with the scratch directory."""
    path = Path(inv.scratch) / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def bearer(token_ref: str) -> dict[str, str]:
    """The header carrying the token, ``token_ref`` written in the CLI's own variable syntax."""
    return {"Authorization": f"Bearer {token_ref}"}


def mcp_tool_name(name: str, server: str = MCP_SERVER_NAME, known: frozenset[str] | set[str] | None = None) -> str | None:
    """The bare name of server ``server``'s tool as a CLI calls it (``mcp__orch__claim`` ->
    ``claim``), or None when ``name`` is not one. A name with no prefix counts only when
    ``known`` (the server's tool names) holds it."""
    for prefix in _MCP_PREFIXES:
        p = prefix.format(s=server)
        if name.startswith(p) and len(name) > len(p):
            return name[len(p):]
    return name if known is not None and name in known else None


_SHELL = re.compile(r"^(?:\S*/)?(?:ba|z|da)?sh\s+-l?c\s+(?P<cmd>.+)$", re.S)
_SLEEP = re.compile(r"^sleep\s+\d+(?:\.\d+)?s?$")


def sleeps_only(args: Any) -> bool:
    """Whether a shell step's command only sleeps (``sleep 2``, ``bash -lc 'sleep 2'``): a wait."""
    cmd = args.get("command") if isinstance(args, dict) else args
    if isinstance(cmd, list) and all(isinstance(a, str) for a in cmd):
        cmd = shlex.join(cmd)
    if not isinstance(cmd, str):
        return False
    cmd = cmd.strip()
    wrapped = _SHELL.match(cmd)
    if wrapped:
        try:
            inner = shlex.split(wrapped["cmd"])
        except ValueError:
            return False
        cmd = inner[0].strip() if len(inner) == 1 else ""
    return bool(_SLEEP.match(cmd))


@dataclass(frozen=True)
class Invocation:
    """What a preset needs to build its argv for one task."""

    prompt: str
    prompt_file: str  # the same prompt, written to a file outside the worktree
    worktree: str
    scratch: str  # a private directory outside the worktree, removed after the run
    file_scope: tuple[str, ...] = ()
    model: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # the preset's settings, defaults applied
    extra_args: tuple[str, ...] = ()
    mcp: McpEndpoint | None = None  # agent-driven variants: the coordination server to configure


class Parser:
    """Base parser: plain text output, nothing structured. Subclasses override ``feed``."""

    def __init__(self) -> None:
        self.failure: str | None = None  # set when the CLI reported that the task failed
        self.gave_up_rate_limited: float | None = None  # set when it failed because of a rate limit
        self.info: dict[str, Any] = {}  # session id, model, turns... (lands on the task's complete)
        self.last_retry_after: float | None = None

    def feed(self, line: str) -> list[CliEvent]:
        return []

    def feed_stderr(self, line: str) -> list[CliEvent]:
        """One line of the CLI's stderr (some CLIs report retries only there)."""
        return []

    def finish(self, returncode: int) -> list[CliEvent]:
        return []

    def _rate_limited(self, seconds: float) -> CliEvent:
        self.last_retry_after = seconds
        return rate_limited(seconds)


class JsonLinesParser(Parser):
    """A parser for JSONL output: each line one JSON object, handed to ``on_object``. A line that
    is not JSON (a warning printed by the CLI or a library) becomes a debug ``log``."""

    def feed(self, line: str) -> list[CliEvent]:
        text = line.strip()
        if not text:
            return []
        try:
            obj = json.loads(text)
        except ValueError:
            return [log(text[:LINE_SHOWN], "debug")]
        if not isinstance(obj, dict):
            return [log(text[:LINE_SHOWN], "debug")]
        return self.on_object(obj)

    def on_object(self, obj: dict[str, Any]) -> list[CliEvent]:
        raise NotImplementedError


def num(value: Any) -> int:
    """An integer count from a JSON value that may be missing, null or a float."""
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


@dataclass(frozen=True)
class Preset:
    """One real CLI agent: how to call it headless and how to read what it prints."""

    name: str
    binary: str  # executable name looked up on PATH (the ``binary`` option overrides it)
    install: str  # the command that installs it, for the error when it is missing
    key_env: tuple[str, ...]  # credentials: any one of these variables, non-empty ...
    key_files: tuple[str, ...]  # ... or one of these files (``~`` and ``$VAR`` expanded) counts
    settings: dict[str, Any]  # preset-specific options and their defaults
    build: Callable[[Invocation], list[str]]  # argv after the executable
    parser: type[Parser]
    help_argv: tuple[str, ...]  # prints the help that lists every flag ``build`` may pass
    prompt_on_stdin: bool = False  # the prompt goes to stdin instead of argv
    scratch_paths: tuple[str, ...] = ()  # files the CLI leaves in the worktree root (removed after)
    env: Callable[[Invocation], dict[str, str]] | None = None  # extra environment for one invocation
    doc: str = ""
    takes_mcp: bool = True  # False: the CLI calls no tools, ``build`` refuses an ``Invocation.mcp``
