"""Judging one agent from what can be observed of it: the pure half of supervision.

``judge(previous, observation, config, now)`` is a pure function: it returns the ``Verdict`` and
the ``Track`` to hand back on the next call (the previous observation plus the three instants
one observation alone cannot tell: since when the agent has held its task, when its log last
grew, when it last used CPU). No clock, no I/O, so tests drive it with hand-made observations.

Rules, first match wins:

1. ``stopped``  the runner finished (said ``done`` / exited 0 at the end of the run).
2. ``dead``     its lease ran out (the store reaped it: no heartbeat for ``lease_ms``, whatever
                its process looks like -- SIGSTOPped, hung, on a host that went away), or its
                local process is gone without having finished. The process state is evidence.
3. ``paused``   a ``rate_limited`` event's retry time is still ahead. Back-pressure, not a failure:
                a paused agent is never judged stalled, and its silence counts from the end of
                the pause, not from the rate-limit event.
4. ``looping``  the last ``loop_repeats`` step digests are identical (same tool, same args), and
                the agent has emitted an event since the supervisor first saw this process:
                steps left over from a killed predecessor never condemn a fresh process.
                Steps marked ``poll`` (an agent-driven agent's read-only look for work, repeated
                with backoff while it waits: ``agents.kinds.simroles``) are not counted
                (``observe.EventState``): they prove life, and waiting is what such an agent does.
5. ``stalled``  it holds a task, and for ``stall_after_ms`` there has been no event, no log growth
                and no task change. CPU activity alone does NOT reset the silence (a spinning
                process emits nothing either) but it extends the grace: an agent that used at
                least ``busy_cpu_fraction`` of a core within the last ``stall_after_ms`` (a long
                compile or test run) is judged stalled only after ``stall_after_ms +
                busy_grace_ms``. Voluntary context switches are recorded as evidence only: a
                process sleeping in a polling loop switches too, so they prove nothing.
                The supervisor's first sight of a process counts as activity (after a resume
                nobody knows what it did meanwhile), so a process gets at least one full window.
                An agent without a task is never stalled: nothing waits on it and killing it
                gains nothing (a silent idle agent is judged ``idle``) -- unless it plays a role in
                an agent-driven variant (``driven``): such an agent looks for work until the run is
                over (its looks are events), so its silence is a hang even without a task (a
                coordinator whose CLI went silent holds no task, yet nothing moves without it).
6. ``idle``     alive, no current task.
7. ``active``   otherwise. A slow agent that keeps emitting events is never stalled.

Agent time and wall-clock time: ``stall_after_ms`` and ``busy_grace_ms`` measure how long an
agent's work may go without a sign of life, in the agent's own time. An agent of a time-scaled
kind (``sim``, ``replay``: ``time_scaled`` on the kind class) lives ``observation.time_scale``
times faster or slower than the wall clock, so both are multiplied by it; the stall window never
shrinks below ``stall_floor_ms`` that way (a healthy runner beats once a second whatever the
scale). Real agents (CLIs, ``command``, ``script``) have ``time_scale`` 1: seconds stay seconds.
The other thresholds (lease, kill grace, respawn backoff) are the orchestrator's wall clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from coordstore.errors import InputError
from coordstore.models import FAILURES, VERDICT_KINDS, VerdictKind  # the words, with the agent statuses they become

from agents.config import HEARTBEAT_MS, LEASE_MS


class SupervisionConfig(BaseModel):
    """Every threshold of supervision, in one place (``execution.supervision`` in experiment YAML)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    # real CLI agents emit a step or a log line well within two minutes; silence beyond is a hang
    # (agent time: scaled by the run's time_scale for time-scaled kinds, see the module docstring)
    stall_after_ms: int = Field(default=120_000, gt=0)
    # extra silence allowed while the agent burns CPU (builds, test suites), capped so a spin dies too
    # (agent time, like stall_after_ms)
    busy_grace_ms: int = Field(default=480_000, ge=0)
    # the least stall window time scaling may give (wall clock): five of a runner's heartbeats
    stall_floor_ms: int = Field(default=5 * HEARTBEAT_MS, gt=0)
    # a runner that renewed no lease for this long is dead to the run (the store reaps it and
    # requeues its tasks), whatever its process looks like (wall clock): three heartbeats at least
    lease_ms: int = Field(default=LEASE_MS, ge=3 * HEARTBEAT_MS)
    # share of one core that counts as "busy"; a process blocked on I/O or sleeping uses ~0
    busy_cpu_fraction: float = Field(default=0.05, ge=0.0)
    # the same tool call with the same args this many times in a row never makes progress
    loop_repeats: int = Field(default=5, ge=2)
    # SIGTERM -> SIGKILL delay: time for a runner to flush its last events, short enough not to block
    kill_grace_s: float = Field(default=5.0, ge=0.0)
    # attempts a task gets (and consecutive failures of an agent slot) before giving up on it
    max_retries: int = Field(default=3, ge=1)
    # first respawn delay, doubled per consecutive failure of the slot: a crash-looping agent backs off
    respawn_backoff_ms: int = Field(default=1_000, ge=0)
    # ceiling of that delay: a recovered slot never waits longer than this
    respawn_backoff_max_ms: int = Field(default=60_000, ge=0)
    # agent kind a slot switches to after max_retries consecutive failures (None: keep its kind)
    fallback_kind: str | None = None
    # every agent failed this many times in a row -> degrade to one agent working sequentially
    circuit_failures: int = Field(default=3, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> "SupervisionConfig":
        if self.respawn_backoff_max_ms < self.respawn_backoff_ms:
            raise ValueError(
                f"respawn_backoff_max_ms ({self.respawn_backoff_max_ms}) is below respawn_backoff_ms ({self.respawn_backoff_ms})"
            )
        return self

    @classmethod
    def load(cls, data: Mapping[str, Any] | None, where: str = "supervision") -> "SupervisionConfig":
        """Build from a mapping (YAML section); a bad key or value is an ``InputError`` naming it."""
        try:
            return cls.model_validate(dict(data or {}))
        except ValidationError as e:
            err = e.errors()[0]
            key = ".".join(str(p) for p in err.get("loc", ()))
            at = f"{where}.{key}" if key else where
            raise InputError(f"{at}: {err.get('msg', 'invalid value')}") from e

    def windows(self, time_scale: float) -> tuple[int, int]:
        """(stall_after_ms, busy_grace_ms) on the wall clock for an agent whose time runs at
        ``time_scale`` (1: a real agent). Scaling keeps the stall window at ``stall_floor_ms`` or
        above, unless the configured window is already shorter."""
        if time_scale == 1:
            return self.stall_after_ms, self.busy_grace_ms
        floor = min(self.stall_floor_ms, self.stall_after_ms)
        return max(round(self.stall_after_ms * time_scale), floor), round(self.busy_grace_ms * time_scale)

    def backoff_ms(self, failures: int) -> int:
        """Respawn delay after the ``failures``-th consecutive failure (1-based)."""
        if failures <= 0:
            return 0
        return min(self.respawn_backoff_ms * 2 ** (failures - 1), self.respawn_backoff_max_ms)


@dataclass(frozen=True)
class AgentObservation:
    """What the controller saw of one agent at one instant (all times in ms, like the store)."""

    agent: str
    alive: bool
    exit_code: int | None = None
    last_event_ms: int | None = None  # ts of the newest event of the current process, None = none yet
    ctx_switches: int = 0  # voluntary context switches of the process group (cumulative)
    cpu_s: float = 0.0  # CPU seconds of the process group (cumulative)
    log_bytes: int = 0  # size of the agent's log output
    recent_steps: tuple[str, ...] = ()  # digests of the latest `step` events, newest last
    current_task: tuple[str, int] | None = None  # (task id, attempt)
    rate_limited_until_ms: int | None = None  # retry_after of the latest `rate_limited` event
    finished: bool = False  # the runner said `done` / exited 0 at the end of the run
    time_scale: float = 1.0  # the agent's time per wall time: the run's time_scale for time-scaled kinds
    lease_expired: bool = False  # the store reaped the agent at this tick: its lease ran out
    local: bool = True  # its process runs on this host (False: only the lease and events tell)
    process_state: str | None = None  # psutil's state of the local process (``stopped`` after SIGSTOP)
    driven: bool = False  # it plays a role through the coordination tools: never idle until the run is over


@dataclass(frozen=True)
class Verdict:
    agent: str
    kind: VerdictKind
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.kind in FAILURES

    @property
    def summary(self) -> str:
        """One line saying why, for transition reasons and logs."""
        e = self.evidence
        if self.kind == "stalled":
            return f"stalled: silent for {e['silent_ms']} ms (limit {e['limit_ms']} ms), log unchanged, cpu +{e['cpu_delta_s']:.2f} s"
        if self.kind == "looping":
            return f"looping: step {e['step']} repeated {e['repeats']} times"
        if self.kind == "dead" and e.get("alive", True) and e.get("lease_expired"):
            where = f"process {e.get('process_state') or 'alive'}" if e.get("local", True) else "no local process"
            return f"dead: lease expired ({where})"
        if self.kind == "dead":
            lease = ", lease expired" if e.get("lease_expired") else ""
            return f"dead: process gone (exit code {e.get('exit_code')}{lease})"
        if self.kind == "paused":
            return f"paused: rate limited until {e['rate_limited_until_ms']}"
        return self.kind


@dataclass(frozen=True)
class Track:
    """What ``judge`` carries from one observation to the next for one process."""

    obs: AgentObservation
    at_ms: int  # when ``obs`` was taken
    since_ms: int  # first seen, or when the current task last changed
    log_grew_ms: int  # last time log_bytes changed
    busy_ms: int | None  # last interval that used at least busy_cpu_fraction of a core
    first_event_ms: int | None = None  # last_event_ms at first sight (older steps are not evidence)


def _advance(prev: Track | None, obs: AgentObservation, cfg: SupervisionConfig, now: int) -> tuple[Track, dict]:
    if prev is None:
        return Track(obs, now, now, now, None, obs.last_event_ms), {"interval_ms": 0, "cpu_delta_s": 0.0, "ctx_delta": 0}
    interval = max(0, now - prev.at_ms)
    # counters go backwards only if the process was replaced: count that as no activity
    d_cpu = max(0.0, obs.cpu_s - prev.obs.cpu_s)
    d_ctx = max(0, obs.ctx_switches - prev.obs.ctx_switches)
    busy = prev.busy_ms
    if interval > 0 and d_cpu > 0 and d_cpu >= cfg.busy_cpu_fraction * interval / 1000:
        busy = now
    since = now if obs.current_task != prev.obs.current_task else prev.since_ms
    log_grew = now if obs.log_bytes != prev.obs.log_bytes else prev.log_grew_ms
    track = Track(obs, now, since, log_grew, busy, prev.first_event_ms)
    return track, {"interval_ms": interval, "cpu_delta_s": round(d_cpu, 4), "ctx_delta": d_ctx}


def judge(prev: Track | None, obs: AgentObservation, cfg: SupervisionConfig, now: int) -> tuple[Verdict, Track]:
    """The verdict on ``obs`` at ``now`` given the previous ``Track`` (None: first sight of this
    process), and the track for the next call. Pure; the rules are in the module docstring."""
    track, deltas = _advance(prev, obs, cfg, now)
    ev: dict[str, Any] = {
        "alive": obs.alive,
        "process_state": obs.process_state,
        "lease_expired": obs.lease_expired,
        "local": obs.local,
        "task": obs.current_task[0] if obs.current_task else None,
        "attempt": obs.current_task[1] if obs.current_task else None,
        "last_event_ms": obs.last_event_ms,
        "log_bytes": obs.log_bytes,
        "cpu_s": round(obs.cpu_s, 4),
        "ctx_switches": obs.ctx_switches,
        **deltas,
    }

    def verdict(kind: str, **extra: Any) -> tuple[Verdict, Track]:
        return Verdict(obs.agent, kind, {**ev, **extra}), track  # type: ignore[arg-type]

    if obs.finished:
        return verdict("stopped", exit_code=obs.exit_code)
    if not obs.alive or obs.lease_expired:
        return verdict("dead", exit_code=obs.exit_code)
    until = obs.rate_limited_until_ms
    if until is not None and now < until:
        return verdict("paused", rate_limited_until_ms=until)
    n = cfg.loop_repeats
    steps = obs.recent_steps
    fresh = obs.last_event_ms != track.first_event_ms
    if fresh and len(steps) >= n and len(set(steps[-n:])) == 1:
        return verdict("looping", step=steps[-1], repeats=n)

    marks = [track.since_ms, track.log_grew_ms]
    if obs.last_event_ms is not None:
        marks.append(obs.last_event_ms)
    if until is not None:  # the pause is over: silence counts from its end
        marks.append(until)
    silent = now - max(marks)
    stall_ms, grace_ms = cfg.windows(obs.time_scale)
    busy = track.busy_ms is not None and now - track.busy_ms < stall_ms
    limit = stall_ms + (grace_ms if busy else 0)
    ev.update(silent_ms=silent, limit_ms=limit, busy=busy, log_grew_ms=track.log_grew_ms)
    if obs.current_task is None and not obs.driven:
        return verdict("idle")
    if silent >= limit:
        return verdict("stalled")
    return verdict("active" if obs.current_task is not None else "idle")


__all__ = [
    "AgentObservation",
    "FAILURES",
    "SupervisionConfig",
    "Track",
    "VERDICT_KINDS",
    "Verdict",
    "VerdictKind",
    "judge",
]
