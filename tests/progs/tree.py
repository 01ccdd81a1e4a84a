"""Test agent for process supervision: leader -> child (same group) -> grandchild that escapes
with setsid() and ignores SIGTERM. Each writes its pid to PIDS_DIR/<role> then sleeps.

usage: tree.py PIDS_DIR [--child-exits]   (--child-exits: the child exits once PIDS_DIR/go
                                            exists, orphaning the grandchild)
"""

import os
import signal
import sys
import time


def record(pids_dir: str, role: str) -> None:
    tmp = os.path.join(pids_dir, f".{role}")
    with open(tmp, "w") as f:
        f.write(str(os.getpid()))
    os.rename(tmp, os.path.join(pids_dir, role))


def sleep_forever() -> None:
    while True:
        time.sleep(3600)


def main() -> None:
    pids_dir = sys.argv[1]
    child_exits = "--child-exits" in sys.argv
    if os.fork() == 0:  # child: same process group as the leader
        if os.fork() == 0:  # grandchild: escapes the group and shrugs off SIGTERM
            os.setsid()
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            record(pids_dir, "grandchild")
            sleep_forever()
        record(pids_dir, "child")
        if child_exits:
            while not os.path.exists(os.path.join(pids_dir, "go")):
                time.sleep(0.01)
            os._exit(0)
        sleep_forever()
    record(pids_dir, "leader")
    sleep_forever()


if __name__ == "__main__":
    main()
