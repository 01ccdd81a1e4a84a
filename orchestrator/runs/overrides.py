"""`orch run --set key=value`: any experiment or variant key, set from the command line.

A key is a dotted path; the value is read as YAML (``8``, ``0.1``, ``fifo``, ``true``, ``[a, b]``,
``{order: fifo}``). Each ``--set`` goes to the chosen variant (with ``--all``, to every variant):

* a variant key (``kind``, ``agents``, ``policy``, ``policy_options.order``, ``kind_options.X``,
  ``agents.0.tags``, ...) sets the variant; ``agents=8`` is the same as ``agents: 8`` in the file:
  8 workers of the variant's kind (any list of agents is replaced; push and hybrid add their
  coordinator or lead as always);
* ``<kind>.X`` for the variant's own kind is ``kind_options.X`` (``sim.p_fail=0.1``);
* an execution key (``runs``, ``seed``, ``timeout_s``, ``supervision.stall_after_ms``, ..., or the
  same under ``execution.``) sets the variant's execution overrides;
* an experiment key (``repo``, ``experiment.id``, ``success_criteria``, ...) sets the experiment.

Later ``--set``s win over earlier ones. The result is validated by the same models as the file,
and an error names the ``--set`` it comes from (``UsageError``: one line, exit 2).
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from coordstore.errors import UsageError

# _key_path: the part of an error location the data holds (a union's branch tags are no keys)
from orchestrator.runs.experiment import Execution, Experiment, Variant, _key_path

_VARIANT_KEYS = tuple(k for k in Variant.model_fields if k != "name")
_EXECUTION_KEYS = tuple(Execution.model_fields)
_EXPERIMENT_KEYS = tuple(k for k in Experiment.model_fields if k not in ("variants", "execution", "template"))


class Setting:
    """One ``--set KEY=VALUE``: where it goes (``target``, ``path`` inside it) and the value."""

    def __init__(self, text: str) -> None:
        key, sep, raw = text.partition("=")
        self.text, self.key, self.raw = text, key.strip(), raw
        parts = self.key.split(".")
        if not sep or not self.key or not all(parts):
            raise UsageError(f"--set {text}: expected KEY=VALUE with a dotted KEY, e.g. --set policy_options.order=fifo")
        try:
            self.value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as e:
            raise UsageError(f"--set {text}: the value is not YAML: {getattr(e, 'problem', e)}") from e
        self.parts: tuple[str | int, ...] = tuple(int(p) if p.isdigit() else p for p in parts)
        self.target, self.path = "", self.parts

    def fail(self, msg: str) -> UsageError:
        return UsageError(f"--set {self.key}: {msg}")


def parse_sets(texts: list[str] | tuple[str, ...]) -> list[Setting]:
    return [Setting(t) for t in texts]


def _route(s: Setting, variant: dict) -> None:
    """Which model the key belongs to: the variant, its execution overrides, or the experiment."""
    head = s.parts[0]
    if head == variant.get("kind") and head not in _VARIANT_KEYS and len(s.parts) > 1:
        s.target, s.path = "variant", ("kind_options", *s.parts[1:])
    elif head in _VARIANT_KEYS:  # ``execution.runs`` too: the variant's execution overrides
        s.target = "variant"
    elif head in _EXECUTION_KEYS:
        s.target, s.path = "variant", ("execution", *s.parts)
    elif head in _EXPERIMENT_KEYS:
        s.target = "experiment"
    else:
        raise s.fail(f"no such key; variant keys: {', '.join(_VARIANT_KEYS)}; execution keys: {', '.join(_EXECUTION_KEYS)}; "
                     f"experiment keys: {', '.join(_EXPERIMENT_KEYS)} (a kind's options: kind_options.KEY, or "
                     f"{variant.get('kind')}.KEY for this variant's kind)")


def _put(s: Setting, data: dict) -> None:
    """Set ``s.path`` in ``data``, creating mappings on the way; an element of a list by index."""
    node: Any = data
    for i, part in enumerate(s.path):
        if isinstance(node, list) and not (isinstance(part, int) and part < len(node)):
            raise s.fail(f"{'.'.join(map(str, s.path[:i]))} is a list of {len(node)}; give an index below {len(node)}")
        if isinstance(node, dict):
            part = str(part)
        if i == len(s.path) - 1:
            node[part] = s.value
            return
        if isinstance(node, dict) and node.get(part) is None:
            node[part] = {}
        nxt = node[part]
        if not isinstance(nxt, (dict, list)):
            where = ".".join(map(str, s.path[:i + 1]))
            raise s.fail(f"{where} is {nxt!r} here, not a mapping or list to set {s.path[i + 1]} in")
        node = nxt


def _blame(sets: list[Setting], target: str, loc: tuple) -> Setting | None:
    """The ``--set`` a validation error at ``loc`` of ``target`` comes from (the latest whose path
    is a prefix of it, or that it is a prefix of)."""
    for s in reversed(sets):
        if s.target == target:
            n = min(len(s.path), len(loc))
            if tuple(map(str, s.path[:n])) == tuple(map(str, loc[:n])):
                return s
    return None


def _validated(validate, data: Any, sets: list[Setting], target: str, prefix: tuple = ()):
    """``validate(data)``; a ValidationError becomes a UsageError naming the ``--set`` behind it."""
    try:
        return validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = prefix + _key_path(tuple(err["loc"]), data, err["type"] == "missing")
        s = _blame(sets, target, loc) or next((s for s in reversed(sets) if s.target == target), None)
        same = s is not None and tuple(map(str, s.path)) == tuple(map(str, loc))
        msg = err["msg"] if same else f"{'.'.join(map(str, loc))}: {err['msg']}"
        raise (s.fail(msg) if s else UsageError(f"--set: {msg}")) from e


def apply_sets(exp: Experiment, variant: Variant, sets: list[Setting]) -> tuple[Experiment, Variant]:
    """The experiment and variant with ``sets`` applied, validated; unchanged without any."""
    if not sets:
        return exp, variant
    vdata = variant.model_dump(exclude_unset=True) | {"name": variant.name, "kind": variant.kind}
    edata: dict[str, Any] = {}  # experiment keys set, each from its current value
    for s in sets:
        _route(s, vdata)
        if s.target == "experiment" and s.parts[0] not in edata:
            now = getattr(exp, s.parts[0])
            edata[s.parts[0]] = now.model_dump(exclude_unset=True) if hasattr(now, "model_dump") else (
                [x.model_dump(exclude_unset=True) for x in now] if isinstance(now, list) else now)
        _put(s, vdata if s.target == "variant" else edata)
    new_variant = _validated(Variant.model_validate, vdata, sets, "variant")
    update = {k: _validated(TypeAdapter(Experiment.model_fields[k].annotation).validate_python, v, sets, "experiment", (k,))
              for k, v in edata.items()}
    new_exp = exp.model_copy(update=update, deep=True)  # a copy: the caller's experiment stays as loaded
    # the execution this variant runs with: the experiment's, its overrides merged in
    _validated(Execution.model_validate, new_exp.execution_data(new_variant), sets, "variant", ("execution",))
    new_exp.variants = [new_variant if v.name == variant.name else v for v in new_exp.variants]
    return new_exp, new_variant
