"""What a script answers for one request: a ``Turn`` (text, tool calls, usage, a fault).

Neutral of any provider: the API modules render a Turn as an Anthropic message, an OpenAI chat
completion or an OpenAI response. A tool call names either a concrete tool (``Bash``) or a
portable action (``bash``, ``read``, ``write``) that ``tools.resolve`` maps onto whatever tool the
client offered. The YAML/JSON form of a turn (the ``file`` script) is parsed here too, with
errors naming the file and the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from coordstore.errors import InputError
from coordstore.numbers import is_number

# fault kinds a turn can carry; each is explained in server.py where it is served
FAULTS = ("rate_limit", "overloaded", "cut", "hang", "loop", "error")
DEFAULT_RETRY_AFTER_S = 1.0  # what a 429 asks the client to wait when the script does not say


@dataclass
class ToolCall:
    name: str  # a concrete tool name, or a portable action (tools.ACTIONS)
    input: dict[str, Any]


@dataclass
class Usage:
    """Token counts a response reports. ``None`` fields are estimated from the request size."""

    input: int | None = None
    output: int | None = None
    cached: int = 0
    thinking: int = 0


@dataclass
class Fault:
    kind: str  # one of FAULTS
    times: int | None = 1  # how many requests of this turn it hits before the turn is served; None: all
    retry_after_s: float = DEFAULT_RETRY_AFTER_S  # rate_limit / overloaded: the retry-after header
    message: str = ""  # error text (error, rate_limit, overloaded)
    status: int = 400  # error: the HTTP status
    scope: str | None = None  # what ``times`` counts over: None the session; a task's faults count over all its attempts
    any_turn: bool = False  # ``times`` counts its hits at every turn together (else each turn of the scope apart)


@dataclass
class Turn:
    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    fault: Fault | None = None
    delay_s: float = 0.0  # think time before the answer starts

    @property
    def final(self) -> bool:
        return not self.tool_calls


DONE = "Done."  # what a script says once it has nothing left to do


def done_turn(text: str = DONE) -> Turn:
    return Turn(text=text)


# ---------------------------------------------------------------- the file form of a turn
_TURN_KEYS = {"text", "bash", "tool_calls", "tool", "usage", "fault", "delay"}
_FAULT_KEYS = {"kind", "times", "retry_after", "message", "status"}
_USAGE_KEYS = {"input", "output", "cached", "thinking"}


def _bad(where: str, msg: str) -> InputError:
    return InputError(f"{where}: {msg}")


def _number(where: str, v: Any, *, integer: bool = False) -> float:
    if not is_number(v) or v < 0 or (integer and not isinstance(v, int)):
        raise _bad(where, f"{v!r} must be a {'non-negative integer' if integer else 'number >= 0'}")
    return v


def parse_fault(raw: Any, where: str) -> Fault:
    """``"rate_limit"`` or ``{kind: rate_limit, times: 2, retry_after: 1.5}``."""
    if isinstance(raw, str):
        raw = {"kind": raw}
    if not isinstance(raw, dict):
        raise _bad(where, "must be a fault name or a mapping with 'kind'")
    unknown = sorted(set(raw) - _FAULT_KEYS)
    if unknown:
        raise _bad(f"{where}.{unknown[0]}", f"unknown key (known: {', '.join(sorted(_FAULT_KEYS))})")
    kind = raw.get("kind")
    if kind not in FAULTS:
        raise _bad(f"{where}.kind", f"{kind!r} is not one of {', '.join(FAULTS)}")
    times = raw.get("times", 1)
    if times is not None and times != "always":
        times = int(_number(f"{where}.times", times, integer=True))
    fault = Fault(kind=kind, times=None if times in (None, "always") else times,
                  retry_after_s=_number(f"{where}.retry_after", raw.get("retry_after", DEFAULT_RETRY_AFTER_S)),
                  message=str(raw.get("message", "")))
    if "status" in raw:
        status = int(_number(f"{where}.status", raw["status"], integer=True))
        if not 400 <= status <= 599:
            raise _bad(f"{where}.status", f"{status} is not an HTTP error status (400-599)")
        fault.status = status
    return fault


def _tool_call(raw: Any, where: str) -> ToolCall:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
        raise _bad(where, "must be a mapping with a non-empty 'name' and an 'input' mapping")
    inp = raw.get("input", {})
    if not isinstance(inp, dict):
        raise _bad(f"{where}.input", "must be a mapping")
    unknown = sorted(set(raw) - {"name", "input"})
    if unknown:
        raise _bad(f"{where}.{unknown[0]}", "unknown key (known: input, name)")
    return ToolCall(raw["name"], inp)


def parse_turn(raw: Any, where: str) -> Turn:
    """One turn of a file script: a string (a text answer) or a mapping with ``text``, ``bash``
    (a command or a list of them: portable shell tool calls), ``tool_calls`` (``[{name, input}]``),
    ``usage``, ``fault``, ``delay`` (seconds)."""
    if isinstance(raw, str):
        return Turn(text=raw)
    if not isinstance(raw, dict):
        raise _bad(where, "must be a text or a mapping")
    unknown = sorted(set(raw) - _TURN_KEYS)
    if unknown:
        raise _bad(f"{where}.{unknown[0]}", f"unknown key (known: {', '.join(sorted(_TURN_KEYS))})")
    turn = Turn(text=str(raw.get("text", "")))
    bash = raw.get("bash")
    if bash is not None:
        cmds = [bash] if isinstance(bash, str) else bash
        if not isinstance(cmds, list) or not all(isinstance(c, str) and c for c in cmds):
            raise _bad(f"{where}.bash", "must be a command string or a list of them")
        turn.tool_calls += [ToolCall("bash", {"command": c}) for c in cmds]
    calls = raw.get("tool_calls", [])
    if "tool" in raw:
        calls = [raw["tool"], *calls]
    if not isinstance(calls, list):
        raise _bad(f"{where}.tool_calls", "must be a list of {name, input}")
    turn.tool_calls += [_tool_call(c, f"{where}.tool_calls.{i}") for i, c in enumerate(calls)]
    if "usage" in raw:
        u = raw["usage"]
        if not isinstance(u, dict) or set(u) - _USAGE_KEYS:
            raise _bad(f"{where}.usage", f"must be a mapping of {', '.join(sorted(_USAGE_KEYS))}")
        turn.usage = Usage(**{k: int(_number(f"{where}.usage.{k}", v, integer=True)) for k, v in u.items()})
    if raw.get("fault") is not None:
        turn.fault = parse_fault(raw["fault"], f"{where}.fault")
    turn.delay_s = _number(f"{where}.delay", raw.get("delay", 0.0))
    if not turn.text and not turn.tool_calls and turn.fault is None:
        raise _bad(where, "says nothing: give it a text, bash, tool_calls or a fault")
    return turn
