"""The run's coordination server as a child of the orchestrator, for agent-driven variants:
``python -m orchestrator.coordination --run-dir DIR --port 0``, started before the runners and
stopped after them; a resumed run starts a new one (a new port, the same tokens).

It runs in a session of its own, like a runner (``supervision.procs.spawn``), its output appended
to ``logs/orch-mcp.out.log`` / ``.err.log`` -- files, not pipes: a pipe nobody reads would block the
server once full. The first line it prints, ``listening <url>``, says where it is. Its process is
recorded in ``<run dir>/orch-mcp.pid`` (pid and start time): an orchestrator that died leaves its
server running for the runners that outlive it; the resume that starts the next one stops that one
first, and without a resume it stops itself once the run is over (``coordination.orphan``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from coordstore.errors import AgentError
from coordstore.private import write_private

from orchestrator.rundir import RunPaths
from orchestrator.supervision.procs import AgentProcess, spawn

LABEL = "orch-mcp"  # its log files' name
START_TIMEOUT_S = 60.0  # a cold start imports the SDK and opens the store: seconds, not minutes
POLL_S = 0.02
STOP_GRACE_S = 3.0


class ToolServer:
    def __init__(self, paths: RunPaths):
        self.paths = paths
        self.proc: AgentProcess | None = None
        self.url: str | None = None

    @property
    def out_log(self) -> Path:
        return self.paths.logs / f"{LABEL}.out.log"

    @property
    def err_log(self) -> Path:
        return self.paths.logs / f"{LABEL}.err.log"

    @property
    def pidfile(self) -> Path:
        return self.paths.root / f"{LABEL}.pid"

    def _stop_previous(self) -> None:
        """The server of an orchestrator that died, if it still runs (same pid and start time)."""
        try:
            rec = json.loads(self.pidfile.read_text())
        except (OSError, ValueError):
            return
        old = AgentProcess.attach(rec.get("pid"), rec.get("create_time"), LABEL) if isinstance(rec, dict) else None
        if old is not None:
            old.stop(grace_s=STOP_GRACE_S)

    def start(self, timeout_s: float = START_TIMEOUT_S) -> str:
        """Start the server and return its URL once it listens; ``AgentError`` with the end of its
        stderr when it exits or stays silent instead."""
        self._stop_previous()
        offset = self.out_log.stat().st_size if self.out_log.exists() else 0  # a resume appends
        here = str(Path(__file__).resolve().parents[2])  # orch's own code, whatever the cwd
        env = {"PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH", "")]))}
        argv = [sys.executable, "-m", "orchestrator.coordination", "--run-dir", str(self.paths.root), "--port", "0",
                "--parent-pid", str(os.getpid())]  # stops itself once this orchestrator is gone and the run over
        self.proc = spawn(argv, LABEL, env, self.paths.root, self.paths.logs)
        write_private(self.pidfile, json.dumps({"pid": self.proc.pid, "create_time": self.proc.create_time}) + "\n")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            url = self._listening(offset)
            if url:
                self.url = url
                return url
            if not self.proc.alive():
                raise AgentError(f"the coordination server exited ({self.proc.returncode}) before listening: {self._err_tail()}")
            time.sleep(POLL_S)
        self.stop()
        raise AgentError(f"the coordination server did not say where it listens within {timeout_s:.0f} s: {self._err_tail()}")

    def _listening(self, offset: int) -> str | None:
        try:
            with open(self.out_log, "rb") as f:
                f.seek(offset)
                text = f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return None
        for line in text.splitlines():
            if line.startswith("listening "):
                return line.split(" ", 1)[1].strip()
        return None

    def _err_tail(self) -> str:
        try:
            lines = self.err_log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no output)"
        return " | ".join(lines[-3:]) or "(no output)"

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL after a grace). Idempotent."""
        if self.proc is not None:
            self.proc.stop(grace_s=STOP_GRACE_S)
            self.proc = None
            self.pidfile.unlink(missing_ok=True)
