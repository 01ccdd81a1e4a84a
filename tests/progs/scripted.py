"""Test agent: emits started, a few steps (with tokens and a file change), then done; exits 0.

usage: scripted.py EVENTS_DIR AGENT [--task T] [--steps N] [--delay S] [--code C]
"""

import argparse
import sys
import time

from agents.events import EventWriter


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("events_dir")
    ap.add_argument("agent")
    ap.add_argument("--task", default=None)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--delay", type=float, default=0.0, help="seconds between events")
    ap.add_argument("--code", type=int, default=0, help="exit code after done")
    a = ap.parse_args()
    w = EventWriter(a.events_dir, a.agent)
    w.started(task=a.task, kind="scripted")
    print(f"{a.agent}: started", flush=True)
    for i in range(a.steps):
        time.sleep(a.delay)
        w.step(f"step-{i}", {"i": i}, task=a.task)
        print(f"{a.agent}: step {i}", flush=True)
    w.file_changed("README.md", task=a.task)
    w.tokens(task=a.task, tokens_in=100 * a.steps, tokens_out=10 * a.steps, cost_usd=0.001 * a.steps)
    w.done(task=a.task)
    return a.code


if __name__ == "__main__":
    sys.exit(main())
