"""Test agent: emits started, then the same step (same name, same arguments) forever.

usage: looper.py EVENTS_DIR AGENT [--task T] [--interval S] [--max N]
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
    ap.add_argument("--interval", type=float, default=0.05, help="seconds between steps")
    ap.add_argument("--max", type=int, default=0, help="stop after N steps (0: never)")
    a = ap.parse_args()
    w = EventWriter(a.events_dir, a.agent)
    w.started(task=a.task, kind="looper")
    n = 0
    while not a.max or n < a.max:
        w.step("read_file", {"path": "main.py"}, task=a.task)
        n += 1
        time.sleep(a.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
