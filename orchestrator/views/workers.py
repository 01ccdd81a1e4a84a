"""`orch workers`: the workers that took agents of external runs, read from the store alone.

A worker leaves no record of its own (no store verb for it): it is known by the agents it
registered (``Agent.meta``: worker, host, pid, slots, gen) and their runners' heartbeats, so a
worker that never took an agent is not listed.
"""

from __future__ import annotations

from coordstore import open_store
from coordstore.models import SETTLED


def list_workers(url: str) -> list[dict]:
    with open_store(url, readonly=True) as store:
        now = store.clock()
        out: dict[str, dict] = {}
        for run in store.list_runs():
            if run.config.get("workers") != "external":
                continue
            for a in store.list_agents(run.id):
                w = a.meta.get("worker")
                if not w:
                    continue
                row = out.setdefault(w, {"worker": w, "host": a.meta.get("host"), "pid": a.meta.get("pid"),
                                         "slots": a.meta.get("slots"), "tags": a.meta.get("tags"), "runs": [], "held": [],
                                         "last_seen_ms": 0})
                if run.id not in row["runs"]:
                    row["runs"].append(run.id)
                if run.status == "running" and a.status not in SETTLED:
                    row["held"].append(f"{run.id}/{a.id}")
                row["last_seen_ms"] = max(row["last_seen_ms"], a.last_heartbeat or 0)
    rows = sorted(out.values(), key=lambda r: -r["last_seen_ms"])
    for r in rows:
        r["last_seen_s_ago"] = max(0.0, (now - r["last_seen_ms"]) / 1000)
    return rows
