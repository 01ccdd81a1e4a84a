"""Deferred merge mode: at the end of the run, merge every agent branch into the merged branch.

Branches merge in the order their last task completed; a conflicting branch is recorded (a
``merge`` transition with its paths) and kept, and the others still merge.
"""

from __future__ import annotations

from pathlib import Path

from coordstore.models import Transition

from gitwork.merging import Merger
from gitwork.runner import identity_env

from orchestrator.rundir import RunSpec


def merge_completed(spec: RunSpec, store) -> list:
    merger = Merger(Path(spec.repo), f"refs/heads/{spec.merged_branch}")
    last_done: dict[str, int] = {}
    for t in store.history(spec.run_id, entity="task"):
        if t.to_state == "completed" and t.agent:
            last_done[t.agent] = t.ts_ms
    results = []
    for agent in sorted(last_done, key=last_done.get):
        branch = spec.agent_branch(agent)
        res = merger.merge(branch, f"merge {branch}", identity_env("orch"))
        results.append((agent, res))
        store.record(Transition(
            run_id=spec.run_id, ts_ms=store.clock(), entity="merge", entity_id=branch,
            to_state="merged" if res.ok else "conflict", agent=agent,
            reason=None if res.ok else "conflict", data={"sha": res.sha, "conflicts": list(res.conflicts)},
            key=f"final-merge:{branch}",
        ))
    return results
