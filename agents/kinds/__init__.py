"""Agent kinds: how one task is executed. A kind is a class with ``run(task, ctx) -> Result``.

Kinds are resolved by name (``sim``, ``script``) or by a dotted path ``package.module:Class``
for user kinds. A kind is built once per runner with its options (``kind_options``) and then
runs task after task; it works only inside ``ctx.worktree`` and reports through ``ctx.events``.
The runner commits what the kind left in the worktree (unless the kind committed itself), runs
the task's ``verify`` command, merges and reports to the store.

A kind that blocks for long must call ``ctx.pulse.beat()`` now and then (or wait with
``ctx.sleep``), or the supervisor will rightly judge the agent stalled.
"""

from __future__ import annotations

import functools
import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from coordstore.errors import AgentError

# name -> "module:Class"; kinds load only when chosen, so the runner imports what it uses
KINDS: dict[str, str] = {
    "sim": "agents.kinds.sim:SimKind",
    "script": "agents.kinds.script:ScriptKind",
    "replay": "agents.kinds.replay:ReplayKind",
    "command": "agents.kinds.command:CommandKind",
    "claude": "agents.kinds.command:ClaudeKind",
    "codex": "agents.kinds.command:CodexKind",
    "aider": "agents.kinds.command:AiderKind",
    "gemini": "agents.kinds.command:GeminiKind",
    "opencode": "agents.kinds.command:OpencodeKind",
}
# kinds that play a role in agent-driven variants (coordination: agents): name -> their player,
# a class with begin(), step() -> bool, wait_s(), end() and optionally close() (agents.driven runs
# it). Real CLIs play as one long-lived session each (cliplay); aider, without tool calls, only
# executes the tasks assigned to it (cliexec)
PLAYERS: dict[str, str] = {
    "sim": "agents.kinds.simplay:SimPlayer",
    "claude": "agents.kinds.cliplay:ClaudePlayer",
    "codex": "agents.kinds.cliplay:CodexPlayer",
    "gemini": "agents.kinds.cliplay:GeminiPlayer",
    "opencode": "agents.kinds.cliplay:OpencodePlayer",
    "aider": "agents.kinds.cliexec:AiderPlayer",
}


@dataclass
class Result:
    """Outcome of one task. ``ok`` False: the task fails with ``reason``. ``data`` lands on the
    task's ``complete`` transition (e.g. the sim's planned duration)."""

    ok: bool
    reason: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    tokens: dict[str, float] = field(default_factory=dict)  # totals: USAGE_KEYS counts (in, out, ...) and cost_usd


@dataclass
class KindContext:
    """What a kind may use while running one task."""

    run_id: str
    agent_id: str
    worktree: Path
    seed: int
    time_scale: float
    attempt: int
    events: Any  # agents.events.EventWriter
    pulse: Any  # agents.pulse.Pulse
    identity: dict[str, str]  # git author/committer variables of the agent
    pacer: Any = None  # agents.backpressure: how a 429 is waited out (None: this agent pauses alone)
    shared_dir: Path | None = None  # a directory the run's agents on this machine share (simulated providers)

    def sleep(self, seconds: float) -> None:
        self.pulse.sleep(seconds)

    def rate_limited(self, retry_after_s: float, task: str | None = None) -> None:
        """The provider answered 429: report it and wait as the run's back-pressure says (this
        agent alone, or the provider's shared limiter), then the kind retries."""
        if self.pacer is None:
            self.events.rate_limited(retry_after_s, task=task)
            self.sleep(retry_after_s)
        else:
            self.pacer.rate_limited(retry_after_s, task)

    def now_s(self) -> float:
        """The runner's clock in seconds (monotonic; a test's fake clock): pace with it, not time.monotonic."""
        return self.pulse.clock() / 1000.0


class Kind(Protocol):
    name: str

    def __init__(self, options: dict[str, Any]) -> None: ...

    def run(self, task, ctx: KindContext) -> Result: ...


def resolve_kind(ref: str) -> type:
    """The kind class for a registered name or a ``package.module:Class`` path (``AgentError`` if
    neither)."""
    target = KINDS.get(ref)
    if target is None:
        if ":" not in ref:
            raise AgentError(f"agent kind {ref!r} is unknown; known: {', '.join(sorted(KINDS))} (or package.module:Class)")
        target = ref
    module, _, cls = target.partition(":")
    try:
        obj = getattr(importlib.import_module(module), cls)
    except ImportError as e:
        raise AgentError(f"agent kind {ref!r}: cannot import module {module!r} ({e})") from e
    except AttributeError as e:
        raise AgentError(f"agent kind {ref!r}: module {module!r} has no {cls!r}") from e
    if not callable(getattr(obj, "run", None)):
        raise AgentError(f"agent kind {ref!r}: {cls} has no run(task, ctx) method")
    return obj


@functools.cache
def time_scaled(ref: str) -> bool:
    """Whether kind ``ref`` runs on the run's ``time_scale`` (its class sets ``time_scaled =
    True``: sim, replay) rather than on the wall clock (real CLIs, commands, scripts); an
    unknown kind counts as wall clock."""
    try:
        return bool(getattr(resolve_kind(ref), "time_scaled", False))
    except AgentError:
        return False


def resolve_player(kind: str) -> type:
    """The player class of ``kind`` for agent-driven variants (``AgentError`` if it has none)."""
    target = PLAYERS.get(kind)
    if target is None:
        raise AgentError(f"agent kind {kind!r} cannot play a role in agent-driven variants (coordination: agents) "
                         f"yet; kinds that can: {', '.join(sorted(PLAYERS))}")
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)


def preflight_player(kind: str, policy: str, role: str, options: dict[str, Any] | None) -> None:
    """At plan time: ``kind`` plays ``role`` under ``policy`` with ``options`` (``AgentError`` naming
    what does not)."""
    resolve_player(kind).preflight(policy, role, options)


# terminal colour and cursor sequences: CLIs colour their errors even into a pipe
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")


def output_tail(text: str, lines: int = 20, chars: int = 2000) -> str:
    """The end of a command's output, short enough for a failure reason, without terminal escapes."""
    tail = "\n".join(_ANSI.sub("", text).rstrip().splitlines()[-lines:])
    return tail[-chars:]


def preflight(kind: str, options: dict[str, Any] | None) -> None:
    """Check at plan time that an agent of ``kind`` can run with ``options``: an unknown kind
    name, bad CLI options, a missing executable or missing credentials raise ``AgentError``.
    Kinds given as ``package.module:Class`` are checked by their runner, not here (their module
    may only be importable there); a kind class without a ``preflight`` needs no check (sim's
    checks its options as its runner will read them)."""
    if ":" in kind:
        return
    # an unknown name raises "unknown kind, known: ..."; CLI kinds, script (pass_env), sim (options) check
    check = getattr(resolve_kind(kind), "preflight", None)
    if check is not None:
        check(options)
