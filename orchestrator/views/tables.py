"""Parquet copies of a run's history and metrics, for pandas, polars or DuckDB users.

``transitions.parquet``: one row per history row, the columns of ``Transition`` (``data`` as a
JSON string, since its keys differ from row to row). ``metrics.parquet``: one row per run, its
identity (run, experiment, variant, policy, seed) then every metric; a metric that is a mapping
(``utilization``, ``tokens``, ``idle_ms``…) becomes one column per key, ``utilization.w1``, so each
cell holds a number. The experiment-level ``metrics.parquet`` stacks its runs' rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from coordstore.errors import InputError
from coordstore.models import Transition
from coordstore.private import write_private

TRANSITION_COLUMNS = ("seq", "run_id", "ts_ms", "entity", "entity_id", "from_state", "to_state", "agent", "reason",
                      "data", "key")
IDENTITY = ("run_id", "experiment", "variant", "policy", "seed")


def _pa():
    import pyarrow as pa  # lazy: pyarrow loads only when a table is written
    import pyarrow.parquet as pq  # lazy: as above

    return pa, pq


def _scalar(v: Any) -> Any:
    """A cell: numbers, strings and None stay; anything else (a list) as JSON text."""
    return v if v is None or isinstance(v, (bool, int, float, str)) else json.dumps(v, sort_keys=True)


def flatten(metrics: dict[str, Any]) -> dict[str, Any]:
    """One level of mappings opened into ``key.sub`` columns; deeper values as JSON text."""
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        if isinstance(v, dict):
            for sub, x in v.items():
                out[f"{k}.{sub}"] = _scalar(x)
        else:
            out[k] = _scalar(v)
    return out


def metrics_row(spec: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    """A run's row: ``spec`` is its run.json (``RunSpec``) as a mapping."""
    ident = {"run_id": spec.get("run_id"), "experiment": spec.get("experiment_id"), "variant": spec.get("variant"),
             "policy": spec.get("policy"), "seed": spec.get("seed")}
    return {**ident, **flatten(metrics)}


def _write_rows(rows: list[dict[str, Any]], columns: Iterable[str], out: Path) -> Path:
    pa, pq = _pa()
    cols = list(dict.fromkeys(columns))
    arrays = {}
    for c in cols:
        values = [r.get(c) for r in rows]
        typ = _type(pa, values)
        if typ == pa.string():
            values = [None if v is None else v if isinstance(v, str) else json.dumps(v) for v in values]
        arrays[c] = pa.array(values, type=typ)
    buf = pa.BufferOutputStream()
    pq.write_table(pa.table(arrays), buf)
    write_private(out, buf.getvalue().to_pybytes())  # atomic and the owner's alone, like every export
    return out


def _type(pa, values: list[Any]):
    """One Arrow type per column: ints stay ints, a column mixing ints and floats is float, a
    column mixing numbers and text (or of booleans) is kept as what it holds, text otherwise."""
    kinds = {type(v) for v in values if v is not None}
    if not kinds:
        return pa.null()
    if kinds == {bool}:
        return pa.bool_()
    if kinds <= {int}:
        return pa.int64()
    if kinds <= {int, float}:
        return pa.float64()
    return pa.string()


def write_transitions(rows: list[Transition], out: Path) -> Path:
    records = [{**r.model_dump(), "data": json.dumps(r.data, sort_keys=True)} for r in rows]
    return _write_rows(records, TRANSITION_COLUMNS, out)


def write_metrics(rows: list[dict[str, Any]], out: Path) -> Path:
    """Rows from ``metrics_row``; columns in first-seen order, identity first."""
    columns = [*IDENTITY, *(k for r in rows for k in r if k not in IDENTITY)]
    return _write_rows(rows, columns, out)


def write_experiment_metrics(experiment_dir: Path) -> Path | None:
    """``<experiment dir>/metrics.parquet``: one row per finished run below it (as the comparison
    finds them, ``compare.find_runs``); None when there is none."""
    from orchestrator.views.compare import find_runs  # lazy: the comparison's imports only when writing this table

    try:
        by_variant = find_runs([Path(experiment_dir)])
    except InputError:  # no finished run below it
        return None
    rows = [metrics_row(r["spec"], r["metrics"]) for runs in by_variant.values() for r in runs]
    return write_metrics(rows, Path(experiment_dir) / "metrics.parquet")
