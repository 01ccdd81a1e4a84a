"""A simulated model provider with a capacity: what makes a sim agent's 429s depend on load.

A real provider refuses requests beyond what it serves at once; so does this one. Every sim agent
of the run on this machine that names the same ``provider`` shares one state file
(``<shared dir>/<provider>.json``, under a file lock): the sessions in flight, one per task
attempt being worked on. A task's model work opens a session; with ``capacity`` sessions open
already, the provider answers 429 (the agent waits as its back-pressure says, then asks again).
The fewer agents ask at once, the fewer 429s: shared back-pressure has something to act on.

What it does is recorded: each answer's counts (admitted, refused) stay in the file, and the sim
logs every refusal with the sessions in flight. Sessions of processes that are gone (a crash, a
kill) are dropped on the next look. Which request is refused depends on the agents' timing, so
the 429 count of a seed varies a little from run to run; the plans (durations, tokens) do not.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import filelock

from coordstore.paths import path_component
from coordstore.private import write_private


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SimProvider:
    def __init__(self, shared_dir: Path, provider: str, capacity: int):
        self.path = Path(shared_dir) / f"{path_component(provider, 'provider')}.json"
        self.capacity = capacity
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock = filelock.FileLock(str(self.path) + ".lock")

    def _load(self) -> dict:
        try:
            state = json.loads(self.path.read_text())
        except FileNotFoundError:
            state = {}
        state.setdefault("sessions", {})
        state.setdefault("admitted", 0)
        state.setdefault("refused", 0)
        return state

    def _save(self, state: dict) -> None:
        write_private(self.path, json.dumps(state, sort_keys=True))

    def open(self, session: str) -> tuple[bool, int]:
        """(admitted, sessions in flight before this one): a 429 when the provider is full."""
        with self._lock:
            state = self._load()
            sessions = {k: v for k, v in state["sessions"].items() if _alive(int(v))}
            busy = len(sessions)
            ok = session in sessions or busy < self.capacity
            if ok:
                sessions[session] = os.getpid()
                state["admitted"] += 1
            else:
                state["refused"] += 1
            state["sessions"] = sessions
            self._save(state)
            return ok, busy

    def close(self, session: str) -> None:
        with self._lock:
            state = self._load()
            if state["sessions"].pop(session, None) is not None:
                self._save(state)

    def counts(self) -> dict:
        with self._lock:
            state = self._load()
        return {"admitted": state["admitted"], "refused": state["refused"], "in_flight": len(state["sessions"])}
