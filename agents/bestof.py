"""Best-of-N rounds in git and in the store: one attempt, and the holder's close of its round.

How a round is represented and joined is ``agents.policies.bestof``. Here:

* every attempt (the holder's and each entrant's) starts from the round's base, the merged ref
  as the holder found it (every completed blocker's work is in it), runs the agent's kind with a
  seed of its own slot (simulated agents differ per slot, reproducibly), commits, runs the task's
  ``verify``, keeps its commit on ``orch/<run>/bestof/<task>/<agent>`` (``gitwork.attempts``), a
  failed verify's commit too, and reports a ``bestof-attempt`` note;
* the holder, once its own attempt is done, waits until every entrant's attempt is over (its note
  is in, or its agent died or was restarted since it joined) and N joined -- fewer when fewer live
  agents are left, or ``wait_ms`` after its own attempt -- entering other rounds meanwhile. Then
  the winner: verify passed, then the smallest change (lines, then files), then the earliest
  finish. The winner's commit alone is merged and the task completed with it (``data.bestof``
  names the winner); with no winner the task fails, naming each attempt's reason. Then the
  ``bestof-round`` note, which the metrics read.

Each attempt's tokens go onto the task like any attempt's, so the run's totals include what the
redundancy cost; the notes split it per attempt.
"""

from __future__ import annotations

import hashlib
import traceback

from coordstore.errors import MOVED_ON, GitError, OrchError
from coordstore.models import ACTIVE, SETTLED, USAGE_KEYS

from agents.policies.bestof import ATTEMPT, OPEN, ROUND, BestOf, Entry, read_round, round_key


def slot_seed(seed: int, slot: int) -> int:
    """The seed of a round's slot: the run's own for slot 1, a derived one for the others."""
    if slot <= 1:
        return seed
    digest = hashlib.blake2b(f"{seed}\x1fbestof\x1f{slot}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big")


def choose(attempts: list[dict]) -> dict | None:
    """The winner among attempt notes: verify passed, smallest change (lines, then files),
    earliest finish, lowest slot. None when none passed."""
    passed = [a for a in attempts if a.get("ok")]
    if not passed:
        return None
    return min(passed, key=lambda a: (a.get("lines", 0), a.get("files", 0), a.get("finished_ms", 0), a.get("slot", 0)))


class Rounds:
    """The best-of side of one agent's runner (``runner``: its store, config, events, pulse,
    kind, ``work`` (TaskWork) and ``add_usage``)."""

    def __init__(self, runner, policy: BestOf):
        self.r = runner
        self.policy = policy
        c = runner.cfg
        self.store, self.run_id, self.me = runner.store, c.run_id, c.agent_id

    # ------------------------------------------------------------------ the holder
    def hold(self, task) -> None:
        """Run a round of the task this agent claimed: open it, attempt, wait, close."""
        from gitwork.runner import git_out  # lazy: the runner's start-up; git only for working agents

        r, tid = self.r, task.id
        r.pulse.current_task = tid
        try:
            try:
                task = self.store.start(self.run_id, tid, self.me, task.attempt)
            except MOVED_ON as e:
                r.events.log(f"task {tid} was taken away before it started ({e})", level="warning", task=tid)
                return
            base = git_out(r.worktree, "rev-parse", f"{r.cfg.merged_ref}^{{commit}}")
            self.store.note(self.run_id, "task", tid, OPEN, agent=self.me, reason=f"best-of {self.policy.n}: round opened",
                            data={"attempt": task.attempt, "base": base, "n": self.policy.n, "slot": 1},
                            key=round_key(tid, task.attempt, "open"))
            r.events.log(f"task {tid}: best-of-{self.policy.n} round opened on {base[:12]}", task=tid)
            self.attempt(task, base, 1)
            done_ms = self.store.clock()
            while True:
                rnd = self.round(task)
                if not self.still_held(task):
                    r.events.log(f"task {tid} was taken away during its round (attempt {task.attempt})", level="warning", task=tid)
                    return
                if self.closable(rnd, done_ms, task):
                    self.close(task, rnd)
                    return
                entry = self.policy.enter(besides=tid)
                if entry is not None:
                    self.enter(entry)
                    r.pulse.current_task = tid
                else:  # until the run changes (an attempt reported, an agent joined) or a look is due
                    r.idle()
        finally:
            r.pulse.current_task = None

    def round(self, task):
        return read_round(self.store.history(self.run_id, entity="task", entity_id=task.id), task.id, task.attempt)

    def still_held(self, task) -> bool:
        t = self.store.get_task(self.run_id, task.id)
        return t.owner == self.me and t.attempt == task.attempt and t.status == "working"

    def closable(self, rnd, done_ms: int, task) -> bool:
        """Every entrant's attempt is over, and the round is full (or can fill no more: fewer
        live agents whose tags fit the task than N), or ``wait_ms`` passed since the holder's own
        attempt."""
        agents = {a.id: a for a in self.store.list_agents(self.run_id)}
        waited = self.policy.wait_ms is not None and self.store.clock() - done_ms >= self.policy.wait_ms
        if waited:
            return True
        for who, joined in rnd.joined_ms.items():
            if who in rnd.attempts:
                continue
            a = agents.get(who)
            gone = a is None or a.status in SETTLED or (a.registered_at or 0) > joined
            if not gone:
                return False
        return len(rnd.entrants) >= rnd.n or self.policy.live_workers(task) < rnd.n

    def close(self, task, rnd) -> None:
        """Pick the winner, merge its commit alone, complete (or fail) the task, note the round."""
        r, tid, att = self.r, task.id, task.attempt
        attempts = [rnd.attempts[a] for a in sorted(rnd.attempts, key=lambda a: rnd.attempts[a].get("slot", 0))]
        win = choose(attempts)
        summary = {"n": rnd.n, "winner": win["agent"] if win else None, "commit": win.get("commit") if win else None,
                   "branch": win.get("branch") if win else None, "base": rnd.base,
                   "entrants": sorted(rnd.entrants, key=rnd.entrants.get),
                   "attempts": [{k: a.get(k) for k in ("agent", "kind", "slot", "ok", "reason", "commit", "branch", "lines",
                                                        "files", "ms", "tokens", "cost_usd")} for a in attempts]}
        if win is None:
            why = "; ".join(f"{a['agent']}: {a.get('reason') or 'failed'}" for a in attempts) or "no attempt reported"
            reason = f"best-of {rnd.n}: no attempt passed ({why})"
            if not r.report(lambda: self.store.fail(self.run_id, tid, self.me, att, reason=reason), tid, "failed"):
                return
            r.events.log(f"task {tid} failed: {reason}", level="warning", task=tid)
        else:
            commit = win.get("commit") or rnd.base
            data = {"commit": commit, "bestof": {k: summary[k] for k in ("n", "winner", "branch", "entrants")}}
            if r.cfg.merge_mode == "immediate":
                data["merge"] = r.work.merge(task, commit, author=f"{win['agent']}, best of {rnd.n}")
            if not r.report(lambda: self.store.complete(self.run_id, tid, self.me, att, data=data), tid, "completed"):
                return
            r.events.log(f"task {tid} completed: best-of-{rnd.n} won by {win['agent']}", task=tid)
        self.store.note(self.run_id, "task", tid, ROUND, agent=self.me,
                        reason=f"best-of {rnd.n}: " + (f"won by {win['agent']}" if win else "no winner"),
                        data={"attempt": att, **summary}, key=round_key(tid, att, "round"))

    # ------------------------------------------------------------------ an entrant
    def enter(self, entry: Entry) -> None:
        """Work another agent's task in the slot this agent took, unless the round closed meanwhile."""
        r, tid = self.r, entry.task.id
        rnd = self.round(entry.task)
        now = self.store.get_task(self.run_id, tid)
        if rnd.closed is not None or now.attempt != entry.attempt or now.status not in ACTIVE:
            r.events.log(f"task {tid}: best-of round closed before slot {entry.slot} started; left it", task=tid)
            return
        r.pulse.current_task = tid
        try:
            r.events.log(f"task {tid}: best-of slot {entry.slot} (held by {now.owner})", task=tid)
            self.attempt(entry.task, entry.base, entry.slot)
        finally:
            r.pulse.current_task = None

    # ------------------------------------------------------------------ one attempt
    def attempt(self, task, base: str, slot: int) -> dict:
        """Work ``task`` from ``base`` in this agent's worktree, keep its commit, note the outcome."""
        # lazy: the runner's start-up; kinds and git only for working agents
        from gitwork import agentgit as gitops
        from gitwork.attempts import attempt_ref, change_size, keep, keep_unsaved_head
        from agents.kinds import KindContext, Result

        r, c, tid, att = self.r, self.r.cfg, task.id, task.attempt
        left = keep_unsaved_head(r.worktree, c.merged_ref, self.me)
        if left:
            r.events.log(f"kept an earlier commit nobody held as {left} before moving to the round's base", level="warning")
        gitops.discard(r.worktree, base)
        started = self.store.clock()
        ctx = KindContext(c.run_id, self.me, r.worktree, slot_seed(c.seed, slot), c.time_scale, att, r.events, r.pulse, r.identity)
        try:
            result = r.kind.run(task, ctx)
        except OrchError as e:
            result = Result(ok=False, reason=str(e))
        except Exception as e:  # a kind's bug fails its attempt, not the agent
            r.stop_if_terminated(e)
            traceback.print_exc()
            result = Result(ok=False, reason=f"kind {c.kind} raised {type(e).__name__}: {e}")
        tokens = dict(result.tokens or {})
        r.add_usage(tid, tokens)
        if result.ok:
            result = r.work.commit_and_verify(task, base, result)
        head = gitops.head(r.worktree)
        commit = head if head != base else None
        gitops.discard(r.worktree, head)  # what the kind left uncommitted is not part of the attempt
        out = {"attempt": att, "slot": slot, "agent": self.me, "kind": c.kind, "ok": bool(result.ok),
               "reason": None if result.ok else (result.reason or "failed"), "commit": commit, "branch": None,
               "lines": 0, "files": 0, "started_ms": started, "finished_ms": self.store.clock(),
               "tokens": {k: int(tokens.get(k, 0) or 0) for k in USAGE_KEYS if tokens.get(k)},
               "cost_usd": float(tokens.get("cost_usd", 0.0) or 0.0)}
        out["ms"] = out["finished_ms"] - started
        if commit is not None:
            ref = attempt_ref(c.merged_ref, tid, self.me, att)
            try:
                keep(r.worktree, ref, commit)
                out["branch"] = ref.removeprefix("refs/heads/")
                out["lines"], out["files"] = change_size(r.worktree, base, commit)
            except GitError as e:  # not kept: it may not win (it would be merged from nowhere)
                out.update(ok=False, reason=f"could not keep the attempt's commit: {e}")
                r.events.error(out["reason"], task=tid)
        self.store.note(self.run_id, "task", tid, ATTEMPT, agent=self.me,
                        reason=f"best-of slot {slot}: " + ("passed" if out["ok"] else out["reason"]),
                        data=out, key=round_key(tid, att, f"{self.me}:done"))
        r.events.log(f"task {tid}: best-of attempt (slot {slot}) " + ("passed" if out["ok"] else f"failed: {out['reason']}"),
                     level="info" if out["ok"] else "warning", task=tid)
        return out
