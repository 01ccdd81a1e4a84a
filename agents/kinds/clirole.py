"""The role a real CLI plays in an agent-driven variant, and its kind options.

A CLI kind's ``kind_options`` there hold two sets of keys: the CLI's own (``agents.clis.config``:
``binary``, ``model``, ``env``, its preset's settings, ...) and the role's, listed below. They are
split before ``CliConfig`` sees them (it refuses keys it does not know); a key in neither set is
refused naming it, at plan time (``preflight``) as in the runner.

==============  =========  ==========================================================================
role option     default    meaning
==============  =========  ==========================================================================
script          by role    the model server's role script (``ROLE_SCRIPTS``): coordinator -> coordinator,
                           lead -> lead, worker -> worker (decomposer with ``decompose``)
decompose       none       {over_points, parts, sequential} as the sim's: split coarse claimed tasks
poll_s          0.5        seconds between empty looks (the script sleeps in the shell) ...
poll_max_s      4          ... doubling up to this
faults          none       [{turn: N, kind: hang|rate_limit|error|cut|..., times: 1}]: role-session
                           faults at the session's assistant turn N, ``times`` counted per agent
loop_on_claim   false      the worker repeats the same claim forever (a looping agent, for tests)
max_respawns    5          a CLI that exits before the run is over is started again this many times
==============  =========  ==========================================================================

All but ``script`` and ``max_respawns`` ride to the script in the session's context
(``agents.clis.serverurl``), with the variant's ``policy`` and the agent's ``tags``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from coordstore.errors import AgentError

from agents.clis import get_preset
from agents.clis.config import COMMON
from agents.clis.serverurl import ROLE_SCRIPTS
from agents.kinds.simroles import RoleOptions

ROLE_OPTION_KEYS = ("script", "decompose", "poll_s", "poll_max_s", "faults", "loop_on_claim", "max_respawns")
PLAYER_KEYS = ("script", "max_respawns")  # the player's own: not sent to the script
DEFAULT_POLL_S, DEFAULT_POLL_MAX_S = 0.5, 4.0
DEFAULT_MAX_RESPAWNS = 5
# (policy, role) -> the role script that plays it (a decomposing worker: "decomposer")
ROLE_SCRIPT_OF: dict[tuple[str, str], str] = {
    ("push", "coordinator"): "coordinator", ("push", "worker"): "worker", ("pull", "worker"): "worker",
    ("hybrid", "lead"): "lead", ("hybrid", "worker"): "worker"}


def plays(pairs) -> str:
    return ", ".join(f"{r} under {p}" for p, r in pairs)


@dataclass
class CliRole:
    """What an agent's kind options say of its role session."""

    kind: str
    policy: str
    role: str
    script: str
    options: dict[str, Any] = field(default_factory=dict)  # the session context's options
    cli_options: dict[str, Any] = field(default_factory=dict)  # for CliConfig
    max_respawns: int = DEFAULT_MAX_RESPAWNS

    @classmethod
    def build(cls, kind: str, policy: str, role: str, options: dict[str, Any] | None,
              tags: list[str] | None = None) -> "CliRole":
        """The role of a ``kind`` agent (``AgentError`` naming the kind and the role or the key)."""
        if (policy, role) not in ROLE_SCRIPT_OF:
            raise AgentError(f"kind {kind} plays no {role} under policy {policy} in agent-driven variants: orch's "
                             f"role scripts play {plays(ROLE_SCRIPT_OF)}")
        opts = dict(options or {})
        role_opts, cli_opts = split_options(kind, opts, ROLE_OPTION_KEYS)
        bad = _bad(kind)
        script = ROLE_SCRIPT_OF[(policy, role)]
        if role_opts.get("decompose") is not None and script == "worker":
            script = "decomposer"
        if "script" in role_opts:
            script = role_opts["script"]
            if script not in ROLE_SCRIPTS:
                raise bad("script", f"{script!r} is not one of {', '.join(ROLE_SCRIPTS)}")
        check_rhythm(kind, role_opts)
        faults = role_opts.get("faults")
        if faults is not None and not (isinstance(faults, list) and all(_fault_shape(f) for f in faults)):
            raise bad("faults", "must be a list of mappings, each with an integer 'turn' >= 0 and a 'kind'")
        if not isinstance(role_opts.get("loop_on_claim", False), bool):
            raise bad("loop_on_claim", f"{role_opts['loop_on_claim']!r} must be true or false")
        respawns = role_opts.get("max_respawns", DEFAULT_MAX_RESPAWNS)
        if not isinstance(respawns, int) or isinstance(respawns, bool) or respawns < 0:
            raise bad("max_respawns", f"{respawns!r} must be an integer >= 0")
        sent = {k: v for k, v in role_opts.items() if k not in PLAYER_KEYS}
        return cls(kind, policy, role, script, {"policy": policy, "tags": list(tags or []), **sent}, cli_opts, respawns)


def split_options(kind: str, options: dict[str, Any], role_keys: tuple[str, ...]) -> tuple[dict, dict]:
    """(role options, CLI options) of ``options``; a key of neither is an ``AgentError`` naming it."""
    cli_keys = set(COMMON) | set(get_preset(kind).settings)
    unknown = sorted(set(options) - cli_keys - set(role_keys))
    if unknown:
        raise _bad(kind)(unknown[0], f"is not an option of this kind in agent-driven variants (its CLI's: "
                                     f"{', '.join(sorted(cli_keys))}; its role's: {', '.join(role_keys)})")
    return ({k: v for k, v in options.items() if k in role_keys}, {k: v for k, v in options.items() if k in cli_keys})


def check_rhythm(kind: str, role_opts: dict[str, Any]) -> RoleOptions:
    """``poll_s``, ``poll_max_s`` (and ``decompose``) read as the sim's role options, with the CLI
    roles' defaults."""
    rhythm = {"poll_s": role_opts.get("poll_s", DEFAULT_POLL_S), "poll_max_s": role_opts.get("poll_max_s", DEFAULT_POLL_MAX_S)}
    if role_opts.get("decompose") is not None:
        rhythm["decompose"] = role_opts["decompose"]
    try:
        return RoleOptions.build(rhythm)
    except AgentError as e:
        raise AgentError(f"agent kind {kind!r}: kind_options: {e}") from e


def _fault_shape(f: Any) -> bool:
    turn = f.get("turn") if isinstance(f, dict) else None
    return isinstance(turn, int) and not isinstance(turn, bool) and turn >= 0 and isinstance(f.get("kind"), str)


def _bad(kind: str):
    return lambda key, msg: AgentError(f"agent kind {kind!r}: kind_options.{key}: {msg}")
