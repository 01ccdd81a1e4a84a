"""Metrics an experiment file defines: ``query:`` (one read-only SQL statement over the run's view,
``runview``) and ``derived:`` (an expression over other metrics, ``derived``).

Checked when the file is loaded (``check``: a name of orch's own, a query that writes or does not
compile, an expression that does not parse or names no metric, a cycle among derived metrics),
computed when the run is exported (``run_metrics``: orch's metrics, then the queries, then the
derived metrics in the order they depend on each other) and stored in metrics.json under their
names, beside ``defined_metrics`` (their names) and, when one could not be computed,
``defined_metric_errors`` ({name: why}).

A derived expression may name the file's other metrics, any metric orch computes, and seed 004's
names for orch's (``ALIASES``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import yaml

from coordstore.errors import InputError
from coordstore.models import RunDump

from orchestrator.views.asks import asked_metrics
from orchestrator.views.derived import Expression, ExpressionError
from orchestrator.views.metrics import METRIC_KEYS, compute_metrics
from orchestrator.views.runview import QueryError, RunView

DEFINED, ERRORS = "defined_metrics", "defined_metric_errors"
RESERVED = (DEFINED, ERRORS)  # metrics.json keys of their own
# seed 004's names for metrics orch computes (one alias applies when orch has its target)
ALIASES = {"completed_count": "tasks_completed", "wall_clock_duration_ms": "wall_clock_ms",
           "total_cost_usd": "cost_usd", "tasks_per_hour": "throughput_tasks_per_h",
           "total_billable_tokens": "billable_tokens"}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Definition:
    """A metric an experiment file names: orch's (no definition) or its own (a query or an expression)."""

    name: str
    query: str | None = None
    derived: str | None = None

    @property
    def defined(self) -> bool:
        return self.query is not None or self.derived is not None


class DefinitionError(Exception):
    """A metric refused: ``index`` in the list checked, ``field`` the key at fault (name, query, derived)."""

    def __init__(self, index: int, field: str, message: str):
        super().__init__(message)
        self.index, self.field = index, field


@dataclass(frozen=True)
class Checked:
    """Definitions that passed ``check``: the defined ones in the order they compute."""

    order: tuple[Definition, ...]
    expressions: dict[str, Expression]


def _alias(name: str) -> str | None:
    target = ALIASES.get(name)
    return target if target in METRIC_KEYS else None


def _check_one(i: int, d: Definition, names: dict[str, int]) -> Expression | None:
    def refuse(field: str, msg: str) -> DefinitionError:
        return DefinitionError(i, field, f"metric {d.name!r}: {msg}")

    if d.name in names:
        raise refuse("name", f"named twice (also metric {names[d.name]} of the list)")
    if not d.defined:
        if d.name not in METRIC_KEYS:
            raise refuse("name", "orch computes no metric of that name; define it with query: (SQL) or derived: (an expression)")
        return None
    if d.name in METRIC_KEYS or d.name in RESERVED:
        raise refuse("name", "orch computes a metric of that name itself; give yours another name")
    if not _NAME.match(d.name):
        raise refuse("name", "a defined metric's name is letters, digits and _ (it is a key of metrics.json and a name in expressions)")
    if d.query is not None and d.derived is not None:
        raise refuse("derived", "a metric has query: or derived:, not both")
    if d.query is not None:
        with RunView() as empty:
            try:
                empty.check(d.query)
            except QueryError as e:
                raise refuse("query", str(e)) from None
        return None
    try:
        return Expression(d.derived)
    except ExpressionError as e:
        raise refuse("derived", str(e)) from None


def check(metrics: Sequence[Definition]) -> Checked:
    """Refuse what cannot be computed (DefinitionError); the defined metrics in computing order."""
    names: dict[str, int] = {}
    expressions: dict[str, Expression] = {}
    for i, d in enumerate(metrics):
        e = _check_one(i, d, names)
        names[d.name] = i
        if e is not None:
            expressions[d.name] = e
    defined = {d.name: d for d in metrics if d.defined}
    for name, e in expressions.items():
        for n in e.names:
            if n not in defined and n not in METRIC_KEYS and _alias(n) is None:
                raise DefinitionError(names[name], "derived", f"metric {name!r}: {n!r} is no metric (neither orch's nor one this file defines)")
    order: list[Definition] = [d for d in defined.values() if d.query is not None]
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:  # depth first: a metric after those it reads
        if name in done or name not in expressions:
            return
        if name in path:
            cycle = " -> ".join(path[path.index(name):] + [name])
            raise DefinitionError(names[name], "derived", f"metric {name!r}: depends on itself ({cycle})")
        for n in expressions[name].names:
            if n in defined:
                visit(n, path + [name])
        done.add(name)
        order.append(defined[name])

    for name in expressions:
        visit(name, [])
    return Checked(tuple(order), expressions)


def _value_of(name: str, defined: dict[str, Any], builtin: dict[str, Any]) -> Any:
    if name in defined:
        return defined[name]
    return builtin.get(name) if name in builtin else builtin.get(_alias(name) or "")


def compute(dump: RunDump, builtin: dict[str, Any], checked: Checked) -> tuple[dict[str, Any], dict[str, str]]:
    """The defined metrics' values (None where one could not be computed) and why they could not."""
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    view = RunView(dump) if any(d.query is not None for d in checked.order) else None
    try:
        for d in checked.order:
            try:
                if d.query is not None:
                    values[d.name] = view.value(d.query)
                else:
                    e = checked.expressions[d.name]
                    values[d.name] = e.evaluate({n: _value_of(n, values, builtin) for n in e.names})
            except (QueryError, ExpressionError) as err:
                values[d.name], errors[d.name] = None, f"metric {d.name!r}: {err}"
    finally:
        if view is not None:
            view.close()
    return values, errors


def definitions_of(doc: Any) -> tuple[list[Definition], list[tuple]]:
    """The metrics an experiment file's YAML (any shape orch loads) names, and their key paths."""
    asked = asked_metrics(doc.get("metrics") if isinstance(doc, dict) else None)
    return [Definition(m["name"], m.get("query"), m.get("derived")) for m in asked.items], asked.keys


def run_metrics(dump: RunDump, experiment_file: Path | None = None) -> dict[str, Any]:
    """orch's metrics of a run, then those its (frozen) experiment file defines, as metrics.json holds them."""
    metrics = compute_metrics(dump)
    doc = yaml.safe_load(Path(experiment_file).read_text()) if experiment_file and Path(experiment_file).is_file() else None
    defs, keys = definitions_of(doc)
    try:
        checked = check(defs)
    except DefinitionError as e:
        key = ".".join(str(p) for p in (*keys[e.index], e.field))
        raise InputError(f"{experiment_file}: {key}: {e}") from None
    values, errors = compute(dump, metrics, checked)
    metrics[DEFINED] = [d.name for d in defs if d.defined]
    metrics.update(values)
    if errors:
        metrics[ERRORS] = errors
    return metrics
