"""The CoordStore contract: what every backend promises, method by method.

General rules (every backend, every method):

* A store holds many runs; every task, agent, event and transition belongs to one ``run_id``.
  Task ids are unique within a run (template ids are kept, so seeds key on them).
* Every change of state writes its ``Transition`` row(s) **in the same atomic step** as the
  change: either both are visible to every other process, or neither is. History is append
  only; ``seq`` is per run, starts at 1 and increases by one in commit order (no gaps).
* Atomic operations are abstract here on purpose: no backend may inherit a check-then-set.
* One state machine (``statemachine.py``): which status each verb moves a task from, what it
  sets, the rows it writes, the error (class and text) of each refusal and the cascades are
  written once there; a backend gives it storage inside its atomic step, not rules of its own.
* ``now`` arguments are integer milliseconds; ``None`` means "the store's clock" (``self.clock``,
  injectable for tests).
* Errors: ``NotFound`` for a missing run/task/agent, ``InvalidTransition`` when the status does
  not allow the change, ``StaleAttempt`` when ``attempt``/``agent`` no longer own the task.
  A refused call changes nothing and writes no transition.
* Stores are safe to use from many processes at once; an instance is used by one thread.

Transition rows written by the operations (entity, from -> to, reason):

* add_graph: one ``task`` row per task, ``None -> pending``, reason ``import``.
* add_tasks: one ``task`` row per new task, ``None -> pending``, reason ``added``, ``agent`` and
  ``data.created_by`` = the author; link/unlink (and add_tasks for each new edge on a task that was
  already there): a note-style ``task`` row ``<status> -> <status>`` on the blocked task (the parent,
  for a ``contains`` edge) with ``data.action`` = ``linked`` | ``unlinked`` and the edge.
* claim_next/claim: one ``claim`` row per attempt, ``to_state`` = ``won`` | ``lost`` | ``empty``,
  ``entity_id`` = task id (or ``""`` when nothing was claimable); a won claim also writes the
  ``task`` row ``pending -> assigned`` with ``data.by`` = the agent itself. A ``claim_next`` given
  ``seen`` that lost the race for it writes a ``lost`` row for ``seen`` first (see ``claim_next``).
* assign: ``task`` ``pending -> assigned`` (or ``assigned -> assigned`` for a reassignment), ``data.by``.
* start/complete/fail/requeue/cancel: the ``task`` row; cascades (container completion,
  dependents cancelled) write their own rows in the same step.
* register/set status/reap: ``agent`` rows; reap also writes the ``task`` requeue rows.
* note: one row ``<status> -> <status>`` of a task, agent or run, ``data.action`` naming the action.

History chains (``chains.py``; every backend, by construction). The rows of each task, agent, run
and merge form a chain: the first comes from None, each later ``from_state`` is the previous
row's ``to_state`` (the store derives it from what it stores, never from the caller), every
``to_state`` is one of the entity's states (``models.CHAINED``), and ``ts_ms`` never goes back.
Times: an operation writes at ``now`` raised to the run's latest row's ``ts_ms`` if that is later,
so the whole run's history is in time order by ``seq`` whichever process, clock or stale ``now``
wrote it (timestamps in the changed records, e.g. ``claimed_at``, are the same raised time).
Claim rows are attempts, each standing alone (from None). An action that changes no state (a
supervisor's respawn, a handoff, a degraded run) is a ``note``: its row repeats the status.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable

from coordstore.clock import wall_clock_ms
from coordstore.models import Agent, ClaimOrder, Dependency, Event, Run, RunDump, Task, TaskGraph, Transition


class CoordStore(ABC):
    """Abstract base of the store backends (``file://``, ``sqlite://``, ``postgresql://``)."""

    #: URL scheme this backend serves
    scheme: str = ""
    #: True when every stamp (history, leases, claims, reap's now) is the database server's time and
    #: ``now`` arguments are ignored (PostgreSQL without an injected clock); ``clock()`` reads it too
    database_clock: bool = False

    def __init__(self, url: str, clock: Callable[[], int] = wall_clock_ms):
        self.url = url
        self.clock = clock

    def _now(self, now: int | None) -> int:
        return self.clock() if now is None else now

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:  # noqa: B027 - optional for backends holding nothing
        """Release connections and handles. Idempotent."""

    def __enter__(self) -> "CoordStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ waiting
    def wait_for_change(self, run_id: str, timeout_ms: float, poll_ms: float = 20) -> bool:
        """Block until the run may have changed since this instance's previous call, or ``timeout_ms``.

        What counts as a change: any history row of the run committed by anyone (a task added,
        claimed, completed, requeued, failed; the run closed). True: look again now; False: the
        timeout passed with no change seen. A hint for idle waiters, never a promise either way: a
        True may find nothing new (spurious), and a backend that is told of changes (PostgreSQL's
        NOTIFY) may miss one, so a caller always looks again after ``timeout_ms`` whatever this
        returns; that timeout is its polling period. The first call on an instance (nothing seen
        yet) returns True at once: what happened before it is unknown.

        This default cannot tell: it sleeps ``min(timeout_ms, poll_ms)`` and returns True (a plain
        poll every ``poll_ms``). SQLite checks a cheap change counter every ``poll_ms``; PostgreSQL
        sleeps on LISTEN until a NOTIFY sent at the commit of a change (``pg_wake``).
        """
        time.sleep(max(0.0, min(timeout_ms, poll_ms)) / 1000.0)
        return True

    # ------------------------------------------------------------------ runs
    @abstractmethod
    def create_run(self, run: Run, now: int | None = None) -> Run:
        """Create ``run`` (status ``running``, ``created_at`` = now unless set).

        Writes ``run`` ``None -> running``. ``InvalidTransition`` if the id exists.
        """

    @abstractmethod
    def get_run(self, run_id: str) -> Run:
        """The run, or ``NotFound``."""

    @abstractmethod
    def list_runs(self) -> list[Run]:
        """All runs, oldest first."""

    @abstractmethod
    def finish_run(self, run_id: str, status: str, reason: str | None = None, now: int | None = None) -> Run:
        """Set the run's final status (``finished`` | ``failed`` | ``interrupted``) and ``finished_at``.

        Writes ``run`` ``<old> -> <status>``. Finishing with the current status is a no-op.
        """

    @abstractmethod
    def reopen_run(self, run_id: str, reason: str | None = None, now: int | None = None) -> Run:
        """Set an ``interrupted`` run back to ``running`` (resume): clears ``finished_at``, writes
        ``run`` ``interrupted -> running``. A ``running`` run is a no-op; a ``finished`` or
        ``failed`` one is an ``InvalidTransition`` and nothing changes (``statemachine.reopen_needed``).
        """

    # ------------------------------------------------------------------ tasks
    @abstractmethod
    def add_graph(self, run_id: str, graph: TaskGraph, now: int | None = None) -> None:
        """Add a validated task graph to the run, all or nothing.

        Validates with ``graph.validate`` (``GraphError`` names the cycle or bad edge); task ids
        already in the run are an ``InvalidTransition``. Imported tasks keep their status
        (snapshots of finished runs load as they were) unless pending. Precomputes what
        ``claim_next`` needs (effective blockers, critical-path rank).
        """

    @abstractmethod
    def add_tasks(self, run_id: str, tasks: list[Task], deps: Iterable[Dependency] = (), parent: str | None = None,
                  by: str | None = None, now: int | None = None) -> list[Task]:
        """Grow the graph mid-run, all or nothing: add new ``pending`` tasks and their edges (which
        may name existing tasks), under ``parent`` if given (a ``contains`` edge to each new task
        that the edges give no parent). The grown graph is validated as one (``GraphError`` names a
        dangling id or the cycle, ``cycle: a -> b -> a``; file_scope as at import); an id the run
        has is an ``InvalidTransition``. The status rules are ``growth.py``'s: children go under a
        pending task or an open (not terminal) container, and a pending leaf that gains children
        becomes a container (no longer work: never ready nor claimed; it completes or fails by the
        usual cascade when its children are terminal); an edge may newly block only a pending task,
        and a failed or cancelled task blocks nothing new. Readiness follows at once (a task that
        gains an unfinished blocker is no longer ready). Returns the new tasks as stored."""

    @abstractmethod
    def link(self, run_id: str, from_id: str, to_id: str, type: str = "blocks", by: str | None = None,
             now: int | None = None) -> None:
        """Add one start edge (``blocks`` or ``follows``) mid-run: ``NotFound`` for an unknown
        task, ``GraphError`` naming the cycle it would close, ``InvalidTransition`` for an edge the
        run has or that ``growth.py``'s status rules refuse. The blocked task stops being ready if
        the blocker has not completed."""

    @abstractmethod
    def unlink(self, run_id: str, from_id: str, to_id: str, type: str = "blocks", by: str | None = None,
               now: int | None = None) -> None:
        """Remove one start edge mid-run (``NotFound`` if the run has no such edge); the blocked task
        may become ready."""

    @abstractmethod
    def get_task(self, run_id: str, task_id: str) -> Task:
        """The task with its current state, or ``NotFound``."""

    @abstractmethod
    def list_tasks(
        self,
        run_id: str,
        status: str | Iterable[str] | None = None,
        owner: str | None = None,
        parent: str | None = None,
    ) -> list[Task]:
        """Tasks filtered by status (one or several), owner and parent, in template order."""

    def count_tasks(self, run_id: str, status: str | Iterable[str] | None = None) -> int:
        """How many tasks ``list_tasks(run_id, status)`` would return (a backend counts them
        without building them: the run loop asks every turn)."""
        return len(self.list_tasks(run_id, status=status))

    @abstractmethod
    def dependencies(self, run_id: str) -> list:
        """The run's dependency edges (``Dependency``) in import order."""

    @abstractmethod
    def ready_tasks(self, run_id: str, agent_tags: Iterable[str] | None = None, order: ClaimOrder = "priority") -> list[Task]:
        """Pending work tasks whose effective blockers all completed, that ``agent_tags`` fit,
        best first by ``order`` (see ``claim_next``). Read only."""

    def best_ready(self, run_id: str, agent_tags: Iterable[str] | None = None, order: ClaimOrder = "priority") -> str | None:
        """The id of ``ready_tasks``' first task (what ``claim_next`` would take now), or None:
        the look before a claim. A backend answers it without reading every ready task."""
        ready = self.ready_tasks(run_id, agent_tags=agent_tags, order=order)
        return ready[0].id if ready else None

    @abstractmethod
    def claim_next(
        self,
        run_id: str,
        agent: str,
        agent_tags: Iterable[str] | None = None,
        order: ClaimOrder = "priority",
        within: str | None = None,
        now: int | None = None,
        seen: str | None = None,
        key: str | None = None,
    ) -> Task | None:
        """Pull: atomically take the best ready task this agent may take, or None.

        Best = agents' wanted-tag match first, then by ``order``: ``priority`` (higher first),
        ``critical-path`` (longest remaining estimate-weighted path first), ``fifo`` (template
        order); ties by template order. ``within``: only descendants of that container (hybrid).
        The task becomes ``assigned`` to ``agent`` with ``assigned_by = agent``, ``attempt + 1``,
        ``claimed_at``. Exactly one process wins a task; a claim row is written either way.

        ``seen``: the task the caller saw as best when it looked (``ready_tasks``' first, with the
        same tags, order and ``within``). A race lost for it is counted, not hidden: when the claim
        takes another task, or none, and ``seen`` is no longer ready (another agent took it, or it
        was cancelled or blocked between the look and the claim), the same atomic step writes a
        ``claim`` row ``None -> lost`` for ``seen`` (``agent`` = the caller, ``data.status`` =
        ``seen``'s status now, ``data.took`` = the id taken or None) before the won rows, or instead
        of the ``empty`` row when nothing was taken. ``seen`` still ready is no lost race (a better
        task turned ready meanwhile): no lost row. ``seen=None``: no such row, as without a look.
        ``NotFound`` for an unknown ``seen``. The rule is ``statemachine.claim_outcome``'s.

        ``key``: an idempotency key (unique per run), for a retry after a lost response. If a won
        ``claim`` row with this key is in the run, the call returns that task as it is now when
        ``agent`` still owns it and it is not terminal (else None), and writes nothing; otherwise it
        claims as usual and the won ``claim`` row carries ``key`` (``statemachine.replayed``).
        """

    @abstractmethod
    def claim(self, run_id: str, task_id: str, agent: str, now: int | None = None,
              key: str | None = None) -> Task | None:
        """Pull one named task: like ``claim_next`` for that task only; None (and a ``lost``
        claim row) if it is no longer ready. ``NotFound`` for an unknown task. ``key``: as in
        ``claim_next`` (a replay returns the task the keyed claim took)."""

    @abstractmethod
    def assign(self, run_id: str, task_id: str, agent: str, by: str, now: int | None = None) -> Task:
        """Push: give a ready (or already assigned, not yet started) task to ``agent``.

        ``assigned_by = by``, ``attempt + 1``. Reassigning an ``assigned`` task records the
        previous owner in the transition's ``data.previous``. ``InvalidTransition`` otherwise.
        A pending container (a task with children) may be assigned too, whether or not its
        blockers completed: it means "owner of this subtree" (hybrid policy). It stays
        ``assigned``, its children remain claimable (``claim_next(within=...)``), and it completes
        or fails by the usual cascade when its children are terminal.
        """

    @abstractmethod
    def start(self, run_id: str, task_id: str, agent: str, attempt: int, now: int | None = None) -> Task:
        """``assigned -> working`` by its owner for the current attempt (``StaleAttempt`` otherwise)."""

    @abstractmethod
    def complete(
        self, run_id: str, task_id: str, agent: str, attempt: int, data: dict | None = None, now: int | None = None
    ) -> Task:
        """``working -> completed`` (also from ``assigned``) by the owner of the current attempt.

        Sets ``completed_by``/``completed_at``; in the same step unblocks dependents and
        completes every container whose children are now all completed (a container whose
        children are all terminal but not all completed fails, with the reason). ``data`` is
        stored on the transition (e.g. commit sha).
        """

    @abstractmethod
    def fail(self, run_id: str, task_id: str, agent: str | None, attempt: int | None, reason: str, now: int | None = None) -> Task:
        """``assigned|working -> failed`` with ``reason``; ``agent``/``attempt`` None = by the
        orchestrator (no ownership check). In the same step, per the run's
        ``on_blocker_failure``: ``cancel`` cancels every transitive dependent (reason names the
        failed blocker); ``wait`` leaves them pending until the task is requeued and completes.
        A pending task may be failed too (by the orchestrator only)."""

    @abstractmethod
    def requeue(self, run_id: str, task_id: str, reason: str, by: str | None = None, now: int | None = None) -> Task:
        """``assigned|working|failed -> pending``: owner cleared (kept in the row's ``data.previous``),
        attempt kept (the next claim increments it, so a late write from the old attempt is
        refused). Dependents cancelled because of this task stay cancelled."""

    @abstractmethod
    def cancel(self, run_id: str, task_id: str, reason: str, by: str | None = None, now: int | None = None) -> Task:
        """Any non-terminal status -> ``cancelled``; cascades like ``fail`` with policy ``cancel``."""

    @abstractmethod
    def add_usage(
        self,
        run_id: str,
        task_id: str,
        tokens_in: int = 0,
        tokens_out: int = 0,
        tokens_cached: int = 0,
        tokens_thinking: int = 0,
        cost_usd: float = 0.0,
        *,
        tokens_image: int = 0,
        tokens_audio: int = 0,
        metric_6: int = 0,
        metric_7: int = 0,
    ) -> None:
        """Add token counts (the 8 metric slots, ``models.METRIC_FIELDS``) and cost to the task
        (no transition: usage is not a state change)."""

    # ------------------------------------------------------------------ agents
    @abstractmethod
    def register_agent(self, run_id: str, agent: Agent, lease_ms: int | None = None, now: int | None = None) -> Agent:
        """Create or re-register (respawn) an agent; status ``registered``; lease = now + lease_ms.

        Writes ``agent`` ``<old or None> -> registered`` with pid/kind in ``data``.
        """

    @abstractmethod
    def get_agent(self, run_id: str, agent_id: str) -> Agent:
        """The agent, or ``NotFound``."""

    @abstractmethod
    def list_agents(self, run_id: str) -> list[Agent]:
        """All agents of the run, by id."""

    @abstractmethod
    def heartbeat(self, run_id: str, agent_id: str, lease_ms: int, current_task: str | None = None, now: int | None = None) -> Agent:
        """Extend the lease to now + lease_ms; no transition (heartbeats are not state changes)."""

    @abstractmethod
    def set_agent_status(
        self, run_id: str, agent_id: str, status: str, reason: str | None = None, data: dict | None = None, now: int | None = None
    ) -> Agent:
        """Change the agent's status, writing ``agent`` ``<old> -> <status>`` with the evidence in
        ``data``. Setting the current status again writes nothing. ``InvalidTransition`` for a
        status not in ``models.AGENT_STATUSES``."""

    @abstractmethod
    def reap_expired(self, run_id: str, now: int | None = None) -> list[str]:
        """Agents whose lease ran out (not stopped/dead/killed) become ``dead`` (reason ``lease
        expired``); their assigned/working tasks are requeued in the same step (reason ``lease
        expired: agent <id>``). Leases are compared with ``now`` as given. Returns the requeued
        task ids."""

    # ------------------------------------------------------------------ events
    @abstractmethod
    def append_events(self, run_id: str, events: list[Event]) -> int:
        """Append events; an (agent, seq) already stored is skipped (re-ingesting is harmless).
        Returns how many were new. Atomic per call."""

    @abstractmethod
    def read_events(self, run_id: str, agent: str | None = None, since_seq: int = -1, limit: int | None = None) -> list[Event]:
        """Events with seq > since_seq, for one agent (by seq) or all (by ts, agent, seq)."""

    @abstractmethod
    def last_event_seq(self, run_id: str, agent: str) -> int:
        """The highest stored seq of the agent's events, -1 if none."""

    # ------------------------------------------------------------------ history
    @abstractmethod
    def record(self, transition: Transition) -> Transition | None:
        """Append a row the store did not make itself: merges (``to_state`` one of
        ``models.MERGE_STATES``; ``from_state`` is the merge's previous state, None for its first
        row, whatever the caller says) and unchained rows (from None). Task, agent and run rows are refused
        (``InvalidTransition``): their verbs write them, and ``note`` records actions on them.
        ``ts_ms`` is raised like every operation's ``now``. A transition with a ``key`` already
        recorded for its run is not written again (returns None). Returns the row as written."""

    @abstractmethod
    def note(
        self,
        run_id: str,
        entity: str,
        entity_id: str,
        action: str,
        reason: str | None = None,
        agent: str | None = None,
        data: dict | None = None,
        key: str | None = None,
        now: int | None = None,
    ) -> Transition | None:
        """Record ``action`` on a task, agent or the run (``entity_id`` = the run id) without
        changing its state: one row ``<status> -> <status>`` with ``data.action = action``.
        ``NotFound`` for a missing entity; a ``key`` already recorded returns None."""

    @abstractmethod
    def history(
        self,
        run_id: str,
        since_seq: int = 0,
        entity: str | None = None,
        entity_id: str | None = None,
        agent: str | None = None,
    ) -> list[Transition]:
        """Transitions with seq > since_seq, by seq, filtered."""

    # ------------------------------------------------------------------ snapshot
    @abstractmethod
    def dump_run(self, run_id: str) -> RunDump:
        """Everything about the run, in deterministic order (tasks in template order, events by
        agent and seq, history by seq)."""

    @abstractmethod
    def load_run(self, dump: RunDump) -> None:
        """Recreate a dumped run as it was (same ids, states, seqs), all or nothing.
        ``InvalidTransition`` if the run id exists."""
