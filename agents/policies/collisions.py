"""``policy_options.avoid_conflicts``: hold back a ready task whose files a task in progress holds.

A task *holds* its ``file_scope`` while it is assigned or working. A ready task whose scope meets
a held one (``coordstore.scopes``) is held back: it stays pending, and the agent (or the push
coordinator) takes the next ready task that collides with nothing, or waits (``WAIT``) when every
one collides. A held-back task also reserves its own files against the tasks ranked below it,
so a stream of lower-ranked tasks on the same files cannot overtake it for ever: it becomes
claimable as soon as the tasks it collides with end (completed, failed, or taken back), and
only a better-ranked task on the same files goes first. Waiting only ever waits for tasks in
progress, which need nothing from a pending task: the run cannot deadlock on it.

Only store reads decide (the ready list, then the held tasks); a pulling agent claims the chosen
task by name, so losing it to another agent is a ``lost`` claim row and the agent looks again.
Two agents may still choose colliding tasks at the same instant (each read the other's as not
yet held): after a won claim the agent checks again, and the later claim of the two (by
``claimed_at``, then id) is *parked* -- kept assigned, not started -- until the earlier one ends.
Each hold-back is one run note ``held-back`` (the task, the tasks it collides with, the shared
entries), written once per task attempt and set of colliders.
"""

from __future__ import annotations

from coordstore.models import ACTIVE, Task
from coordstore.scopes import colliding

from agents.policies.base import WAIT, PolicyEnv

HOLD_ACTION = "held-back"
CLAIM_TRIES = 3  # named claims lost in a row before the agent waits for the next change


class Screen:
    """One look's decisions over ready tasks, best first: which collide with the held ones (or
    with a better-ranked task held back in this look)."""

    def __init__(self, held: dict[str, Task]):
        self.scopes = {tid: list(t.file_scope) for tid, t in held.items()}
        self.held_back: list[tuple[Task, dict[str, list[str]]]] = []

    def admits(self, task: Task) -> bool:
        if task.id in self.scopes:  # taken between the two reads
            return False
        hit = colliding(task.file_scope, self.scopes)
        if hit:
            self.held_back.append((task, hit))
            self.scopes[task.id] = list(task.file_scope)  # reserved: nothing ranked below overtakes it
            return False
        return True

    def take(self, task: Task) -> None:
        """``task`` was given out in this look: it holds its files from now on."""
        self.scopes[task.id] = list(task.file_scope)


class Collisions:
    """What one agent (or coordinator) needs for ``avoid_conflicts``: the held tasks, the notes,
    and a pulling agent's parked task."""

    def __init__(self, env: PolicyEnv):
        self.env = env
        self.noted: set[str] = set()
        self.parked: Task | None = None

    def held(self, tasks: dict[str, Task] | None = None, exclude: str | None = None) -> dict[str, Task]:
        """Work tasks in progress with a file scope (``tasks``: the run's tasks if just read)."""
        e = self.env
        active = [t for t in tasks.values() if t.status in ACTIVE] if tasks is not None else e.store.list_tasks(e.run_id, status=ACTIVE)
        ix = e.index(*(t.id for t in active))
        return {t.id: t for t in active if t.id != exclude and t.file_scope and not ix.is_container(t.id)}

    def note(self, screen: Screen) -> None:
        """A ``held-back`` run note per task held back in this look, once per attempt and colliders."""
        e = self.env
        for task, hit in screen.held_back:
            key = f"held:{task.id}:{task.attempt}:{'+'.join(sorted(hit))}"
            if key in self.noted:
                continue
            self.noted.add(key)
            entries = sorted({x for v in hit.values() for x in v})
            e.store.note(e.run_id, "run", e.run_id, HOLD_ACTION, agent=e.agent_id,
                         reason=f"{task.id} held back: {', '.join(sorted(hit))} in progress on {', '.join(entries)}",
                         data={"task": task.id, "attempt": task.attempt, "colliding": sorted(hit), "entries": entries}, key=key)

    def claim(self, order: str, within: str | None = None) -> Task | None:
        """Claim the best ready task (of ``within``'s subtree) that collides with no held task."""
        e = self.env
        for _ in range(CLAIM_TRIES):
            ready = e.store.ready_tasks(e.run_id, agent_tags=e.tags, order=order)
            if within is not None:
                inside = set(e.index().descendants(within))
                ready = [t for t in ready if t.id in inside]
            if not ready:
                return None
            screen = Screen(self.held())
            pick = next((t for t in ready if screen.admits(t)), None)
            self.note(screen)
            if pick is None:
                return None
            task = e.store.claim(e.run_id, pick.id, e.agent_id)
            if task is not None:
                return task
        return None

    def earlier_colliders(self, task: Task) -> list[str]:
        """Held tasks claimed before ``task`` whose files meet its own."""
        held = self.held(exclude=task.id)
        mine = (task.claimed_at or 0, task.id)
        return sorted(tid for tid in colliding(task.file_scope, {k: t.file_scope for k, t in held.items()})
                      if (held[tid].claimed_at or 0, tid) < mine)

    def park_if_raced(self, task: Task) -> bool:
        """After a won claim: park ``task`` if a colliding task was claimed first (a race of two
        looks); True when parked."""
        first = self.earlier_colliders(task)
        if first:
            self.parked = task
            self.env.events.log(f"task {task.id} waits: {', '.join(first)} on the same files was claimed first", task=task.id)
        return bool(first)

    def release(self) -> Task | str | None:
        """The parked task once nothing claimed before it collides (``WAIT`` until then); None
        when there is none, or it is no longer this agent's (taken back meanwhile)."""
        parked = self.parked
        if parked is None:
            return None
        e = self.env
        now = e.store.get_task(e.run_id, parked.id)
        if now.owner != e.agent_id or now.status != "assigned" or now.attempt != parked.attempt:
            self.parked = None
            return None
        if self.earlier_colliders(now):
            return WAIT
        self.parked = None
        return now
