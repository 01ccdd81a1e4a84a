"""A role session's conversation as its role script reads it (``roles``): who plays, the role's
options, and every tool call so far as a ``Step`` (orch's tools by their bare name, shell calls as
``shell``, each with its result read back to JSON), plus the turns every role makes alike:
connecting, waiting, saying that the run is over, a fault on demand.

Role scripts are stateless: each request, the conversation the client sent is read again and the
next turn decided from it alone (a retried request gets the same answer).

The role options (``ctx.options``; the player sets them from the agent's ``kind_options``):

==============  ==========  ==============================================================
option          default     meaning
==============  ==========  ==============================================================
policy          pull        push | pull | hybrid: how a worker finds its work
tags            []          the agent's tags (what a pulling worker takes)
decompose       none        {over_points, parts, sequential} as the sim's (``simsplit``)
poll_s          0.5         seconds of the first wait (shell ``sleep``) after a look that
                            found nothing to do, doubling per empty look ...
poll_max_s      4           ... up to this (each wait jittered +-25%, seeded)
choose_among    2           a pulling worker picks (seeded) among this many best ready tasks
turn_tokens     {in: 1200,  the usage a coordination turn reports (the sim's, so real-CLI and
                out: 120}   sim runs cost alike; and a long session's reported context stays
                            small, so no CLI compacts it away); a task's work turns report
                            its sim plan's tokens
faults          []          [{turn: N, kind, times, retry_after, message, status}]: a fault at
                            the session's assistant turn N, ``times`` counted per agent over
                            all its sessions (``hang``: the agent goes silent)
loop_on_claim   false       true: every claim turn of the agent repeats forever (a looping
                            agent); N: only its first N claim turns do (one per session)
==============  ==========  ==============================================================
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Any

from coordstore.errors import InputError, OrchError
from coordstore.models import TERMINAL

from agents.clis.base import mcp_tool_name, sleeps_only
from agents.kinds.simroles import RoleOptions as SimRoleOptions, Split, rng_for, task_from
from agents.kinds.simsplit import parts

from orchestrator.modelserver.history import SHELL_TOOLS, ToolUse, shell_command, tool_result
from orchestrator.modelserver.scripts import RequestView
from orchestrator.modelserver.tools import MCP_PREFIX, mcp_name
from orchestrator.modelserver.turns import Fault, ToolCall, Turn, Usage, parse_fault

OVER = "The run is over."  # what a role's last text says (the player looks for it)
POLL_S, POLL_MAX_S = 0.5, 4.0
POLICIES = ("push", "pull", "hybrid")
# the coordination tools role scripts call: a client's name for one of these is read as orch's
ORCH_TOOLS = frozenset({"connect", "disconnect", "list_tasks", "list_agents", "get", "claim", "update", "create_tree", "link"})
STUCK_AFTER = 3  # failed looks in a row that end a session
PROGRESS = frozenset({"connect", "claim", "update", "create_tree"})  # done, these reset the wait


@dataclass
class Step:
    """One tool call of the conversation, read."""

    tool: str  # orch's tool by its bare name, ``shell``, or the client's name of any other tool
    args: dict[str, Any]
    value: Any  # the result as JSON (an MCP tool's) or text; None while unanswered
    error: bool
    use: ToolUse

    @property
    def turn(self) -> int:
        return self.use.turn

    @property
    def ok(self) -> bool:
        """Answered, not an error, and shaped as the tool answers (a list for the listings, an object
        for the rest, without ``success: false``); a shell call that was answered."""
        if self.use.result is None or self.error:
            return False
        if self.tool in ("list_tasks", "list_agents"):
            return isinstance(self.value, list)
        if self.tool in ORCH_TOOLS:  # a refusal's structured content is {error, outcome}
            v = self.value
            return isinstance(v, dict) and v.get("success", True) is not False and not ("error" in v and "outcome" in v)
        return True

    @property
    def unfiltered(self) -> bool:
        """A look at every task (what tells whether the run is over)."""
        return self.tool == "list_tasks" and not self.args

    @property
    def task(self) -> str | None:
        t = self.args.get("task")
        return t if isinstance(t, str) else None

    @property
    def is_sleep(self) -> bool:
        return self.tool == "shell" and sleeps_only(self.args.get("command"))

    def listed(self) -> list[dict]:
        return [t for t in self.value if isinstance(t, dict) and isinstance(t.get("id"), str)] if self.ok else []


def step_of(use: ToolUse) -> Step:
    bare = mcp_tool_name(use.name, known=ORCH_TOOLS)
    if bare in ORCH_TOOLS:
        value, error = tool_result(use.result, use.is_error)
        args = {k: v for k, v in use.input.items() if v is not None}
        return Step(bare, args, value, error, use)
    cmd = shell_command(use)
    if cmd is not None:
        return Step("shell", {"command": cmd}, use.result, use.is_error, use)
    return Step(use.name, dict(use.input), use.result, use.is_error, use)


@dataclass
class RoleOptions:
    policy: str = "pull"
    tags: list[str] = field(default_factory=list)
    split: Split | None = None
    poll_s: float = POLL_S
    poll_max_s: float = POLL_MAX_S
    choose_among: int = 2
    faults: dict[int, Fault] = field(default_factory=dict)
    loop_on_claim: int | None = 0  # claim turns that loop (None: all of them)
    usage: Usage = field(default_factory=Usage)  # what a coordination turn reports (the sim's turn_tokens)

    @classmethod
    def build(cls, script: str, agent: str, raw: Any) -> "RoleOptions":
        """The options of a role session (``InputError`` naming the script and the option)."""
        where = f"script {script}: options"
        if not isinstance(raw, dict):
            raise InputError(f"{where}: must be a mapping, got {type(raw).__name__}")
        o = cls()
        policy = raw.get("policy", "pull")
        if policy not in POLICIES:
            raise InputError(f"{where}.policy: {policy!r} is not one of {', '.join(POLICIES)}")
        o.policy = policy
        tags = raw.get("tags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise InputError(f"{where}.tags: must be a list of tag names")
        o.tags = list(tags)
        given = {k: raw[k] for k in ("poll_s", "poll_max_s", "choose_among", "decompose", "turn_tokens") if raw.get(k) is not None}
        if "poll_s" in given and "poll_max_s" not in given and isinstance(given["poll_s"], (int, float)):
            given["poll_max_s"] = max(POLL_MAX_S, given["poll_s"])
        try:
            sim = SimRoleOptions.build({"poll_s": POLL_S, "poll_max_s": POLL_MAX_S, **given})
        except OrchError as e:
            raise InputError(f"{where}: {e}") from e
        o.poll_s, o.poll_max_s, o.choose_among, o.split = sim.poll_s, sim.poll_max_s, sim.choose_among, sim.decompose
        t = sim.turn_tokens
        o.usage = Usage(input=t["in"], output=t["out"], cached=t["cached"], thinking=t["thinking"])
        o.faults = role_faults(raw.get("faults") or [], f"{where}.faults", agent)
        loop = raw.get("loop_on_claim", False)
        if loop is True:
            o.loop_on_claim = None
        elif loop is False or loop is None:
            o.loop_on_claim = 0
        elif isinstance(loop, int) and loop >= 0:
            o.loop_on_claim = loop
        else:
            raise InputError(f"{where}.loop_on_claim: {loop!r} must be true, false or a number of claims")
        return o


def role_faults(raw: Any, where: str, agent: str) -> dict[int, Fault]:
    """A role session's ``faults`` option, ``[{turn, kind, ...}]``, by turn (``InputError`` naming
    ``where`` and the entry); each counted over all the agent's sessions."""
    if not isinstance(raw, list):
        raise InputError(f"{where}: must be a list of {{turn: N, kind: ...}}")
    out: dict[int, Fault] = {}
    for i, f in enumerate(raw):
        if not isinstance(f, dict) or not isinstance(f.get("turn"), int) or isinstance(f["turn"], bool) or f["turn"] < 0:
            raise InputError(f"{where}.{i}: must be a mapping with an integer 'turn' >= 0")
        fault = parse_fault({k: v for k, v in f.items() if k != "turn"}, f"{where}.{i}")
        fault.scope = f"agent:{agent}"  # a respawned agent does not meet it again
        out[f["turn"]] = fault
    return out


class Conversation:
    """What a role script decides from: the request, its context and its calls read as steps."""

    def __init__(self, script: str, view: RequestView):
        self.script, self.view, self.ctx = script, view, view.ctx
        if not self.ctx.agent:
            raise InputError(f"script {script}: the session names no agent (session_url(..., agent=...))")
        self.me: str = self.ctx.agent
        self.opts = RoleOptions.build(script, self.me, self.ctx.options or {})
        self.steps = [step_of(u) for u in view.calls]

    @property
    def last(self) -> Step | None:
        return self.steps[-1] if self.steps else None

    def rng(self, *purpose: str) -> random.Random:
        """A random stream fixed by the run's seed, the agent, and ``purpose`` (stateless choices)."""
        return rng_for(self.ctx.seed, self.me, *purpose)

    def find(self, tool: str, before: int | None = None, **args: Any) -> int | None:
        """Index of the last step calling ``tool`` (with these arguments) before index ``before``."""
        end = len(self.steps) if before is None else before
        return next((i for i in range(end - 1, -1, -1) if self.steps[i].tool == tool
                     and all(self.steps[i].args.get(k) == v for k, v in args.items())), None)

    # ---------------------------------------------------------------- turns every role makes
    @staticmethod
    def mcp(tool: str, text: str = "", **args: Any) -> Turn:
        return Turn(text=text, tool_calls=[ToolCall(MCP_PREFIX + tool, {k: v for k, v in args.items() if v is not None})])

    def opening(self) -> Turn | None:
        """``connect`` first; a refused connect ends the session (the player sees why)."""
        at = self.find("connect")
        if at is None:
            return self.mcp("connect", f"Connecting to the run as {self.me}.", worker_id=self.me)
        s = self.steps[at]
        if s.use.result is not None and not s.ok:
            return Turn(text=f"{self.me} could not connect to orch's coordination server: {str(s.value)[:300]}")
        return None

    def stuck(self) -> Turn | None:
        """A look that failed ``STUCK_AFTER`` times in a row (the CLI refuses the tool, the server is
        gone ...) ends the session saying why, rather than polling a blind look forever."""
        for tool in ("list_tasks", "list_agents"):
            looks = [s for s in self.steps if s.tool == tool][-STUCK_AFTER:]
            if len(looks) == STUCK_AFTER and not any(s.ok for s in looks):
                return Turn(text=f"{self.me} cannot go on: {tool} failed {STUCK_AFTER} times in a row "
                                 f"(last: {str(looks[-1].value)[:300]}).")
        return None

    def over(self, step: Step) -> bool:
        """Whether ``step`` is a look at every task and every task is terminal."""
        return step.unfiltered and step.ok and all(t.get("status") in TERMINAL for t in step.listed())

    def over_turn(self, step: Step) -> Turn:
        n = len(step.listed())
        return Turn(text=f"{OVER} All {n} tasks are completed, failed or cancelled; {self.me} stops here.")

    def progress_at(self) -> int:
        """Index of the last step that moved something (-1: none)."""
        return next((i for i in range(len(self.steps) - 1, -1, -1)
                     if self.steps[i].tool in PROGRESS and self.steps[i].ok), -1)

    @property
    def shell(self) -> bool:
        return any(t in SHELL_TOOLS for t in self.view.tools)

    def wait(self, then: Turn) -> Turn:
        """Wait before ``then`` (the next look): a shell ``sleep`` doubling per empty look since the
        last progress, jittered +-25% as the sim's waits (seeded: a retry gets the same; and no
        two waits alike, so a CLI's own loop detection -- gemini's: a cycle of identical calls --
        does not take patient polling for a loop); a client without a shell gets ``then``
        answered late instead."""
        since = self.steps[self.progress_at() + 1:]
        k = sum(1 for s in since if s.is_sleep) if self.shell else max(0, sum(1 for s in since if s.unfiltered) - 1)
        o = self.opts
        secs = round(min(o.poll_max_s, o.poll_s * 2 ** min(k, 30)) * self.rng("wait", str(self.view.turn)).uniform(0.75, 1.25), 2)
        if not self.shell:
            then.delay_s = secs
            return then
        return Turn(text="Nothing to do yet; waiting before looking again.",
                    tool_calls=[ToolCall("bash", {"command": f"sleep {secs:g}", "description": "Wait before looking again"})])

    def finish(self, turn: Turn) -> Turn:
        """The decided turn, made servable: a final text when a tool it calls is not offered (a
        request offering no tool at all is a CLI's side request: the server answers it aside), the
        fault on demand of this turn attached."""
        missing = [c.name[len(MCP_PREFIX):] for c in turn.tool_calls
                   if c.name.startswith(MCP_PREFIX) and mcp_name(c.name[len(MCP_PREFIX):], self.view.tools) is None]
        if missing and self.view.tools:
            return Turn(text=f"{self.me} cannot play its role: orch's coordination tools are missing "
                             f"(no tool {', '.join(missing)} of server 'orch' among the {len(self.view.tools)} offered).")
        fault = self.opts.faults.get(self.view.turn)
        if fault is not None and turn.fault is None:
            turn.fault = fault
        if turn.usage.input is None and turn.usage.output is None:  # a coordination turn, not a task's work
            turn.usage = replace(self.opts.usage)
        return turn


class RoleScript:
    """A script playing a role for a whole agent session (``ctx.script`` in ``ROLE_SCRIPTS``).
    ``work``: the server's task script (sim, replay, a file) that does a claimed task's work."""

    name = ""

    def __init__(self, work: Any = None):
        self.work = work

    def turn(self, index: int, view: RequestView) -> Turn:
        c = Conversation(self.name, view)
        return c.finish(c.opening() or c.stuck() or self.decide(c))

    def decide(self, c: Conversation) -> Turn:
        raise NotImplementedError


# ---------------------------------------------------------------- splitting (decomposer and lead)
DECOMPOSING = "decomposing into subtasks"  # the reason a worker gives a coarse task back with


def tree_turn(c: Conversation, parent: str, record: Any, split: Split) -> Turn:
    """``create_tree`` of ``parent``'s parts, as the sim splits (``simsplit.parts``)."""
    task = task_from(record if isinstance(record, dict) else {}, parent)
    return c.mcp("create_tree", f"Splitting {parent} into parts.", parent=parent, tree=parts(split, c.ctx.seed, task))


def link_turn(c: Conversation, split: Split | None, at: int | None) -> Turn | None:
    """After the ``create_tree`` at step ``at``: the next ``link`` making its parts follow one
    another (``sequential``), or None when there is none left to make."""
    if split is None or not split.sequential or at is None or not c.steps[at].ok:
        return None
    created = [x for x in c.steps[at].value.get("created") or [] if isinstance(x, str)]
    made = {(s.args.get("from"), s.args.get("to")) for s in c.steps[at + 1:] if s.tool == "link"}
    for before, after in zip(created, created[1:]):
        if (before, after) not in made:
            return c.mcp("link", **{"from": before, "to": after, "type": "blocks"})
    return None
