"""Small misbehaving agent kinds for the run-loop tests (runners load them as faulty_kinds:X with tests/progs on PYTHONPATH).

Each misbehaves on a task's first attempt only when the task's meta names the fault, then works
like a plain writer, so the supervision ladder has something to recover.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from agents.kinds import Result


class _Base:
    name = "test"

    def __init__(self, options=None):
        self.options = dict(options or {})

    def write(self, task, ctx) -> Result:
        for rel in task.file_scope or [f"{task.id}.txt"]:
            p = Path(ctx.worktree) / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            old = p.read_text() if p.exists() else ""
            p.write_text(old + f"{task.id} by {ctx.agent_id}\n")
        ctx.events.step("write", args={"task": task.id}, task=task.id)
        ctx.sleep(float(self.options.get("work_s", 0.05)))
        return Result(ok=True)


class Faulty(_Base):
    """task.meta['fault'] in {crash, silent, loop}: done on attempt 1, a clean write afterwards."""

    def run(self, task, ctx) -> Result:
        fault = task.meta.get("fault")
        if fault and ctx.attempt == 1:
            ctx.events.log(f"test fault {fault}", task=task.id)
            if fault == "crash":
                os._exit(3)
            if fault == "silent":
                while True:  # alive, no events, no heartbeats (the pulse is not called)
                    time.sleep(1)
            if fault == "loop":
                while True:
                    ctx.events.step("read", args={"path": "same.txt"}, task=task.id)
                    ctx.sleep(0.02)
        return self.write(task, ctx)
