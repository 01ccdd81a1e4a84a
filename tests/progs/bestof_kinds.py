"""Agent kinds for the best-of tests (runners load them as bestof_kinds:X with tests/progs on PYTHONPATH)."""

from __future__ import annotations

import os
from pathlib import Path

from agents.kinds import Result


class Writer:
    """Appends a line naming the agent to each file of the task's scope, after ``work_s``.

    ``crash_once_on``: task ids whose first attempt by this agent kills the process (a marker in
    ``marker_dir`` remembers it across respawns); ``hang_s``: sleep this long first (beating), in
    an entered slot only (a slot's seed is not the run's, ``run_seed``)."""

    name = "writer"

    def __init__(self, options=None):
        self.options = dict(options or {})

    def run(self, task, ctx) -> Result:
        o = self.options
        if task.id in o.get("crash_once_on", ()):
            marker = Path(o["marker_dir"]) / f"{ctx.agent_id}-{task.id}"
            if not marker.exists():
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.write_text("crashed\n")
                ctx.events.log(f"test: crashing on {task.id}", task=task.id)
                os._exit(3)
        if ctx.seed != o.get("run_seed", 1):
            ctx.sleep(float(o.get("hang_s", 0)))
        for rel in task.file_scope or [f"{task.id}.txt"]:
            p = Path(ctx.worktree) / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text((p.read_text() if p.exists() else "") + f"{task.id} by {ctx.agent_id}\n" * int(o.get("lines", 1)))
        ctx.sleep(float(o.get("work_s", 0.05)))
        return Result(ok=True, tokens={"in": 100, "out": 10})
