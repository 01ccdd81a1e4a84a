"""Supervision: is every agent alive and making progress, and what to do when one is not.

The story: ``control`` spawns each runner in its own process group and observes it (``procs``:
pid + create time, CPU, log growth; ``observe``: its ingested events and task). The supervisor's
``tick(now)`` judges every agent from that evidence (``verdicts``, pure: active, idle, stalled,
looping, dead) and climbs the ladder for a failing one: kill the process group, requeue its task
with attempt + 1, respawn with backoff, fall back to another kind, degrade to one agent.
``interrupts`` turns Ctrl-C, SIGTERM and SIGHUP into a clean stop that leaves the run resumable.
"""
