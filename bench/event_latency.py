"""Event latency: from an agent's event file appearing to its row committed in a real SQLite store.

A writer process emits events at a steady rate through ``agents.events.EventWriter`` (Maildir
delivery: temp file, then link into place). It notes the monotonic time right after each file
got its final name and hands the list over when done. The watcher runs in this process with its
real inotify observer and ingests into ``sqlite:///<tmp>/orch.db``; the time a row is in the
store is taken right after the ``append_events`` call that committed it returns.
CLOCK_MONOTONIC is system-wide on Linux, so the two processes' clocks compare.

Baselines, measured in the same run:
* raw: first, alone (so it does not compete with what it is compared to), a bare watchdog
  observer on a directory the same writer fills: time until it reports the final name -- the
  floor any inotify-based watcher pays on this machine;
* emit: latency counted from the start of ``emit()`` instead (adds the writer's own file
  creation, which is slow on some virtual disks).

    python bench/event_latency.py [--events N] [--rate PER_S]

Prints p50/p99 (ms) and a final JSON line: events, p50_ms, p99_ms, ratio (p99 / the 20 ms
target; <= 1 is on target), plus the baselines. Not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_P99_MS = 20.0  # the design target: an event is in the store within 20 ms (p99)
AGENT = "bench-writer"


def writer(events_dir: str, n: int, rate: float) -> None:
    """Writer process: emit n events at ``rate``/s; print {seq: link time ns} as JSON at the end."""
    from agents.events import EventWriter, parse_event_name

    linked: dict[int, int] = {}
    real_link = os.link

    def timed_link(src, dst, *a, **kw):  # the moment the final name exists
        real_link(src, dst, *a, **kw)
        linked[parse_event_name(os.path.basename(dst))] = time.monotonic_ns()

    os.link = timed_link
    w = EventWriter(events_dir, AGENT)
    start = time.monotonic()
    for i in range(n):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        w.emit("step", name="bench", i=i, t_ns=time.monotonic_ns())
    print(json.dumps(linked))


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    return sorted_values[max(0, math.ceil(p / 100 * len(sorted_values)) - 1)]


def summary(values: list[float]) -> dict[str, float]:
    v = sorted(values)
    return {"p50": percentile(v, 50), "p90": percentile(v, 90), "p99": percentile(v, 99), "max": v[-1]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=2000, help="events to write (default 2000)")
    ap.add_argument("--rate", type=float, default=200.0, help="events per second (default 200)")
    ap.add_argument("--writer", nargs=3, metavar=("DIR", "N", "RATE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.writer:
        writer(args.writer[0], int(args.writer[1]), float(args.writer[2]))
        return 0

    from watchdog.events import FileCreatedEvent, FileSystemEventHandler
    from watchdog.observers import Observer

    from agents.events import parse_event_name
    from coordstore import open_store
    from coordstore.models import Run
    from orchestrator.runs.watcher import EventWatcher

    def start_writer(agent_dir: Path) -> subprocess.Popen:
        argv = [sys.executable, __file__, "--writer", str(agent_dir), str(args.events), str(args.rate)]
        return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)

    def link_times(proc: subprocess.Popen) -> dict[int, int]:
        out, _ = proc.communicate(timeout=args.events / args.rate + 60)
        return {int(k): v for k, v in json.loads(out or "{}").items()}

    ms = 1e6
    with tempfile.TemporaryDirectory(prefix="orch-bench-") as tmp:
        # phase 1, the raw baseline: a bare watchdog observer, nothing else in this process
        raw_seen: dict[int, int] = {}

        class Raw(FileSystemEventHandler):
            def on_created(self, event) -> None:
                seq = parse_event_name(os.path.basename(event.src_path))
                if seq is not None:
                    raw_seen.setdefault(seq, time.monotonic_ns())

        raw_dir = Path(tmp) / "raw" / AGENT
        raw_dir.mkdir(parents=True)
        raw = Observer()
        raw.schedule(Raw(), str(raw_dir), event_filter=[FileCreatedEvent])
        raw.start()
        try:
            raw_linked = link_times(start_writer(raw_dir))
            time.sleep(0.2)  # the last notifications
        finally:
            raw.stop()
            raw.join()
        raw_s = summary([(raw_seen[s] - raw_linked[s]) / ms for s in raw_linked if s in raw_seen])

        # phase 2: the watcher ingesting into a real SQLite store
        committed: dict[int, int] = {}  # seq -> ns when its row was committed
        emitted: dict[int, int] = {}  # seq -> ns when emit() started (from the event itself)

        def ingested(batch: list) -> None:
            now = time.monotonic_ns()
            for e in batch:
                committed[e.seq] = now
                if "t_ns" in e.data:
                    emitted[e.seq] = e.data["t_ns"]

        root = Path(tmp) / "events"
        store = open_store(f"sqlite:///{tmp}/orch.db")
        store.create_run(Run(id="bench"))
        watcher = EventWatcher(root, store, "bench", on_ingested=ingested)
        watcher.start()
        if watcher.observer_error:
            print(f"warning: no inotify, polling: {watcher.observer_error}", file=sys.stderr)
        proc = start_writer(root / AGENT)
        deadline = time.monotonic() + args.events / args.rate + 30
        polls = 0
        try:
            while len(committed) < args.events and time.monotonic() < deadline:
                watcher.wait(0.5)
                watcher.poll()
                polls += 1
        finally:
            watcher.stop()
            linked = link_times(proc)
            store.close()
    seqs = [s for s in committed if s in linked]
    if not seqs:
        print("no events ingested", file=sys.stderr)
        return 1
    main_s = summary([(committed[s] - linked[s]) / ms for s in seqs])
    emit_s = summary([(committed[s] - emitted[s]) / ms for s in seqs if s in emitted])

    def line(name: str, st: dict[str, float]) -> str:
        return f"{name:<34} p50 {st['p50']:7.2f}  p90 {st['p90']:7.2f}  p99 {st['p99']:7.2f}  max {st['max']:7.2f}"

    print(f"events ingested: {len(seqs)}/{args.events} at {args.rate:g}/s in {polls} polls")
    print(line("file linked -> row in store (ms)", main_s))
    print(line("raw watchdog notify (ms)", raw_s))
    print(line("emit() start -> row in store (ms)", emit_s))
    print(f"target p99 <= {TARGET_P99_MS:g} ms; ratio {main_s['p99'] / TARGET_P99_MS:.3f}")
    result = {
        "events": len(seqs),
        "p50_ms": round(main_s["p50"], 3),
        "p99_ms": round(main_s["p99"], 3),
        "ratio": round(main_s["p99"] / TARGET_P99_MS, 3),
        "raw_notify_p99_ms": round(raw_s["p99"], 3),
        "from_emit_p99_ms": round(emit_s["p99"], 3),
    }
    print(json.dumps(result))
    return 0 if len(seqs) == args.events else 1


if __name__ == "__main__":
    sys.exit(main())
