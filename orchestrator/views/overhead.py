"""Orchestration overhead: the time orch spends around the agents' work, and when it pays off.

The orchestrator records each phase it goes through as a run note in the history (``action:
"phase"``, ``data: {phase, start_ms, end_ms}``, see ``orchestrator.runs.phases``), so these metrics
come from the history like every other:

* ``setup``: ``prepare_run`` — run directory, demo repository, the store's run and graph, merged
  branch, worktrees (the template was loaded and checked before).
* ``spawn``: from starting the run's servers and runners until every runner reported in (its first
  heartbeat after its registration). A resume re-attaches and respawns: one more spawn phase.
  An agent may start work before the last runner is up, so part of a spawn can overlap the wall
  clock (the share and speedup below are then slightly conservative).
* ``drain``: from the last task reaching a terminal status (or the timeout) until every runner
  exited or was stopped.
* ``final_merge``: deferred merge mode's merge of every agent branch at the end; immediate mode
  merges each task as it completes, inside its working period, so there is none (0).

A resumed run has more phases; each metric sums every phase of its name.

Break-even against solo (seed 003, "The Break-Even Point"). Let n = completed work tasks, d = their
mean duration (``solo_estimate_ms`` / n), W = wall clock, O = overhead. One agent doing the same
tasks back to back needs about n·d (its own setup ignored); this run took W + O. Write W = k·d:
k = W / d is the run's effective serial depth, how many task lengths deep its schedule was. Were
every task longer by the same factor, W and n·d would grow with d while O stays, so orchestrating
pays when n·d > k·d + O, that is when d > O / (n − k): ``break_even_task_ms``. With n ≤ k the
schedule was no shorter than one agent's even without overhead: it never pays (None).
"""

from __future__ import annotations

from typing import Any

from coordstore.models import RunDump

PHASE_ACTION = "phase"  # data.action of the run notes that record a phase
PHASES = ("setup", "spawn", "drain", "final_merge")
OVERHEAD_KEYS = (
    "setup_ms", "spawn_ms", "drain_ms", "final_merge_ms", "orchestration_overhead_ms", "overhead_share",
    "solo_estimate_ms", "speedup_vs_solo", "break_even_task_ms", "merge_ms",
)


def phases(dump: RunDump) -> list[dict[str, Any]]:
    """The phase notes' data, in history order (each ``{phase, start_ms, end_ms, ...}``)."""
    return [dict(r.data) for r in dump.history
            if r.entity == "run" and r.is_note and r.data.get("action") == PHASE_ACTION]


def phase_ms(dump: RunDump) -> dict[str, int]:
    """Per phase, the sum of its recorded durations (0 for a phase that never ran)."""
    out = dict.fromkeys(PHASES, 0)
    for p in phases(dump):
        if p.get("phase") in out:
            out[p["phase"]] += max(0, int(p["end_ms"]) - int(p["start_ms"]))
    return out


def break_even_task_ms(overhead_ms: float, wall_ms: float, task_ms: list[int]) -> float | None:
    """O / (n − k) with k = W / mean task duration (module docstring); None when n ≤ k."""
    n, total = len(task_ms), sum(task_ms)
    if n == 0 or total <= 0:
        return None
    k = wall_ms * n / total  # wall ÷ mean duration
    return overhead_ms / (n - k) if n > k else None


def overhead_metrics(dump: RunDump, wall_ms: int, task_ms: dict[str, int]) -> dict[str, Any]:
    """The overhead keys (``OVERHEAD_KEYS``). ``wall_ms``: the run's wall clock; ``task_ms``:
    each completed work task's duration (its completing working period)."""
    ph = phase_ms(dump)
    overhead = sum(ph.values())
    solo = sum(task_ms.values())
    elapsed = wall_ms + overhead
    be = break_even_task_ms(overhead, wall_ms, list(task_ms.values()))
    # per-task merges (immediate mode) happen inside their task's working period: shown apart
    merges = sum(int((r.data or {}).get("ms") or 0) for r in dump.history if r.entity == "merge")
    return {
        "setup_ms": ph["setup"],
        "spawn_ms": ph["spawn"],
        "drain_ms": ph["drain"],
        "final_merge_ms": ph["final_merge"],
        "orchestration_overhead_ms": overhead,
        "overhead_share": round(overhead / elapsed, 4) if elapsed else 0.0,
        "solo_estimate_ms": solo,
        "speedup_vs_solo": round(solo / elapsed, 4) if elapsed else 0.0,
        "break_even_task_ms": None if be is None else round(be, 1),
        "merge_ms": merges,
    }


def _s(ms: float) -> str:
    return f"{ms / 1000:.1f}s" if ms < 60_000 else f"{ms / 60_000:.1f}min"


def overhead_line(m: dict[str, Any]) -> str:
    """One line for people: the phases, their share, and when orchestrating this graph pays off."""
    if "orchestration_overhead_ms" not in m:  # metrics of a run exported before phases were recorded
        return "overhead: not recorded for this run"
    be = m["break_even_task_ms"]
    if not m["solo_estimate_ms"]:
        pays = "no completed task to weigh it against"
    elif be is None:
        pays = "orchestrating this graph never pays off against one agent (its schedule was no shorter than serial)"
    else:
        pays = f"orchestrating pays off for tasks longer than {_s(be)}"
    return (f"overhead: setup {_s(m['setup_ms'])}, spawn {_s(m['spawn_ms'])}, drain {_s(m['drain_ms'])}, "
            f"merge {_s(m['final_merge_ms'])} ({m['overhead_share']:.0%} of wall+overhead); "
            f"speedup vs solo {m['speedup_vs_solo']:.2f}x; {pays}")


def overhead_rows(m: dict[str, Any]) -> list[tuple[str, str]]:
    """The summary table's rows: the overhead beside the wall clock, and the break-even."""
    if "orchestration_overhead_ms" not in m:
        return []
    be = m["break_even_task_ms"]
    phases_s = ", ".join(f"{name} {m[key] / 1000:.2f}" for name, key in
                         (("setup", "setup_ms"), ("spawn", "spawn_ms"), ("drain", "drain_ms"), ("final merge", "final_merge_ms")))
    return [
        ("orchestration overhead", f"{m['orchestration_overhead_ms'] / 1000:.2f} s ({phases_s}); "
                                   f"{m['overhead_share']:.1%} of wall + overhead"),
        ("speedup vs solo / break-even task", f"{m['speedup_vs_solo']:.2f}x / "
         + ("-" if not m["solo_estimate_ms"] else "never pays" if be is None else f"{be / 1000:.2f} s")),
    ]
