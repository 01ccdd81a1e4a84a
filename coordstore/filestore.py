"""The file backend (``file:///abs/dir``): the CoordStore verbs over one directory.

The directory, its journal and the replay into memory are ``filejournal.FileJournal``'s (its
docstring describes the layout and why a journal); each run's state in memory is a
``runstate.RunState``, and the rules of every verb are ``statemachine``'s: a write locks, catches
up, runs the verb on the run's state and appends what it changed as one journal line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from coordstore import statemachine as sm
from coordstore.base import CoordStore, wall_clock_ms
from coordstore.errors import InvalidTransition
from coordstore.filejournal import FSYNC_DEFAULT, FileJournal
from coordstore.jsonlog import encode
from coordstore.models import Agent, ClaimOrder, Dependency, Event, Run, RunDump, Task, TaskGraph, Transition
from coordstore.runstate import RunState


class FileStore(FileJournal, CoordStore):
    scheme = "file"

    def __init__(self, url: str, clock: Callable[[], int] = wall_clock_ms, fsync: bool = FSYNC_DEFAULT,
                 readonly: bool = False):
        super().__init__(url, clock)
        self._open_journal(url, fsync, readonly)

    # ------------------------------------------------------------------ runs
    def create_run(self, run: Run, now: int | None = None) -> Run:
        now = self._now(now)
        d = run.model_dump(mode="json")
        d.update(status="running", finished_at=None, created_at=d["created_at"] if d["created_at"] is not None else now)
        with self._locked():
            if run.id in self._runs:
                raise InvalidTransition(f"run {run.id!r} already exists in {self.url}")
            rs = RunState(d)
            rs.begin()
            rs.start_run(now)
            self._commit(run.id, rs)
            self._runs[run.id] = rs
        return Run.model_validate(d)

    def get_run(self, run_id: str) -> Run:
        return Run.model_validate(self._read(run_id).run)

    def list_runs(self) -> list[Run]:
        with self._os_errors("read journal"):
            self._catch_up()
        runs = [Run.model_validate(rs.run) for rs in self._runs.values()]  # creation order
        return sorted(runs, key=lambda r: r.created_at or 0)

    def finish_run(self, run_id: str, status: str, reason: str | None = None, now: int | None = None) -> Run:
        self._verb(run_id, now, sm.finish_run, status, reason)
        return Run.model_validate(self._runs[run_id].run)

    def reopen_run(self, run_id: str, reason: str | None = None, now: int | None = None) -> Run:
        self._verb(run_id, now, sm.reopen_run, reason)
        return Run.model_validate(self._runs[run_id].run)

    # ------------------------------------------------------------------ tasks
    def _task(self, run_id: str, task_id: str) -> Task:
        return Task.model_validate(self._runs[run_id].tasks[task_id])

    def add_graph(self, run_id: str, graph: TaskGraph, now: int | None = None) -> None:
        now = self._now(now)
        self._write(run_id, lambda rs: rs.add_graph(graph, now))

    def add_tasks(self, run_id, tasks, deps=(), parent=None, by=None, now=None) -> list[Task]:
        now = self._now(now)
        self._write(run_id, lambda rs: rs.grow(list(tasks), list(deps), parent, by, now))
        return [self._task(run_id, t.id) for t in tasks]

    def link(self, run_id, from_id, to_id, type="blocks", by=None, now=None) -> None:
        now = self._now(now)
        d = Dependency(from_id=from_id, to_id=to_id, type=type)
        self._write(run_id, lambda rs: rs.link(d, by, now))

    def unlink(self, run_id, from_id, to_id, type="blocks", by=None, now=None) -> None:
        now = self._now(now)
        d = Dependency(from_id=from_id, to_id=to_id, type=type)
        self._write(run_id, lambda rs: rs.unlink(d, by, now))

    def get_task(self, run_id: str, task_id: str) -> Task:
        return Task.model_validate(self._read(run_id).task(task_id))

    def list_tasks(self, run_id, status=None, owner=None, parent=None) -> list[Task]:
        return [Task.model_validate(t) for t in self._read(run_id).list_tasks(status, owner, parent)]

    def dependencies(self, run_id: str) -> list[Dependency]:
        return [Dependency.model_validate(d) for d in self._read(run_id).deps]

    def ready_tasks(self, run_id: str, agent_tags: Iterable[str] | None = None, order: ClaimOrder = "priority") -> list[Task]:
        rs = self._read(run_id)
        return [Task.model_validate(rs.tasks[t]) for t in rs.ready_list(agent_tags, order)]

    def claim_next(self, run_id, agent, agent_tags=None, order: ClaimOrder = "priority", within=None, now=None,
                   seen=None, key=None):
        now = self._now(now)
        tid = self._write(run_id, lambda rs: rs.claim_next(agent, agent_tags, order, within, now, seen, key))
        return None if tid is None else self._task(run_id, tid)

    def claim(self, run_id: str, task_id: str, agent: str, now: int | None = None, key: str | None = None) -> Task | None:
        tid = self._verb(run_id, now, sm.claim, task_id, agent, key)
        return None if tid is None else self._task(run_id, tid)

    def _verb(self, run_id: str, now: int | None, verb: Callable, *args):
        """One verb of the state machine on the run's state: ``verb(state, *args, now)``, with
        ``now`` raised to keep the history in time order."""
        now = self._now(now)
        return self._write(run_id, lambda rs: verb(rs, *args, rs.at(now)))

    def _task_verb(self, run_id: str, now: int | None, verb: Callable, task_id: str, *args) -> Task:
        self._verb(run_id, now, verb, task_id, *args)
        return self._task(run_id, task_id)

    def assign(self, run_id, task_id, agent, by, now=None) -> Task:
        return self._task_verb(run_id, now, sm.assign, task_id, agent, by)

    def start(self, run_id, task_id, agent, attempt, now=None) -> Task:
        return self._task_verb(run_id, now, sm.start, task_id, agent, attempt)

    def complete(self, run_id, task_id, agent, attempt, data=None, now=None) -> Task:
        return self._task_verb(run_id, now, sm.complete, task_id, agent, attempt, data)

    def fail(self, run_id, task_id, agent, attempt, reason, now=None) -> Task:
        return self._task_verb(run_id, now, sm.fail, task_id, agent, attempt, reason)

    def requeue(self, run_id, task_id, reason, by=None, now=None) -> Task:
        return self._task_verb(run_id, now, sm.requeue, task_id, reason, by)

    def cancel(self, run_id, task_id, reason, by=None, now=None) -> Task:
        return self._task_verb(run_id, now, sm.cancel, task_id, reason, by)

    def add_usage(self, run_id, task_id, tokens_in=0, tokens_out=0, tokens_cached=0, tokens_thinking=0, cost_usd=0.0, *,
                  tokens_image=0, tokens_audio=0, metric_6=0, metric_7=0):
        slots = (tokens_in, tokens_out, tokens_cached, tokens_thinking, tokens_image, tokens_audio, metric_6, metric_7)
        self._write(run_id, lambda rs: rs.add_usage(task_id, slots, cost_usd))

    # ------------------------------------------------------------------ agents
    def _agent(self, run_id: str, agent_id: str) -> Agent:
        return Agent.model_validate(self._runs[run_id].agents[agent_id])

    def register_agent(self, run_id, agent, lease_ms=None, now=None) -> Agent:
        self._verb(run_id, now, sm.register, agent, lease_ms)
        return self._agent(run_id, agent.id)

    def get_agent(self, run_id: str, agent_id: str) -> Agent:
        return Agent.model_validate(self._read(run_id).agent(agent_id))

    def list_agents(self, run_id: str) -> list[Agent]:
        rs = self._read(run_id)
        return [Agent.model_validate(rs.agents[a]) for a in sorted(rs.agents)]

    def heartbeat(self, run_id, agent_id, lease_ms, current_task=None, now=None) -> Agent:
        now = self._now(now)
        self._write(run_id, lambda rs: rs.heartbeat(agent_id, lease_ms, current_task, now))
        return self._agent(run_id, agent_id)

    def set_agent_status(self, run_id, agent_id, status, reason=None, data=None, now=None) -> Agent:
        self._verb(run_id, now, sm.set_agent_status, agent_id, status, reason, data)
        return self._agent(run_id, agent_id)

    def reap_expired(self, run_id: str, now: int | None = None) -> list[str]:
        now = self._now(now)
        return self._write(run_id, lambda rs: rs.reap(now))

    # ------------------------------------------------------------------ events
    def append_events(self, run_id: str, events: list[Event]) -> int:
        with self._locked():
            self._run(run_id)
            j = self._event_journal(run_id)
            rs = self._runs[run_id]
            new = rs.new_events(events)
            if new:
                line = encode(new)
                with self._os_errors("append events"):
                    j.append(line, self.fsync)
                rs.put_events(new)
            return len(new)

    def _read_events_state(self, run_id: str) -> RunState:
        self._read(run_id)
        with self._os_errors("read events"):
            self._event_journal(run_id)
        return self._runs[run_id]

    def read_events(self, run_id, agent=None, since_seq=-1, limit=None) -> list[Event]:
        rows = self._read_events_state(run_id).read_events(agent, since_seq, limit)
        return [Event.model_validate(e) for e in rows]

    def last_event_seq(self, run_id: str, agent: str) -> int:
        return self._read_events_state(run_id).last_event_seq(agent)

    # ------------------------------------------------------------------ history
    def record(self, transition: Transition) -> Transition | None:
        row = self._write(transition.run_id, lambda rs: rs.record(transition))
        return None if row is None else Transition.model_validate(row)

    def note(self, run_id, entity, entity_id, action, reason=None, agent=None, data=None, key=None, now=None):
        now = self._now(now)
        row = self._write(run_id, lambda rs: rs.note(entity, entity_id, action, reason, agent, data, key, now))
        return None if row is None else Transition.model_validate(row)

    def history(self, run_id, since_seq=0, entity=None, entity_id=None, agent=None) -> list[Transition]:
        rows = self._read(run_id).history_rows(since_seq, entity, entity_id, agent)
        return [Transition.model_construct(**{**r, "data": dict(r["data"])}) for r in rows]

    # ------------------------------------------------------------------ snapshot
    def dump_run(self, run_id: str) -> RunDump:
        return self._read_events_state(run_id).dump()

    def load_run(self, dump: RunDump) -> None:
        doc = dump.model_dump(mode="json")
        rid = dump.run.id
        with self._locked():
            if rid in self._runs:
                raise InvalidTransition(f"run {rid!r} already exists in {self.url}")
            rs = RunState.from_dump(doc)  # validates before anything is written
            line = encode({"r": rid, "p": [["load", doc]], "t": []})
            with self._os_errors("append to journal"):
                self._journal.append(line, self.fsync)
            self._runs[rid] = rs
