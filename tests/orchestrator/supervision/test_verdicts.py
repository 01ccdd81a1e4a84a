"""The pure judge: hand-made observations, an injected clock, no processes and no sleeps."""

from __future__ import annotations

from dataclasses import replace

import pytest

from coordstore.errors import InputError
from orchestrator.supervision.verdicts import AgentObservation, SupervisionConfig, judge

T0 = 1_700_000_000_000  # an arbitrary epoch-ms start
CFG = SupervisionConfig(stall_after_ms=10_000, busy_grace_ms=20_000, loop_repeats=5)


def working(**kw) -> AgentObservation:
    base = dict(agent="w1", alive=True, last_event_ms=T0, current_task=("t1", 1), cpu_s=1.0, ctx_switches=100, log_bytes=500)
    base.update(kw)
    return AgentObservation(**base)


def run_ticks(observations, times, cfg=CFG):
    """Judge a sequence of (observation, now) pairs, carrying the track; returns the kinds."""
    track, kinds, verdicts = None, [], []
    for obs, now in zip(observations, times):
        v, track = judge(track, obs, cfg, now)
        kinds.append(v.kind)
        verdicts.append(v)
    return kinds, verdicts


@pytest.mark.parametrize("tick_ms", [1_000, 700, 3_000])
def test_silent_agent_stalled_on_first_tick_past_threshold_not_before(tick_ms):
    last = T0 + 2_500  # its one and only event, after the supervisor first saw it
    times = [T0 + i * tick_ms for i in range(40)]
    obs = [working(last_event_ms=last if t >= last else None) for t in times]
    kinds, verdicts = run_ticks(obs, times)
    first = kinds.index("stalled")
    # exactly the first tick at or past the threshold, every earlier tick active
    assert times[first] - last >= CFG.stall_after_ms
    assert times[first - 1] - last < CFG.stall_after_ms
    assert set(kinds[:first]) == {"active"}
    ev = verdicts[first].evidence
    assert ev["silent_ms"] == times[first] - last and ev["limit_ms"] == 10_000
    assert {"cpu_delta_s", "ctx_delta", "log_bytes", "interval_ms"} <= set(ev)
    assert "silent for" in verdicts[first].summary


def test_first_sight_counts_as_activity():
    # an old event does not make an agent stalled the moment the supervisor first sees it
    # (after `orch resume` its log may have grown meanwhile): it gets one full window
    old = working(last_event_ms=T0 - 3_600_000)
    kinds, _ = run_ticks([old] * 12, [T0 + i * 1_000 for i in range(12)])
    assert kinds.index("stalled") == 10


def test_slow_agent_that_keeps_emitting_events_is_never_stalled():
    times = [T0 + i * 1_000 for i in range(200)]
    # one event every 9.5 s (just under the threshold), nothing else moving
    obs = [working(last_event_ms=T0 + (t - T0) // 9_500 * 9_500) for t in times]
    kinds, _ = run_ticks(obs, times)
    assert set(kinds) == {"active"}


def test_log_growth_counts_as_life_and_its_end_starts_the_clock():
    times = [T0 + i * 1_000 for i in range(40)]
    # the log grows for 15 s, then stops; no event after T0
    obs = [working(log_bytes=500 + 10 * min(i, 15)) for i in range(40)]
    kinds, _ = run_ticks(obs, times)
    assert kinds.index("stalled") == 15 + 10  # 10 s after the last growth, not 10 s after T0
    assert set(kinds[:25]) == {"active"}


def test_cpu_alone_extends_the_grace_but_never_forever():
    times = [T0 + i * 1_000 for i in range(60)]
    # burns half a core the whole time, emits nothing: silent but busy
    obs = [working(cpu_s=1.0 + 0.5 * i) for i in range(60)]
    kinds, verdicts = run_ticks(obs, times)
    first = kinds.index("stalled")
    assert times[first] - T0 == CFG.stall_after_ms + CFG.busy_grace_ms
    assert verdicts[first].evidence["busy"] is True


def test_cpu_that_stops_no_longer_extends():
    times = [T0 + i * 1_000 for i in range(60)]
    # busy for 5 s, then idle CPU (hung on a socket): stalled once the busy is a window old
    obs = [working(cpu_s=1.0 + 0.5 * min(i, 5)) for i in range(60)]
    kinds, _ = run_ticks(obs, times)
    assert kinds.index("stalled") == 5 + 10


def test_ctx_switches_alone_do_not_extend():
    times = [T0 + i * 1_000 for i in range(20)]
    # a sleeping poll loop: context switches every tick, no CPU, no event
    obs = [working(ctx_switches=100 + 10 * i) for i in range(20)]
    kinds, verdicts = run_ticks(obs, times)
    assert kinds.index("stalled") == 10
    assert verdicts[10].evidence["ctx_delta"] == 10


def looks(obs, cfg=CFG):
    """Judge ``obs`` as a process watched since just before its latest event."""
    _, track = judge(None, replace(obs, last_event_ms=T0 - 100, recent_steps=()), cfg, T0 - 50)
    return judge(track, obs, cfg, T0)[0]


def test_looping_needs_loop_repeats_identical_steps():
    four = working(recent_steps=("a", "b", "x", "x", "x", "x"))
    five = working(recent_steps=("a", "x", "x", "x", "x", "x"))
    broken = working(recent_steps=("x", "x", "x", "y", "x", "x"))
    assert looks(four).kind == "active"
    assert looks(broken).kind == "active"
    v = looks(five)
    assert v.kind == "looping" and v.evidence["step"] == "x" and v.evidence["repeats"] == 5
    assert v.failed and "repeated 5 times" in v.summary


def test_a_looping_agent_is_caught_although_never_silent():
    times = [T0 + i * 100 for i in range(20)]
    # one identical step per tick, each a fresh event: the window fills up, then it is a loop
    obs = [working(last_event_ms=t, recent_steps=("s",) * i) for i, t in zip(range(20), times)]
    kinds, _ = run_ticks(obs, times)
    assert kinds.index("looping") == CFG.loop_repeats
    assert set(kinds[: CFG.loop_repeats]) == {"active"}


def test_steps_of_a_predecessor_do_not_condemn_a_fresh_process():
    # first sight of a respawned process whose predecessor's loop is still in the window
    stale = working(last_event_ms=T0 - 5_000, recent_steps=("x",) * 8)
    kinds, _ = run_ticks([stale] * 5, [T0 + i * 100 for i in range(5)])
    assert set(kinds) == {"active"}
    # as soon as it emits again with the loop still there, it is judged
    v, track = judge(None, stale, CFG, T0)
    assert judge(track, replace(stale, last_event_ms=T0 + 50), CFG, T0 + 100)[0].kind == "looping"


def test_paused_agent_is_never_stalled_and_silence_counts_from_the_pause_end():
    until = T0 + 60_000  # rate limited for a minute, far beyond stall_after_ms
    times = [T0 + i * 1_000 for i in range(90)]
    obs = [working(rate_limited_until_ms=until)] * len(times)
    kinds, verdicts = run_ticks(obs, times)
    assert set(kinds[:60]) == {"paused"}
    assert verdicts[0].evidence["rate_limited_until_ms"] == until
    # the pause ended at +60 s: active again, stalled only 10 s after the end, not at once
    assert set(kinds[60:70]) == {"active"}
    assert kinds[70] == "stalled"


def test_an_expired_lease_is_death_whatever_the_process_looks_like():
    # a SIGSTOPped runner: its process is there, its lease is not
    dead, _ = judge(None, working(lease_expired=True, process_state="stopped"), CFG, T0)
    assert dead.kind == "dead" and dead.failed
    assert dead.evidence["lease_expired"] is True and dead.evidence["process_state"] == "stopped"
    assert dead.summary == "dead: lease expired (process stopped)"
    # a runner on another host: events and the lease are all there is
    kinds, _ = run_ticks([working(local=False)] * 3, [T0, T0 + 5_000, T0 + 9_999])
    assert kinds == ["active"] * 3
    remote, _ = judge(None, working(local=False, lease_expired=True), CFG, T0)
    assert remote.summary == "dead: lease expired (no local process)"
    # a process that exited is dead at once; a lapsed lease too only adds to the reason
    gone, _ = judge(None, working(alive=False, exit_code=-9, lease_expired=True), CFG, T0)
    assert gone.summary == "dead: process gone (exit code -9, lease expired)"
    # a runner that finished holds no lease worth keeping
    assert judge(None, working(alive=False, exit_code=0, finished=True, lease_expired=True), CFG, T0)[0].kind == "stopped"


def test_dead_stopped_and_idle():
    dead, _ = judge(None, working(alive=False, exit_code=-9), CFG, T0)
    assert dead.kind == "dead" and dead.evidence["exit_code"] == -9 and dead.failed
    # exited 0 without having finished is still dead: the run needed it
    assert judge(None, working(alive=False, exit_code=0), CFG, T0)[0].kind == "dead"
    stopped, _ = judge(None, working(alive=False, exit_code=0, finished=True), CFG, T0)
    assert stopped.kind == "stopped" and not stopped.failed
    # no task: idle however long it is silent
    times = [T0 + i * 5_000 for i in range(20)]
    kinds, _ = run_ticks([working(current_task=None)] * 20, times)
    assert set(kinds) == {"idle"}


def test_a_new_task_restarts_the_silence_clock():
    # idle and silent for a minute, then assigned a task: not stalled on the spot
    times = [T0 + i * 1_000 for i in range(80)]
    obs = [working(current_task=None) if i < 60 else working() for i in range(80)]
    kinds, _ = run_ticks(obs, times)
    assert set(kinds[:60]) == {"idle"}
    assert set(kinds[60:70]) == {"active"}
    assert kinds[70] == "stalled"


def test_counters_that_go_backwards_are_no_activity():
    v1, track = judge(None, working(cpu_s=50.0), CFG, T0)
    v2, _ = judge(track, replace(working(cpu_s=0.1)), CFG, T0 + 1_000)
    assert v2.evidence["cpu_delta_s"] == 0.0 and v2.evidence["busy"] is False


def test_config_defaults_backoff_and_errors_name_the_key():
    cfg = SupervisionConfig(respawn_backoff_ms=100, respawn_backoff_max_ms=1_000)
    assert [cfg.backoff_ms(n) for n in range(1, 7)] == [100, 200, 400, 800, 1_000, 1_000]
    d = SupervisionConfig()
    assert d.stall_after_ms > 0 and d.max_retries >= 1 and d.fallback_kind is None
    with pytest.raises(InputError, match=r"execution\.supervision\.stall_after_m"):
        SupervisionConfig.load({"stall_after_m": 5}, where="execution.supervision")
    with pytest.raises(InputError, match=r"supervision\.loop_repeats"):
        SupervisionConfig.load({"loop_repeats": 1})
    with pytest.raises(InputError, match="respawn_backoff_max_ms"):
        SupervisionConfig.load({"respawn_backoff_ms": 5_000, "respawn_backoff_max_ms": 10})
    assert SupervisionConfig.load({"fallback_kind": "script"}).fallback_kind == "script"
    with pytest.raises(InputError, match=r"execution\.supervision\.lease_ms: .*3000"):  # under three 1 s heartbeats
        SupervisionConfig.load({"lease_ms": 1_000}, where="execution.supervision")
    assert d.lease_ms == 30_000 and SupervisionConfig.load({"lease_ms": 3_000}).lease_ms == 3_000


# ---------------------------------------------------------------------------- agent time vs wall clock
@pytest.mark.parametrize("scale,stall_at", [(1.0, 120_000), (0.001, 5_000), (0.1, 12_000), (2.0, 240_000)])
def test_stall_window_follows_the_agents_time_scale_above_a_floor(scale, stall_at):
    cfg = SupervisionConfig()  # the defaults: 120 s of agent time, a 5 s floor
    times = [T0 + i * 1_000 for i in range(300)]
    kinds, verdicts = run_ticks([working(time_scale=scale)] * len(times), times, cfg)
    first = kinds.index("stalled")
    assert times[first] - T0 == stall_at and set(kinds[:first]) == {"active"}
    assert verdicts[first].evidence["limit_ms"] == stall_at


def test_scaled_windows_keep_a_short_configured_window_and_scale_the_busy_grace():
    cfg = SupervisionConfig(stall_after_ms=1_500, busy_grace_ms=480_000)
    assert cfg.windows(1.0) == (1_500, 480_000)
    assert cfg.windows(0.01) == (1_500, 4_800)  # never below the floor, never above what was set
    assert SupervisionConfig().windows(0.01) == (5_000, 4_800)
    # a busy time-scaled agent gets the scaled grace, not minutes of wall clock
    times = [T0 + i * 500 for i in range(40)]
    obs = [working(time_scale=0.01, cpu_s=1.0 + i) for i in range(40)]  # a core's worth of CPU, no events
    kinds, verdicts = run_ticks(obs, times, SupervisionConfig(stall_after_ms=120_000, busy_grace_ms=480_000))
    first = kinds.index("stalled")
    assert verdicts[first].evidence["busy"] is True and verdicts[first].evidence["limit_ms"] == 5_000 + 4_800


def test_kinds_on_the_time_scale_are_sim_and_replay():
    from agents.kinds import time_scaled

    assert time_scaled("sim") and time_scaled("replay")
    for wall in ("claude", "codex", "gemini", "opencode", "aider", "command", "script", "no-such-kind"):
        assert not time_scaled(wall), wall
