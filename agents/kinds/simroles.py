"""The sim kind in agent-driven variants (``coordination: agents``): a seeded MCP client that plays
its role through orch's coordination tools -- it decides, the tools record.

Roles (``role_player``): under ``push`` the coordinator assigns and workers run what they are
given; under ``pull`` swarm workers browse and claim; under ``hybrid`` the lead hands out
subtrees and workers pull inside theirs, then steal (``simdispatch``, ``simworkers``). Any
worker, and the lead, may decompose coarse tasks (``simsplit``). The work on a claimed task is
the sim kind's own ``run(task, ctx)`` in the agent's worktree; ``update(status=completed)`` then
has the server commit, verify and merge it, exactly as the runner would.

One coordination turn is one model response, i.e. one tool call. Each costs (options, in
``kind_options`` beside the sim kind's own):

==============  ===========================  ================================================
option          default                      meaning
==============  ===========================  ================================================
turn_s          8.0                          mean model seconds per turn, times the run's
                                             ``time_scale`` like task work, jittered +-50%
turn_tokens     {in: 1200, out: 120}         tokens per turn (priced at the sim's ``model``)
poll_s          5.0                          agent seconds before looking again after a look
                                             that found nothing to do ...
poll_max_s      60.0                         ... doubling per empty look up to this
choose_among    2                            a pulling worker picks, seeded, among this many
                                             best ready tasks (so agents sometimes collide)
decompose       none                         {over_points: 5, parts: [2, 4], sequential:
                                             false}: split claimed tasks of more points
==============  ===========================  ================================================

Waits are never shorter than ``MIN_WAIT_S`` of wall time, whatever the time scale: polling
faster than that would measure the server, not the agents (so at tiny time scales an agent
polls less often than its agent-time rhythm says, never more).

Token accounting: every turn emits a ``tokens`` event (the agent's stream, what the run's token
metrics sum; ``task`` = the task the call was about, or none for looks). The tokens of turns
about a task, and a worker's tokens for the task's work, are also reported once per task with
``log_metrics(task, values=[in, out, cached, thinking], cost_usd)`` when the agent is done with
it (assigned it, completed or failed it, decomposed it): that is the task's ledger, as the
runner's ``add_usage`` is in orch-driven variants. ``log_metrics`` itself costs no turn.

Every tool call emits a ``step`` event named after the tool (``data.tool``), after a ``step`` named
``turn`` whose ``data.ms`` is the time the decision took (wall milliseconds: what the coordination
metrics add up as busy time). Reads (``list_tasks``, ``list_agents``, ``get``, ``attachments``) and
their turns are marked ``data.poll``: an agent waiting for work looks again and again with the same
arguments, which the supervisor must not take for a loop (``orchestrator.supervision.observe``).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coordstore.errors import AgentError
from coordstore.models import Task
from coordstore.numbers import is_number
from gitwork.agentgit import identity

from agents.kinds import KindContext, Result
from agents.kinds.sim import SimKind
from agents.kinds.simplan import PRICES
from agents.toolclient import ToolRefused

MIN_WAIT_S = 0.05  # the shortest wait between looks, wall clock
READS = frozenset({"list_tasks", "list_agents", "get", "attachments"})
ROLE_KEYS = ("turn_s", "turn_tokens", "poll_s", "poll_max_s", "choose_among", "decompose")
SPLIT_KEYS = ("over_points", "parts", "sequential")


@dataclass
class Split:
    """How a decomposer splits a coarse task."""

    over_points: float = 5.0  # tasks of more points than this are split
    parts: tuple[int, int] = (2, 4)  # into between this many subtasks (seeded)
    sequential: bool = False  # the parts follow one another (else parallel)


@dataclass
class RoleOptions:
    turn_s: float = 8.0
    turn_tokens: dict[str, int] = field(default_factory=lambda: {"in": 1200, "out": 120, "cached": 0, "thinking": 0})
    poll_s: float = 5.0
    poll_max_s: float = 60.0
    choose_among: int = 2
    decompose: Split | None = None

    @classmethod
    def build(cls, options: dict[str, Any]) -> "RoleOptions":
        """The role options of ``kind_options`` (AgentError naming a bad one)."""
        o = cls()
        for key in ("turn_s", "poll_s", "poll_max_s"):
            if key in options:
                setattr(o, key, _number(options[key], key))
        if "choose_among" in options:
            v = options["choose_among"]
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise AgentError(f"role option choose_among={v!r}: must be an integer >= 1")
            o.choose_among = v
        if "turn_tokens" in options:
            o.turn_tokens = _tokens(options["turn_tokens"])
        if options.get("decompose") is not None:
            o.decompose = _split(options["decompose"])
        if o.poll_max_s < o.poll_s:
            raise AgentError(f"role option poll_max_s={o.poll_max_s!r}: must be >= poll_s ({o.poll_s!r})")
        return o


def _number(v: Any, key: str) -> float:
    if not is_number(v) or v < 0:
        raise AgentError(f"role option {key}={v!r}: must be a number >= 0")
    return float(v)


def _tokens(v: Any) -> dict[str, int]:
    if not isinstance(v, dict) or set(v) - {"in", "out", "cached", "thinking"}:
        raise AgentError(f"role option turn_tokens={v!r}: must be a mapping of in/out/cached/thinking to counts")
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in v.values()):
        raise AgentError(f"role option turn_tokens={v!r}: counts must be integers >= 0")
    return {k: int(v.get(k, 0)) for k in ("in", "out", "cached", "thinking")}


def _split(v: Any) -> Split:
    if v is True:
        return Split()
    if not isinstance(v, dict) or set(v) - set(SPLIT_KEYS):
        raise AgentError(f"role option decompose={v!r}: must be true or a mapping of {', '.join(SPLIT_KEYS)}")
    s = Split()
    if "over_points" in v:
        s.over_points = _number(v["over_points"], "decompose.over_points")
    if "parts" in v:
        p = v["parts"]
        if isinstance(p, int) and not isinstance(p, bool):
            p = [p, p]
        if not (isinstance(p, list) and len(p) == 2 and all(isinstance(n, int) and not isinstance(n, bool) for n in p)
                and 2 <= p[0] <= p[1]):
            raise AgentError(f"role option decompose.parts={v['parts']!r}: must be [low, high] with 2 <= low <= high")
        s.parts = (p[0], p[1])
    if "sequential" in v:
        if not isinstance(v["sequential"], bool):
            raise AgentError(f"role option decompose.sequential={v['sequential']!r}: must be true or false")
        s.sequential = v["sequential"]
    return s


def rng_for(seed: int, *parts: str) -> random.Random:
    """A random stream keyed on the run's seed and ``parts`` (an agent, a task, a purpose)."""
    key = "\x1f".join((str(seed), *parts)).encode()
    return random.Random(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big"))


# ---------------------------------------------------------------------------------- task dicts
def needed(t: dict) -> list[str]:
    tags = t.get("tags")
    return list(t.get("needed_tags") or (tags.get("needed") if isinstance(tags, dict) else None) or [])


def wanted(t: dict) -> list[str]:
    tags = t.get("tags")
    return list(t.get("wanted_tags") or (tags.get("wanted") if isinstance(tags, dict) else None) or [])


def fits(t: dict, agent_tags: list[str] | None) -> bool:
    """An agent takes a task when it has every needed tag; no tags at all takes anything."""
    return not agent_tags or set(needed(t)) <= set(agent_tags)


def wanted_score(t: dict, agent_tags: list[str] | None) -> int:
    w = wanted(t)
    return 1 if not w or not agent_tags else int(bool(set(w) & set(agent_tags)))


def best_first(tasks: list[dict], agent_tags: list[str] | None) -> list[dict]:
    """Wanted-tag match, then priority (higher first), then the order the tool listed them in."""
    order = {t["id"]: i for i, t in enumerate(tasks)}
    return sorted(tasks, key=lambda t: (-wanted_score(t, agent_tags), -(t.get("priority") or 0), order[t["id"]]))


def top_units(tasks: list[dict]) -> list[str]:
    """The subtrees a hybrid lead hands out: the top-level containers; a graph under a single root
    container is split one level lower (repeatedly), as ``agents.policies.base.hybrid_units``."""
    units = [t["id"] for t in tasks if not t.get("parent") and t.get("container")]
    by_id = {t["id"]: t for t in tasks}
    while len(units) == 1:
        inner = [t["id"] for t in tasks if t.get("parent") == units[0] and t.get("container")]
        if not inner:
            break
        units = inner
    return [u for u in units if u in by_id]


def descendants(tasks: list[dict], root: str) -> set[str]:
    kids: dict[str, list[str]] = {}
    for t in tasks:
        if t.get("parent"):
            kids.setdefault(t["parent"], []).append(t["id"])
    out, todo = set(), [root]
    while todo:
        for c in kids.get(todo.pop(), ()):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def task_from(data: dict, tid: str) -> Task:
    """A ``Task`` of a tool's task object (``get``, ``claim``): its known fields, tags read either way."""
    fields = {k: v for k, v in data.items() if k in Task.model_fields and v is not None}
    fields.setdefault("id", tid)
    for key in ("needed_tags", "wanted_tags"):
        fields[key] = needed(data) if key == "needed_tags" else wanted(data)
    if not isinstance(fields.get("tags"), list):
        fields.pop("tags", None)
    return Task.model_validate(fields)


# ---------------------------------------------------------------------------------- the seat
class Seat:
    """What a role plays with: the tools (each call a turn: latency, tokens, a ``step`` event),
    the agent's worktree and sim kind for the work, its random stream, its wait rhythm."""

    def __init__(self, cfg, client, events, pulse, options: dict[str, Any]):
        self.cfg = cfg
        self.client = client
        self.events = events
        self.pulse = pulse
        self.opts = RoleOptions.build(options)
        self.sim = SimKind({k: v for k, v in options.items() if k not in ROLE_KEYS})
        self.executor = self.sim  # what works a claimed task (a CLI kind's for ``agents.kinds.cliexec``)
        self.rng = rng_for(cfg.seed, cfg.agent_id, "role")
        self.owed: dict[str, list[float]] = {}  # task -> [in, out, cached, thinking, cost] not yet logged
        self.empty_looks = 0
        p_in, p_out, p_cached = PRICES[self.sim.options.model]
        self._price = (p_in, p_out, p_cached)

    @property
    def me(self) -> str:
        return self.cfg.agent_id

    @property
    def tags(self) -> list[str] | None:
        return self.cfg.tags or None

    # -- the tools ------------------------------------------------------------------------
    def call(self, name: str, about: str | None = None, /, **args: Any) -> Any:
        """One turn: think (seeded latency), pay its tokens, call tool ``name``. ``about``: the
        task the call concerns (its tokens are owed to it)."""
        poll = {"poll": True} if name in READS else {}
        self.turn(name, about, poll)
        self.events.step(name, args=args, task=about, tool=True, **poll)
        return self.client.call(name, **args)

    def turn(self, name: str, about: str | None, poll: dict[str, bool]) -> None:
        """Deciding on a call to ``name``: the seeded latency, said as a ``turn`` step (``data.ms``,
        the wall milliseconds it took: what the coordination metrics add up), and its tokens."""
        o = self.opts
        t0 = self.pulse.clock()
        self.pulse.sleep(o.turn_s * self.cfg.time_scale * self.rng.uniform(0.5, 1.5))
        self.events.step("turn", args={"tool": name, "task": about}, task=about, ms=self.pulse.clock() - t0, **poll)
        t = o.turn_tokens
        cost = self.cost(t["in"], t["out"], t["cached"], t["thinking"])
        self.events.tokens(task=about, tokens_in=t["in"], tokens_out=t["out"], cached=t["cached"],
                           thinking=t["thinking"], cost_usd=cost)
        if about is not None:
            self.owe(about, t["in"], t["out"], t["cached"], t["thinking"], cost)

    def cost(self, tin: int, tout: int, cached: int, thinking: int) -> float:
        p_in, p_out, p_cached = self._price
        return round(((tin - min(cached, tin)) * p_in + min(cached, tin) * p_cached + (tout + thinking) * p_out) / 1e6, 8)

    def owe(self, task: str, tin: float, tout: float, cached: float, thinking: float, cost: float) -> None:
        acc = self.owed.setdefault(task, [0, 0, 0, 0, 0.0])
        for i, v in enumerate((tin, tout, cached, thinking, cost)):
            acc[i] += v

    def settle(self, task: str) -> None:
        """Report what the agent spent on ``task`` (``log_metrics``, no turn of its own)."""
        acc = self.owed.pop(task, None)
        if not acc:
            return
        args = {"task": task, "values": [int(v) for v in acc[:4]], "cost_usd": round(acc[4], 8)}
        self.events.step("log_metrics", args=args, task=task, tool=True)
        try:
            self.client.call("log_metrics", **args)
        except ToolRefused as e:
            self.events.log(f"log_metrics on {task} refused: {e.text}", level="warning", task=task)

    def try_call(self, name: str, about: str | None = None, /, **args: Any) -> Any | ToolRefused:
        """``call``, with a refusal returned (and logged) instead of raised."""
        try:
            return self.call(name, about, **args)
        except ToolRefused as e:
            level = "info" if e.lost else "warning"
            self.events.log(f"{name} refused: {e.text}", level=level, task=about)
            return e

    # -- rhythm ----------------------------------------------------------------------------
    def wait_s(self) -> float:
        """How long to wait after a look that found nothing: doubling, jittered, bounded."""
        o = self.opts
        s = min(o.poll_max_s, o.poll_s * 2 ** min(self.empty_looks, 30)) * self.wait_scale
        self.empty_looks += 1
        return max(MIN_WAIT_S, s * self.rng.uniform(0.75, 1.25))

    @property
    def wait_scale(self) -> float:
        """What the rhythm's seconds are multiplied by: agent time, like the sim's work."""
        return self.cfg.time_scale

    # -- a task ----------------------------------------------------------------------------
    def record(self, answer: Any, tid: str) -> Task:
        """The task as the sim kind needs it (estimate, file scope), from the tool's answer; ``get``
        when the answer is not the whole task."""
        data = answer.get("task", answer) if isinstance(answer, dict) else {}
        if not isinstance(data, dict) or "file_scope" not in data:
            data = self.call("get", tid, task=tid)
            data = data.get("task", data) if isinstance(data, dict) else {}
        return task_from(data, tid)

    def claim(self, tid: str) -> Task | None:
        """Claim ``tid``: the task now ``working`` for this agent, or None (lost: look again)."""
        answer = self.try_call("claim", tid, task=tid)
        return None if isinstance(answer, ToolRefused) else self.record(answer, tid)

    def work(self, task: Task) -> bool:
        """The executor's (the sim kind's) run of ``task`` in the worktree, then completed or failed
        through ``update``, then what it cost reported. True when the task completed."""
        c, tid = self.cfg, task.id
        ctx = KindContext(c.run_id, c.agent_id, Path(c.worktree), c.seed, c.time_scale, task.attempt, self.events,
                          self.pulse, identity(c.agent_id))
        self.pulse.current_task = tid
        try:
            try:
                result = self.executor.run(task, ctx)
            except Exception as e:  # a kind's bug fails its task, not the agent
                result = Result(ok=False, reason=f"kind {c.kind} raised {type(e).__name__}: {e}")
            tk = result.tokens or {}
            self.owe(tid, tk.get("in", 0), tk.get("out", 0), tk.get("cached", 0), tk.get("thinking", 0), tk.get("cost_usd", 0.0))
            done = self.finish(tid, result)
        finally:
            self.pulse.current_task = None
        self.settle(tid)
        return done

    def finish(self, tid: str, result: Result) -> bool:
        if result.ok:
            # a refusal here is the server's word on the task (its verify failed it, or it was
            # taken away meanwhile): logged by try_call, nothing left for this agent to do
            if isinstance(self.try_call("update", tid, task=tid, status="completed"), ToolRefused):
                return False
            self.events.log(f"task {tid} completed", task=tid)
            return True
        reason = result.reason or "failed"
        if not isinstance(self.try_call("update", tid, task=tid, status="failed", reason=reason), ToolRefused):
            self.events.log(f"task {tid} failed: {reason}", level="warning", task=tid)
        return False
