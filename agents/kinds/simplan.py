"""The simulated agent's plan for one task: duration, steps, tokens, faults and edits.

Everything is drawn from random streams keyed on (seed, task id, attempt, purpose) through a
hash -- never on the agent, the wall clock or the process -- so the same seed gives the same
plan whoever runs the task, and changing one knob (say ``p_fail``) leaves the other streams
(durations, edits) as they were.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from dataclasses import dataclass, field
from typing import Any

from coordstore.errors import AgentError
from coordstore.numbers import is_number
from coordstore.graph import estimate_ms

# price per million tokens (input, output incl. thinking, cached input): list prices of the
# small / medium / large model tiers of the big providers, rounded
PRICES: dict[str, tuple[float, float, float]] = {
    "sim-small": (0.25, 1.25, 0.025),
    "sim-medium": (3.0, 15.0, 0.30),
    "sim-large": (15.0, 75.0, 1.50),
}
FAULTS = ("crash", "stall", "loop", "fail")  # drawn in this order; the first that fires wins
BASE_INPUT_TOKENS = 4_000  # system prompt + task + first file reads
CONTEXT_GROWTH = 0.15  # each step adds ~15% of the base to the context


@dataclass
class SimOptions:
    """The sim kind's knobs (``kind_options``; per task also ``task.meta["sim"]``)."""

    sigma: float = 0.25  # lognormal spread of durations around the estimate
    p_fail: float = 0.0  # the task fails with a reason
    p_crash: float = 0.0  # the process exits non-zero mid-task
    p_stall: float = 0.0  # the process stays alive, silent, without heartbeats
    p_loop: float = 0.0  # the agent repeats the same step forever
    p_rate_limit: float = 0.0  # a rate limit pauses the task once, then it goes on
    retry_after_s: float = 30.0  # rate-limit pause in agent seconds (scaled by time_scale)
    step_every_s: float = 30.0  # one tool call per this many agent seconds ...
    max_steps: int = 16  # ... but never more steps than this per task (event volume)
    model: str = "sim-medium"  # key of PRICES
    provider: str = "sim"  # the provider its requests go to (agents.backpressure shares limits per provider)
    provider_capacity: int = 0  # sessions the simulated provider serves at once (simprovider); 0: no limit

    @classmethod
    def build(cls, *layers: dict[str, Any]) -> tuple["SimOptions", list[str]]:
        """Options from layered mappings (later wins); returns (options, unknown keys)."""
        merged: dict[str, Any] = {}
        for layer in layers:
            merged.update(layer or {})
        known = cls.__dataclass_fields__
        unknown = sorted(k for k in merged if k not in known)
        opts = cls(**{k: v for k, v in merged.items() if k in known})
        for k in known:
            v = getattr(opts, k)
            if k == "model":
                if v not in PRICES:
                    raise AgentError(f"sim option model={v!r}: unknown; known: {', '.join(PRICES)}")
            elif k == "provider":
                if not isinstance(v, str) or not v or "/" in v or v.startswith("."):
                    raise AgentError(f"sim option provider={v!r}: must be a name (no '/', not starting with '.')")
            elif not is_number(v) or v < 0 or (k.startswith("p_") and v > 1):
                raise AgentError(f"sim option {k}={v!r}: must be a number" + (" in [0, 1]" if k.startswith("p_") else " >= 0"))
        if int(opts.provider_capacity) != opts.provider_capacity:
            raise AgentError(f"sim option provider_capacity={opts.provider_capacity!r}: must be a whole number >= 0")
        if opts.max_steps < 1:
            raise AgentError(f"sim option max_steps={opts.max_steps!r}: must be at least 1")
        return opts, unknown


def stream(seed: int, task_id: str, attempt: int, purpose: str) -> random.Random:
    """An independent random stream for one purpose of one attempt of one task."""
    key = "\x1f".join((str(seed), task_id, str(attempt), purpose)).encode()
    return random.Random(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big"))


@dataclass
class Step:
    at_s: float  # real seconds after the task's start
    name: str
    args: dict[str, Any]
    tokens: tuple[int, int, int, int]  # in, out, cached, thinking
    cost_usd: float


@dataclass
class SimPlan:
    agent_ms: int  # the duration in agent time (before time_scale)
    duration_s: float  # real seconds
    steps: list[Step]
    fault: str | None = None
    fault_step: int | None = None
    rate_limit_step: int | None = None
    retry_after_s: float = 0.0  # real seconds
    edits: dict[int, list[str]] = field(default_factory=dict)  # step index -> files to edit then
    digest: str = ""  # content stamp of this attempt's edits

    def summary(self) -> dict[str, Any]:
        return {"agent_ms": self.agent_ms, "duration_ms": round(self.duration_s * 1000, 3), "steps": len(self.steps),
                "fault": self.fault, "rate_limited": self.rate_limit_step is not None}


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def own_file(task_id: str) -> str:
    """The file a task without a file scope edits."""
    return f"orch-sim/{_SAFE.sub('_', task_id)}.md"


def edit_targets(task) -> list[str]:
    """Files the task edits: its scope (a directory or glob scope gets the task's own file in it)."""
    out: list[str] = []
    for entry in task.file_scope or []:
        if entry.endswith("/") or any(c in entry for c in "*?["):
            parts = entry.split("/")
            base = "/".join(p for p in parts[: next((i for i, p in enumerate(parts) if any(c in p for c in "*?[")), len(parts))] if p)
            path = f"{base}/{own_file(task.id).split('/')[-1]}" if base else own_file(task.id)
        else:
            path = entry
        if path not in out:
            out.append(path)
    return out or [own_file(task.id)]


def make_plan(task, seed: int, attempt: int, time_scale: float, opts: SimOptions) -> SimPlan:
    dur = stream(seed, task.id, attempt, "duration")
    agent_ms = int(round(estimate_ms(task) * math.exp(dur.gauss(0.0, opts.sigma)) if opts.sigma > 0 else estimate_ms(task)))
    duration_s = agent_ms * time_scale / 1000.0
    n = max(1, min(opts.max_steps, round(agent_ms / 1000.0 / opts.step_every_s) if opts.step_every_s > 0 else opts.max_steps))
    files = edit_targets(task)

    st = stream(seed, task.id, attempt, "steps")
    names = ("read_file", "grep", "read_file", "edit_file", "bash", "run_tests")
    p_in, p_out, p_cached = PRICES[opts.model]
    steps: list[Step] = []
    for i in range(n):
        at = duration_s * (i + st.uniform(0.1, 0.9)) / n  # spread across the duration, jittered
        tin = int(BASE_INPUT_TOKENS * (1 + CONTEXT_GROWTH * i) * math.exp(st.gauss(0, 0.3)))
        cached = int(tin * st.uniform(0.5, 0.9)) if i else 0
        tout = int(300 * math.exp(st.gauss(0, 0.5)))
        think = int(200 * math.exp(st.gauss(0, 0.7)))
        cost = ((tin - cached) * p_in + cached * p_cached + (tout + think) * p_out) / 1e6
        name = st.choice(names)
        steps.append(Step(at, name, {"path": files[i % len(files)], "step": i}, (tin, tout, cached, think), round(cost, 8)))

    plan = SimPlan(agent_ms, duration_s, steps)
    ft = stream(seed, task.id, attempt, "faults")
    draws = {f: ft.random() for f in FAULTS}  # always draw all, so each stream stays put
    rl_draw, fault_at, rl_at = ft.random(), ft.randrange(n), ft.randrange(n)
    plan.fault = next((f for f in FAULTS if draws[f] < getattr(opts, f"p_{f}")), None)
    plan.fault_step = fault_at if plan.fault else None
    if rl_draw < opts.p_rate_limit:
        plan.rate_limit_step, plan.retry_after_s = rl_at, opts.retry_after_s * time_scale
    for j, f in enumerate(files):  # edits spread over the steps, in scope order
        plan.edits.setdefault(min(n - 1, (j * n) // len(files)), []).append(f)
    plan.digest = hashlib.blake2b(f"{seed}\x1f{task.id}\x1f{attempt}".encode(), digest_size=6).hexdigest()
    return plan


def comment_marker(path: str) -> str:
    return "//" if path.endswith((".js", ".ts", ".c", ".h", ".rs", ".go", ".java", ".cpp")) else "#"


def task_line(task, digest: str) -> str:
    title = (task.title or "").strip().splitlines()[0] if (task.title or "").strip() else task.id
    return f"task {task.id}: {title} [sim {digest}]"


def edit_text(text: str | None, path: str, task, digest: str) -> tuple[str, str]:
    """(new text, change) for one file: the task's ``orch-slot`` line replaced, else a block appended."""
    line = task_line(task, digest)
    if text is None:
        return f"{comment_marker(path)} {line}\n", "added"
    slot = re.compile(rf"^(.*?)orch-slot: {re.escape(task.id)}[ \t]*$", re.M)
    m = slot.search(text)
    if m:
        return text[: m.start()] + f"{m.group(1)}{line}" + text[m.end():], "modified"
    sep = "" if not text or text.endswith("\n") else "\n"
    return f"{text}{sep}\n{comment_marker(path)} {line}\n", "modified"
