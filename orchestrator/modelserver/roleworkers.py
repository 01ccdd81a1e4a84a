"""The working roles for real CLIs: ``worker`` and ``decomposer`` (a worker that splits coarse tasks).

Each turn follows from the conversation (``conversation``), as the sim's workers decide
(``agents.kinds.simworkers``, ``simsplit``):

* look, by ``policy``: push ``list_tasks(owner=me, status=assigned)``, pull ``list_tasks(ready=true)``,
  hybrid ``list_tasks()`` (pull inside its subtrees, steal once the lead has handed them all out);
  a filtered look that finds nothing is followed by ``list_tasks()``: every task terminal ends the
  session with "The run is over.", else the agent waits (shell ``sleep``) and looks again;
* ``claim`` what the look found (a refused claim -- a lost race -- means looking again), then
  ``get`` it (its file scope, estimate, meta, attempt);
* the work: the server's task script (sim, replay, a file) for that task, its turn ``i`` being the
  ``i``-th assistant turn after the ``get``'s result; when its plan is done,
  ``update(status=completed)`` (the server commits, verifies and merges), or ``status=failed``
  when the work's last shell command failed;
* a decomposer (or a worker with ``decompose``) gives a coarse claimed task back
  (``update(status=pending, reason)``) and creates its parts under it (``create_tree``; ``link``
  when sequential), then looks again; a task is split once, parts never.
"""

from __future__ import annotations

from dataclasses import replace

from coordstore.errors import OrchError

from agents.clis.serverurl import SessionContext, task_context
from agents.kinds.simroles import Split, best_first
from agents.kinds.simsplit import coarse
from agents.kinds.simworkers import hybrid_choice, ready_for

from orchestrator.modelserver.confine import PathRefused
from orchestrator.modelserver.conversation import DECOMPOSING, Conversation, RoleScript, Step, link_turn, tree_turn
from orchestrator.modelserver.history import shell_command, shell_failed
from orchestrator.modelserver.turns import Fault, ToolCall, Turn

ENDS = ("completed", "failed", "pending", "cancelled")  # an update of these ends the agent's hold on its task


class WorkerScript(RoleScript):
    name = "worker"
    always_splits = False

    def split(self, c: Conversation) -> Split | None:
        return c.opts.split or (Split() if self.always_splits else None)

    def decide(self, c: Conversation) -> Turn:
        held = self.held(c)
        if held is not None:
            return self.on_task(c, *held)
        last = c.last
        split = self.split(c)
        if last.tool == "update" and last.args.get("reason") == DECOMPOSING and last.ok and split is not None:
            at = c.find("get", task=last.task)
            return tree_turn(c, last.task, c.steps[at].value if at is not None else {}, split)
        if last.tool in ("create_tree", "link"):
            more = link_turn(c, split, c.find("create_tree"))
            if more is not None:
                return more
        if last.tool == "list_tasks":
            return self.after_look(c, last)
        return self.look(c)

    # ---------------------------------------------------------------- looking
    def look(self, c: Conversation) -> Turn:
        policy = c.opts.policy
        if policy == "push":
            return c.mcp("list_tasks", "Looking for the tasks assigned to me.", owner=c.me, status="assigned")
        if policy == "pull":
            return c.mcp("list_tasks", "Looking for a ready task.", ready=True)
        return c.mcp("list_tasks", "Looking at the task graph.")

    def after_look(self, c: Conversation, look: Step) -> Turn:
        if c.over(look):
            return c.over_turn(look)
        tid = self.pick(c, look)
        if tid is not None:
            return self.claim(c, tid)
        if not look.unfiltered:
            return c.mcp("list_tasks", "Nothing for me; checking whether every task is done.")
        return c.wait(self.look(c))

    def pick(self, c: Conversation, look: Step) -> str | None:
        """The task to claim from a look, by the policy (None: nothing for this agent now). A task
        whose claim was refused since the last wait is not tried again before the next one."""
        since = max(c.progress_at(), max((i for i, s in enumerate(c.steps) if s.is_sleep), default=-1))
        refused = {s.task for s in c.steps[since + 1:] if s.tool == "claim" and not s.ok}
        tasks = [t for t in look.listed() if t["id"] not in refused]
        tags = c.opts.tags or None
        kept = [t for t in tasks if t.get("owner") == c.me and t.get("status") == "working" and not t.get("container")]
        if kept:  # still mine from before a respawn: claim says so and it goes on
            return kept[0]["id"]
        if c.opts.policy == "push":
            mine = [t for t in tasks if t.get("owner") == c.me and t.get("status") == "assigned" and not t.get("container")]
            return mine[0]["id"] if mine else None
        if c.opts.policy == "pull":
            own, ready = None, ready_for(tasks, tags)
        else:
            own, ready = hybrid_choice(tasks, c.me, tags)
        if own is not None:
            return own["id"]
        best = best_first(ready, tags)[: c.opts.choose_among]
        return c.rng("pick", str(look.turn)).choice(best)["id"] if best else None

    def claim(self, c: Conversation, tid: str) -> Turn:
        turn = c.mcp("claim", f"Claiming task {tid}.", task=tid)
        if c.opts.loop_on_claim != 0:  # a looping agent: this turn is served again and again
            turn.fault = Fault("loop", times=c.opts.loop_on_claim, scope=f"agent:{c.me}:loop_on_claim", any_turn=True)
        return turn

    # ---------------------------------------------------------------- a claimed task
    @staticmethod
    def held(c: Conversation) -> tuple[str, int] | None:
        """(task, index of its claim) the agent holds now: claimed, not yet completed, failed or
        given back (a refused give-back keeps it)."""
        held = None
        for i, s in enumerate(c.steps):
            if s.tool == "claim" and s.ok and s.task:
                held = (s.task, i)
            elif held and s.tool == "update" and s.task == held[0] and s.args.get("status") in ENDS:
                if s.args["status"] == "pending" and not s.ok:
                    continue
                held = None
        return held

    def on_task(self, c: Conversation, tid: str, at: int) -> Turn:
        got = next((j for j in range(at + 1, len(c.steps)) if c.steps[j].tool == "get" and c.steps[j].task == tid), None)
        if got is None:
            return c.mcp("get", f"Reading task {tid}.", task=tid)
        record = c.steps[got].value if c.steps[got].ok else (c.steps[at].value.get("task") or {})
        record = {**record, "id": tid}
        split = self.split(c)
        tried = any(s.tool == "update" and s.task == tid and s.args.get("reason") == DECOMPOSING for s in c.steps)
        if split is not None and not tried and coarse(split, record.get("points"), record.get("tags")):
            return c.mcp("update", f"Task {tid} is too coarse to work whole: giving it back to split it.",
                         task=tid, status="pending", reason=DECOMPOSING)
        anchor = max([got] + [j for j in range(at + 1, len(c.steps)) if c.steps[j].tool == "update" and c.steps[j].task == tid])
        return self.work_turn(c, tid, record, anchor)

    def work_turn(self, c: Conversation, tid: str, record: dict, anchor: int) -> Turn:
        """The task script's turn for the task, or its closing ``update`` when its plan is done."""
        uses = [s.use for s in c.steps[anchor + 1:]]
        index = c.view.turn - (c.steps[anchor].turn + 1)
        ctx = SessionContext(session=f"{c.ctx.session}.{tid}", task=task_context(record), seed=c.ctx.seed,
                             attempt=max(1, int(record.get("attempt") or 1)), time_scale=c.ctx.time_scale,
                             worktree=c.ctx.worktree)
        shells = [u for u in uses if shell_command(u) is not None]
        view = replace(c.view, ctx=ctx, turn=index, calls=uses,
                       last_result=uses[-1].result if uses else None, last_error=bool(shells) and shell_failed(shells[-1]))
        try:
            work = self.work.turn(index, view)
        except PathRefused:
            raise
        except OrchError as e:  # the task cannot be worked here (no commit to replay, ...): it fails
            return c.mcp("update", f"Cannot work on task {tid}: {e}", task=tid, status="failed", reason=str(e)[:500])
        if not work.final:
            return work
        if shells and shell_failed(shells[-1]):
            out = (shells[-1].result or "").strip()[-300:]
            call = ToolCall("mcp:update", {"task": tid, "status": "failed", "reason": f"the last command failed: {out}"})
        else:
            call = ToolCall("mcp:update", {"task": tid, "status": "completed"})
        return Turn(text=work.text, tool_calls=[call], usage=work.usage, fault=work.fault, delay_s=work.delay_s)


class DecomposerScript(WorkerScript):
    """A worker that splits every coarse task it claims (``decompose`` options, else the sim's defaults)."""

    name = "decomposer"
    always_splits = True
