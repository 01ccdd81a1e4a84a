"""Hand-built run histories for metric tests: transition rows added in order, the way a store
records them, so each test's numbers can be worked out by hand."""

from __future__ import annotations

from coordstore.models import Transition


class History:
    def __init__(self, run_id: str = "r"):
        self.run_id = run_id
        self.rows: list[Transition] = []

    def add(self, ts, entity, eid, frm, to, agent=None, **data):
        self.rows.append(Transition(seq=len(self.rows) + 1, run_id=self.run_id, ts_ms=ts, entity=entity, entity_id=eid,
                                    from_state=frm, to_state=to, agent=agent, data=data))

    def task_done(self, task, agent, assigned, started, completed, by=None, to="completed"):
        """One claimed (or, with ``by``, assigned) task's rows: assigned, working, then ``to``."""
        self.add(assigned, "task", task, "pending", "assigned", agent, by=by or agent)
        self.add(started, "task", task, "assigned", "working", agent)
        self.add(completed, "task", task, "working", to, agent)

    def phase(self, name, start, end, **data):
        """An orchestration phase note of the run (``orchestrator.runs.phases``)."""
        self.add(end, "run", self.run_id, "running", "running", action="phase", phase=name, start_ms=start, end_ms=end, **data)
