"""`orch watch`: a live view of a run, refreshed from the STORE (never from orchestrator memory), so
it works from another terminal, during a run and after a resume.

``Watch.refresh(now)`` is one step (read what changed since the last step, incrementally);
``render(view)`` turns the result into rich renderables; ``watch_run`` loops until the run ends.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from coordstore.base import CoordStore
from coordstore.clock import wall_clock_ms
from coordstore.models import ACTIVE, FAILURES, TERMINAL, Transition

from orchestrator.supervision.supervisor import DEGRADED
from orchestrator.views.runinfo import CERTAIN_EVIDENCE, RunRef, latest_verdicts, liveness

RECENT_ROWS = 8  # history lines shown: enough to follow a run, short enough for one screen
# without an orchestrator pid file, liveness is judged from runner processes, which can all be
# gone for a moment between a crash and the supervisor's next tick: confirm an end this long
CONFIRM_END_S = 2.0
# failing verdicts, a killed agent, a failed task, a merge conflict, a degraded run
PROBLEM_STATES = FAILURES | {"killed", "failed", "conflict", DEGRADED}
VERDICT_STYLE = {"active": "green", "idle": "dim", "stalled": "yellow", "looping": "yellow", "dead": "red", "killed": "red", "stopped": "dim"}


def _row_text(r: Transition, origin: int) -> str:
    who = f" {r.agent}" if r.agent and r.agent != r.entity_id else ""
    why = f"  ({r.reason})" if r.reason and r.reason != r.to_state else ""
    return f"+{(r.ts_ms - origin) / 1000:7.2f}s {r.entity:6} {r.entity_id} {r.from_state or '-'} -> {r.to_state}{who}{why}"


class Watch:
    """The incremental state of one watcher: history and event cursors, counters, latest steps."""

    def __init__(self, ref: RunRef, store: CoordStore):
        self.ref, self.store = ref, store
        self.seq = 0
        self.origin: int | None = None
        self.recent: deque[Transition] = deque(maxlen=RECENT_ROWS)
        self.verdicts: dict[str, Transition] = {}
        self.counts: Counter[str] = Counter()
        self.event_seq: dict[str, int] = {}
        self.last_step: dict[str, str] = {}
        self.last_event_ms: dict[str, int] = {}

    def _ingest_history(self) -> None:
        rows = self.store.history(self.ref.run_id, since_seq=self.seq)
        if rows and self.origin is None:
            self.origin = rows[0].ts_ms
        for r in rows:
            self.seq = r.seq
            if r.entity == "claim" and r.to_state == "empty":
                continue  # idle polling, not news
            self.recent.append(r)
            if r.entity == "agent" and r.to_state in FAILURES and not r.is_note:
                self.counts[r.to_state] += 1
            if r.is_requeue:
                self.counts["retries"] += 1
            if r.entity == "merge" and r.to_state == "conflict":
                self.counts["conflicts"] += 1
        self.verdicts.update(latest_verdicts(rows))

    def _ingest_events(self, agents: list[str]) -> None:
        for a in agents:
            for e in self.store.read_events(self.ref.run_id, agent=a, since_seq=self.event_seq.get(a, -1)):
                self.event_seq[a] = e.seq
                self.last_event_ms[a] = e.ts_ms
                if e.type == "step":
                    self.last_step[a] = str(e.data.get("name") or "step")
                elif e.type in ("error", "rate_limited", "done", "started"):
                    self.last_step[a] = e.type

    def refresh(self, now: int | None = None) -> dict[str, Any]:
        """Read what changed and return the view (plain data: tests and ``render`` use it)."""
        now = now or wall_clock_ms()
        run = self.store.get_run(self.ref.run_id)
        status, evidence = liveness(self.ref, self.store, run, now)
        self._ingest_history()
        records = {a.id: a for a in self.store.list_agents(self.ref.run_id)}
        ids = [*(a.id for a in self.ref.spec.agents), *sorted(set(records) - set(self.ref.agent_ids()))]
        self._ingest_events(ids)
        tasks = self.store.list_tasks(self.ref.run_id)
        working = {t.owner: t.id for t in tasks if t.owner and t.status in ACTIVE}
        agents = []
        for a in ids:
            v = self.verdicts.get(a)
            seen = self.last_event_ms.get(a)
            agents.append({"id": a, "verdict": v.to_state if v else (records[a].status if a in records else "-"),
                           "task": working.get(a), "step": self.last_step.get(a),
                           "event_age_ms": None if seen is None else now - seen})
        return {
            "run_id": self.ref.run_id, "status": status, "evidence": evidence,
            "done": sum(t.status in TERMINAL for t in tasks), "total": len(tasks),
            "by_status": dict(Counter(t.status for t in tasks)), "agents": agents,
            "recent": [_row_text(r, self.origin or r.ts_ms) for r in self.recent],
            "problems": [r.to_state in PROBLEM_STATES or r.data.get("action") in PROBLEM_STATES or r.is_requeue
                         for r in self.recent],
            "counts": dict(self.counts),
        }


def _age(ms: int | None) -> str:
    return "-" if ms is None else f"{ms / 1000:.1f}s ago"


def render(view: dict[str, Any]) -> Group:
    done, total = view["done"], view["total"]
    title = Text(f"{view['run_id']}  ", style="bold") + Text(view["status"], style="bold green" if view["status"] == "running" else "bold")
    bar = Table.grid(padding=(0, 1))
    bar.add_row(ProgressBar(total=max(total, 1), completed=done, width=30),
                Text(f"tasks {done}/{total}  " + " ".join(f"{k} {v}" for k, v in sorted(view["by_status"].items()))))
    c = view["counts"]
    counters = Text(f"stalls {c.get('stalled', 0)}  loops {c.get('looping', 0)}  deaths {c.get('dead', 0)}  "
                    f"retries {c.get('retries', 0)}  conflicts {c.get('conflicts', 0)}")
    head = Group(title, bar, counters)
    agents = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("agent", "verdict", "task", "latest step", "last event"):
        agents.add_column(col)
    for a in view["agents"]:
        agents.add_row(a["id"], Text(a["verdict"], style=VERDICT_STYLE.get(a["verdict"], "")), a["task"] or "-",
                       a["step"] or "-", _age(a["event_age_ms"]))
    recent = Text("\n").join(Text(line, style="yellow" if bad else "") for line, bad in zip(view["recent"], view["problems"]))
    return Group(head, Text(""), agents, Text(""), Text("latest", style="bold"), recent)


def watch_run(ref: RunRef, interval: float, console: Console | None = None) -> dict[str, Any]:
    """Show the live view until the run is no longer running; return the last view."""
    console = console or Console()
    ended_since: float | None = None
    with ref.open_store() as store:
        w = Watch(ref, store)
        view = w.refresh()
        with Live(render(view), console=console, auto_refresh=False, transient=False) as live:
            while True:
                if view["status"] != "running":
                    ended_since = ended_since or time.monotonic()
                    confirmed = view["evidence"].startswith(CERTAIN_EVIDENCE)
                    if confirmed or time.monotonic() - ended_since >= CONFIRM_END_S:
                        break
                else:
                    ended_since = None
                time.sleep(interval)
                view = w.refresh()
                live.update(render(view), refresh=True)
    return view
