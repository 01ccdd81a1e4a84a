"""Checking a tool's arguments: each check names the tool and the argument it refuses.

The MCP layer validates types against the tools' schemas first; these checks are the tool
layer's own (it is plain Python, callable without MCP), and they also hold the rules a schema
cannot say (a status that is one of a list, a number of slots, a size limit).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from coordstore.models import ToolOutcome


class ToolRefused(Exception):
    """A call the tool refuses: ``text`` for the caller, ``outcome`` for the history row
    (``error``: a bad argument or a rule; ``lost``: a claim that lost; ``denied``: identity)."""

    def __init__(self, text: str, outcome: ToolOutcome = "error", **data: Any):
        super().__init__(text)
        self.text = text
        self.outcome = outcome
        self.data = data


class Args:
    """The arguments of one call of tool ``tool``; unknown names are refused at construction."""

    def __init__(self, tool: str, given: dict[str, Any], known: Iterable[str]):
        self.tool = tool
        self.given = {k: v for k, v in given.items() if v is not None}
        unknown = sorted(set(self.given) - set(known))
        if unknown:
            raise ToolRefused(f"{tool}: unknown argument {unknown[0]!r} (known: {', '.join(sorted(known)) or 'none'})")

    def refuse(self, name: str, what: str) -> ToolRefused:
        return ToolRefused(f"{self.tool}: argument '{name}' {what}")

    def has(self, name: str) -> bool:
        return name in self.given

    def text(self, name: str, default: str | None = None, required: bool = False, empty: bool = False) -> str | None:
        v = self.given.get(name)
        if v is None:
            if required:
                raise self.refuse(name, "is required")
            return default
        if not isinstance(v, str):
            raise self.refuse(name, f"must be a string, got {type(v).__name__}")
        if not empty and not v.strip():
            raise self.refuse(name, "must not be empty")
        return v

    def flag(self, name: str, default: bool = False) -> bool:
        v = self.given.get(name, default)
        if not isinstance(v, bool):
            raise self.refuse(name, f"must be true or false, got {v!r}")
        return v

    def integer(self, name: str, default: int | None = None, low: int | None = None, high: int | None = None) -> int | None:
        v = self.given.get(name)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.refuse(name, f"must be an integer, got {v!r}")
        if (low is not None and v < low) or (high is not None and v > high):
            raise self.refuse(name, f"must be between {low} and {high}, got {v}")
        return v

    def number(self, name: str, default: float | None = None, low: float | None = None) -> float | None:
        v = self.given.get(name)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, int | float) or v != v or v in (float("inf"), float("-inf")):
            raise self.refuse(name, f"must be a finite number, got {v!r}")
        if low is not None and v < low:
            raise self.refuse(name, f"must be at least {low}, got {v}")
        return float(v)

    def texts(self, name: str, default: list[str] | None = None, one_ok: bool = False) -> list[str] | None:
        """A list of non-empty strings (or, with ``one_ok``, one string standing for a list of one)."""
        v = self.given.get(name)
        if v is None:
            return default
        if one_ok and isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or not all(isinstance(x, str) and x.strip() for x in v):
            raise self.refuse(name, f"must be a list of non-empty strings{' (or one string)' if one_ok else ''}, got {v!r}")
        return list(v)

    def choice(self, name: str, choices: Iterable[str], default: str | None = None) -> str | None:
        v = self.text(name, default)
        choices = tuple(choices)
        if v is not None and v not in choices:
            raise ToolRefused(f"{self.tool}: {name} {v!r} is not one of {', '.join(choices)}")
        return v


@dataclass
class Call:
    """One call being served: who, with what, and what its history row will add."""

    tool: str
    agent: str
    args: Args
    data: dict[str, Any] = field(default_factory=dict)

    def refuse(self, text: str, outcome: str = "error", **data: Any) -> ToolRefused:
        return ToolRefused(f"{self.tool}: {text}", outcome, **data)
