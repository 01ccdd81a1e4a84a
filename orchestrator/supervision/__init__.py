"""Supervision: is every agent alive and making progress, and what to do when one is not.

The story: liveness is the store's lease. Every runner, on this host or another, renews it each
second; the supervisor's ``tick(now)`` first has the store reap the leases that ran out
(``reap_expired``: the agent is ``dead``, its tasks requeued with a row naming the lease). Then it
judges every agent (``verdicts``, pure: active, idle, paused, stalled, looping, dead) from the
evidence ``observe`` gathers -- its ingested events and task, and where its process is local
(``control`` spawned it, ``procs`` knows it by pid + create time) the process state, CPU and log
growth. That evidence explains a verdict and catches a crash before the lease runs out; it never
keeps alive an agent whose lease expired. For a failing agent it climbs the ladder: kill the
process group, requeue its task (attempt + 1 on the next claim), respawn with backoff, fall back
to another kind, degrade to one agent. Time is the ``now`` each tick is given (``coordstore.clock``).
``interrupts`` turns Ctrl-C, SIGTERM and SIGHUP into a clean stop that leaves the run resumable.
"""
