"""The options of the ``command`` kind and its presets, checked once, with errors naming the key.

Common options (every CLI kind):

- ``binary``: the executable (default: the preset's name, looked up on PATH)
- ``model``: passed as the CLI's model flag
- ``extra_args``: more arguments, appended (a list of strings)
- ``env``: variables laid over the runner's environment (keys, base URLs, ...)
- ``timeout_s``: longest run of the CLI for one task
- ``prompt_template``: replaces the built-in prompt (fields: see ``agents.clis.prompt``)
- ``check_key``: false skips the credentials check at plan time
- ``rate_limit_retries`` / ``rate_limit_max_wait_s``: when the CLI gives up on a rate limit, wait
  (at most this long) and run it again, this many times
- ``usd_per_mtok``: ``{in, out, cached, thinking}`` prices per million tokens, for CLIs that
  report no cost (codex, gemini, aider without prices)

The generic ``command`` kind also takes ``argv`` (a list; ``{prompt}``, ``{prompt_file}``,
``{worktree}``, ``{scratch}``, ``{task_id}``, ``{model}`` are replaced in each element) and
``parser`` (``text`` or a preset's name), or ``preset`` to behave exactly like that preset.
Each preset adds its own settings (``agents/clis/<preset>.py``, ``PRESET.settings``).
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coordstore.errors import AgentError
from coordstore.numbers import is_number

from agents.clis import PRESETS, get_preset, parser_class
from agents.clis.base import Preset
from agents.clis.prompt import check_template

DEFAULT_TIMEOUT_S = 3600.0  # one task of a real agent: generous, a hung CLI still ends
DEFAULT_RATE_LIMIT_RETRIES = 2  # reruns after the CLI itself gave up on a rate limit
DEFAULT_RATE_LIMIT_MAX_WAIT_S = 600.0  # never sleep longer than this on one rate limit
COMMON = ("binary", "model", "extra_args", "env", "timeout_s", "prompt_template", "check_key",
          "rate_limit_retries", "rate_limit_max_wait_s", "usd_per_mtok")
GENERIC = ("argv", "parser", "preset")
PLACEHOLDERS = ("{prompt}", "{prompt_file}", "{worktree}", "{scratch}", "{task_id}", "{model}")
PRICE_KEYS = ("in", "out", "cached", "thinking")


@dataclass
class CliConfig:
    kind: str  # the kind name, for messages
    preset: Preset | None
    argv: list[str] | None  # the generic kind's argv template
    parser: str
    binary: str
    model: str | None = None
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    timeout_s: float = DEFAULT_TIMEOUT_S
    prompt_template: str | None = None
    check_key: bool = True
    rate_limit_retries: int = DEFAULT_RATE_LIMIT_RETRIES
    rate_limit_max_wait_s: float = DEFAULT_RATE_LIMIT_MAX_WAIT_S
    usd_per_mtok: dict[str, float] | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ building
    @classmethod
    def build(cls, kind: str, options: dict[str, Any] | None, preset_name: str | None = None) -> "CliConfig":
        """Check ``options`` for kind ``kind`` (a preset kind when ``preset_name`` is given)."""
        opts = dict(options or {})
        bad = _Bad(kind)
        generic = preset_name is None
        if generic and opts.get("preset") is not None:
            preset_name = _str(opts, "preset", bad)
            if preset_name not in PRESETS:
                raise bad("preset", f"{preset_name!r} is not one of {', '.join(sorted(PRESETS))}")
        if generic and preset_name and opts.get("argv") is not None:
            raise bad("argv", "give either argv or preset, not both (a preset builds its own argv)")
        preset = get_preset(preset_name) if preset_name else None
        known = set(COMMON) | (set(GENERIC) if generic else set()) | set(preset.settings if preset else ())
        unknown = sorted(set(opts) - known)
        if unknown:
            raise bad(unknown[0], f"is not an option of this kind (known: {', '.join(sorted(known))})")
        argv = None
        if preset is None:
            argv = _str_list(opts, "argv", bad)
            if not argv:
                raise bad("argv", "the command kind needs argv (a non-empty list of strings) or a preset")
        parser = preset.name if preset else (_str(opts, "parser", bad) if "parser" in opts else "text")
        try:
            parser_class(parser)
        except AgentError as e:
            raise bad("parser", str(e)) from e
        settings = dict(preset.settings) if preset else {}
        for key, default in settings.items():
            if key in opts:
                settings[key] = _typed(opts, key, default, bad)
        cfg = cls(kind=kind, preset=preset, argv=argv, parser=parser,
                  binary=_str(opts, "binary", bad) if "binary" in opts else (preset.binary if preset else argv[0]),
                  settings=settings)
        if opts.get("model") is not None:
            cfg.model = _str(opts, "model", bad)
        cfg.extra_args = _str_list(opts, "extra_args", bad) or []
        env = opts.get("env") or {}
        if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, (str, int, float)) for k, v in env.items()):
            raise bad("env", "must be a mapping of variable names to strings")
        cfg.env = {k: str(v) for k, v in env.items()}
        cfg.timeout_s = _number(opts, "timeout_s", bad, DEFAULT_TIMEOUT_S, positive=True)
        cfg.rate_limit_max_wait_s = _number(opts, "rate_limit_max_wait_s", bad, DEFAULT_RATE_LIMIT_MAX_WAIT_S)
        retries = opts.get("rate_limit_retries", DEFAULT_RATE_LIMIT_RETRIES)
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise bad("rate_limit_retries", f"{retries!r} must be a non-negative integer")
        cfg.rate_limit_retries = retries
        check = opts.get("check_key", True)
        if not isinstance(check, bool):
            raise bad("check_key", f"{check!r} must be true or false")
        cfg.check_key = check
        if "prompt_template" in opts:
            cfg.prompt_template = _str(opts, "prompt_template", bad)
            try:
                check_template(cfg.prompt_template)
            except ValueError as e:
                raise bad("prompt_template", str(e)) from e
        prices = opts.get("usd_per_mtok")
        if prices is not None:
            if not isinstance(prices, dict) or set(prices) - set(PRICE_KEYS) or not all(
                    is_number(v) and v >= 0 for v in prices.values()):
                raise bad("usd_per_mtok", f"must map some of {', '.join(PRICE_KEYS)} to non-negative prices")
            cfg.usd_per_mtok = {k: float(prices.get(k, 0.0)) for k in PRICE_KEYS}
        return cfg

    # ------------------------------------------------------------------ environment
    def environment(self) -> dict[str, str]:
        """The runner's environment with the ``env`` option laid over it."""
        return {**os.environ, **self.env}

    def resolve_binary(self) -> str:
        """The full path of the executable, or ``AgentError`` saying how to install it."""
        env = self.environment()
        found = shutil.which(self.binary, path=env.get("PATH"))
        if found:
            return found
        hint = f"; install it with: {self.preset.install}" if self.preset else ""
        where = "is not executable" if os.sep in self.binary else "is not on PATH"
        raise AgentError(f"agent kind {self.kind!r}: the {self.binary!r} executable {where}{hint} "
                         f"(or set kind_options.binary)")

    def check_credentials(self) -> None:
        """``AgentError`` unless one of the preset's key variables or login files is there."""
        if not self.check_key or self.preset is None or not (self.preset.key_env or self.preset.key_files):
            return
        env = self.environment()
        if any(env.get(k) for k in self.preset.key_env):
            return
        for pattern in self.preset.key_files:
            if "$" in pattern and not all(v in env for v in _vars(pattern)):
                continue
            path = Path(os.path.expanduser(_expand(pattern, env)))
            if path.is_file():
                return
        files = f" or a login file ({', '.join(self.preset.key_files)})" if self.preset.key_files else ""
        raise AgentError(f"agent kind {self.kind!r}: no credentials for {self.preset.name}: set one of "
                         f"{', '.join(self.preset.key_env)}{files} (kind_options.env may carry it; "
                         f"check_key: false skips this check)")

    def cost_of(self, t: dict[str, Any]) -> float | None:
        """Cost of a tokens event from ``usd_per_mtok`` when the CLI gave none."""
        if self.usd_per_mtok is None:
            return None
        return sum(self.usd_per_mtok[k] * float(t.get(k, 0) or 0) for k in PRICE_KEYS) / 1_000_000


class _Bad:
    def __init__(self, kind: str):
        self.kind = kind

    def __call__(self, key: str, msg: str) -> AgentError:
        return AgentError(f"agent kind {self.kind!r}: kind_options.{key}: {msg}")


def _str(opts: dict, key: str, bad: _Bad) -> str:
    v = opts.get(key)
    if not isinstance(v, str) or not v:
        raise bad(key, f"{v!r} must be a non-empty string")
    return v


def _str_list(opts: dict, key: str, bad: _Bad) -> list[str] | None:
    v = opts.get(key)
    if v is None:
        return None
    if not isinstance(v, list) or not all(isinstance(a, str) for a in v):
        raise bad(key, f"{v!r} must be a list of strings")
    return list(v)


def _number(opts: dict, key: str, bad: _Bad, default: float, positive: bool = False) -> float:
    v = opts.get(key, default)
    if not is_number(v) or v < 0 or (positive and v == 0):
        raise bad(key, f"{v!r} must be a {'positive' if positive else 'non-negative'} number")
    return float(v)


def _typed(opts: dict, key: str, default: Any, bad: _Bad) -> Any:
    v = opts[key]
    if default is None:
        return v
    if isinstance(default, bool) and not isinstance(v, bool):
        raise bad(key, f"{v!r} must be true or false")
    if isinstance(default, list):
        return _str_list(opts, key, bad) or []
    if isinstance(default, str):
        return _str(opts, key, bad)
    return v


def _vars(pattern: str) -> list[str]:
    return re.findall(r"\$(\w+)", pattern)


def _expand(pattern: str, env: dict[str, str]) -> str:
    for name in _vars(pattern):
        pattern = pattern.replace(f"${name}", env.get(name, ""))
    return pattern
