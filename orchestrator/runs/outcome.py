"""Whether a run whose every task ended succeeded.

``finished`` means every work task completed, or the experiment accepts failed and cancelled
tasks (``execution.allow_failures``, for fault-injection experiments); otherwise the run is
``failed`` and its reason counts them. `orch run`, `orch resume`, `orch runs`, `orch status` and
`orch watch --exit-status` all read that one status from the store; a failed run exits 1.
"""

from __future__ import annotations

from coordstore.graph import GraphIndex, work_ids


def task_failures(store, run_id: str) -> tuple[int, int, int]:
    """(failed, cancelled, all) work tasks of the run, as the metrics count them."""
    edges = store.dependencies(run_id)  # first: tasks only grow, so every edge names a task listed after it
    tasks = store.list_tasks(run_id)
    work = set(work_ids(GraphIndex(tasks, edges)))
    failed = sum(t.status == "failed" for t in tasks if t.id in work)
    cancelled = sum(t.status == "cancelled" for t in tasks if t.id in work)
    return failed, cancelled, len(work)


def settle(spec, store, status: str) -> tuple[str, str | None]:
    """The run's final status and reason, from how its loop ended (``finished``: every task ended)."""
    if status != "finished":
        return status, None
    failed, cancelled, total = task_failures(store, spec.run_id)
    if not (failed or cancelled):
        return status, None
    what = f"{failed} failed, {cancelled} cancelled of {total} tasks"
    if spec.allow_failures:
        return status, f"{what} (allow_failures)"
    return "failed", what
