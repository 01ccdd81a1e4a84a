"""Real CLI agents, one module per preset: how to call each headless and how to parse its output.

``PRESETS`` maps a preset name to its module (imported only when chosen, like agent kinds);
each module defines ``PRESET`` (an ``agents.clis.base.Preset``). Parsers are looked up by the
same names, plus ``text`` for a CLI without structured output (the generic ``command`` kind's
default).
"""

from __future__ import annotations

import importlib

from coordstore.errors import AgentError

from agents.clis.base import Parser, Preset

PRESETS: dict[str, str] = {
    "claude": "agents.clis.claude",
    "codex": "agents.clis.codex",
    "aider": "agents.clis.aider",
    "gemini": "agents.clis.gemini",
    "opencode": "agents.clis.opencode",
}


def get_preset(name: str) -> Preset:
    """The preset called ``name`` (``AgentError`` listing the known ones otherwise)."""
    module = PRESETS.get(name)
    if module is None:
        raise AgentError(f"CLI preset {name!r} is unknown; known: {', '.join(sorted(PRESETS))}")
    return importlib.import_module(module).PRESET


def parser_class(name: str) -> type[Parser]:
    """The output parser called ``name``: a preset's, or ``text`` (nothing structured)."""
    if name == "text":
        return Parser
    if name not in PRESETS:
        raise AgentError(f"output parser {name!r} is unknown; known: {', '.join(['text', *sorted(PRESETS)])}")
    return get_preset(name).parser
