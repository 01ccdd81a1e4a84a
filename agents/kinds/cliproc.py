"""One running CLI agent process, shared by the ``command`` kind (one process per task) and the CLI
players of agent-driven variants (one process for a whole role session, ``agents.kinds.cliplay``).

``CliProcess`` starts the CLI in the runner's process group, reads its stdout and stderr line by
line in two threads (a pipe a leftover child holds must not block the runner) and hands each line
to the preset's parser: ``read(wait_s)`` returns the ``CliEvent``s of what the CLI printed since
the last read. The caller keeps its own rhythm between reads (renewing its lease, a deadline, the
run's end) and ends with ``finish()`` (the exit status and the parser's last word) or ``stop()``.
``write_events`` writes parsed events as the agent's orch events.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from coordstore.errors import AgentError
from coordstore.models import USAGE_KEYS

from agents.clis.base import CliEvent, Parser
from agents.kinds import output_tail

POLL_S = 0.05  # how long a read waits for a first line while the CLI is quiet
EXIT_GRACE_S = 2.0  # after the CLI exits, how long to wait for its pipes to close (a child may hold them)
TAIL_LINES = 200  # lines of each output stream kept for a failure reason
READ_MAX_LINES = 500  # lines one read takes at most, so its caller gets back to its lease in time
STOP_GRACE_S = 3.0  # SIGTERM -> SIGKILL when a CLI is stopped


class CliProcess:
    def __init__(self, argv: list[str], cwd: str | Path, env: dict[str, str], parser: Parser,
                 stdin_file: Path | None = None, kind: str = "command"):
        self.name = Path(argv[0]).name
        self.parser = parser
        self.tails: dict[bool, list[str]] = {False: [], True: []}  # stdout / stderr lines kept for a reason
        self.returncode: int | None = None
        with open(stdin_file or os.devnull, "rb") as stdin:
            try:
                self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=stdin, stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE)
            except OSError as e:
                raise AgentError(f"agent kind {kind!r}: cannot run {argv[0]}: {e.strerror or e}") from e
        self.pid = self.proc.pid
        self._lines: queue.Queue = queue.Queue()
        self._open_streams = 2
        self._exited_at: float | None = None
        for is_err, stream in ((False, self.proc.stdout), (True, self.proc.stderr)):
            threading.Thread(target=_pump, args=(stream, is_err, self._lines), daemon=True).start()

    def read(self, wait_s: float = POLL_S) -> list[CliEvent]:
        """The events of the lines the CLI printed since the last read, waiting up to ``wait_s``
        for the first one."""
        out: list[CliEvent] = []
        wait: float | None = wait_s
        for _ in range(READ_MAX_LINES):
            try:
                is_err, line = self._lines.get(timeout=wait) if wait else self._lines.get_nowait()
            except queue.Empty:
                break
            wait = None  # the rest: only what is there already
            if line is None:
                self._open_streams -= 1
                continue
            tail = self.tails[is_err]
            tail.append(line)
            del tail[:-TAIL_LINES]
            out += self.parser.feed_stderr(line) if is_err else self.parser.feed(line)
        if self.proc.poll() is not None and self._exited_at is None:
            self._exited_at = time.monotonic()
        return out

    @property
    def over(self) -> bool:
        """Its output is read to the end: both streams closed, or it exited and a leftover child
        has held a pipe for ``EXIT_GRACE_S`` (stop reading)."""
        if not self._open_streams:
            return True
        return self._exited_at is not None and time.monotonic() - self._exited_at > EXIT_GRACE_S

    def alive(self) -> bool:
        return self.proc.poll() is None

    def finish(self) -> list[CliEvent]:
        """Reap it; the parser's last events (it decides now whether the run failed)."""
        self.returncode = self.proc.wait()
        return self.parser.finish(self.returncode)

    def failure(self) -> str | None:
        """Why it failed (after ``finish``): the parser's word, else a non-zero exit with the end
        of its output; None when it succeeded."""
        rc = self.returncode
        if rc == 0 and self.parser.failure is None:
            return None
        return self.parser.failure or f"{self.name} exited {rc}: {output_tail(self.stderr or self.stdout) or '(no output)'}"

    @property
    def stdout(self) -> str:
        return "".join(self.tails[False])

    @property
    def stderr(self) -> str:
        return "".join(self.tails[True])

    def kill(self) -> None:
        """Kill it and every process it started (its tool calls), at once, and reap it."""
        _signal(_family(self.proc), signal.SIGKILL)
        self.proc.wait()

    def stop(self, grace_s: float = STOP_GRACE_S) -> list[CliEvent]:
        """Ask it to end (SIGTERM to it and its children), kill what is left after ``grace_s``; the
        events of everything it printed, the parser's last ones included."""
        out: list[CliEvent] = []
        family = _family(self.proc)  # while it runs: an exited CLI's children are no longer its own
        if self.alive():
            _signal(family, signal.SIGTERM)
            end = time.monotonic() + grace_s
            while self.alive() and time.monotonic() < end:
                out += self.read()
        _signal(family, signal.SIGKILL)  # whatever did not listen, children that outlived it too
        while not self.over:  # the rest of its output, up to the end of its streams
            out += self.read()
        return out + self.finish()


def _pump(stream, is_err: bool, lines: queue.Queue) -> None:
    """Reader thread: one of the CLI's output streams, line by line, then None at its end.
    The thread owns the stream and closes it (a pipe a leftover child holds stays open)."""
    try:
        for raw in iter(stream.readline, b""):
            lines.put((is_err, raw.decode("utf-8", errors="replace")))
    except (OSError, ValueError):
        pass
    finally:
        stream.close()
    lines.put((is_err, None))


def _family(proc: subprocess.Popen) -> list:
    """The CLI's descendants, then the CLI itself (``psutil`` processes)."""
    import psutil  # lazy: the runner's start-up; psutil only to stop a CLI's process tree

    try:
        me = psutil.Process(proc.pid)
        return [*me.children(recursive=True), me]
    except psutil.Error:
        return []


def _signal(family: list, sig: int) -> None:
    import psutil  # lazy: the runner's start-up; psutil only to stop a CLI's process tree

    for p in family:
        try:
            if p.is_running():  # the same process (pid and start time), not a reused pid
                p.send_signal(sig)
        except psutil.Error:
            pass


def write_events(events: list[CliEvent], ev, task: str | None, totals: dict[str, Any], cost_of) -> None:
    """Write parsed CLI events as the agent's orch events about ``task``; token counts are added
    to ``totals``, priced with ``cost_of(counts)`` when the CLI reports no cost. A step's data
    beyond its name and arguments (``tool``, ``poll``) is kept."""
    for e in events:
        d = e.data
        if e.type == "step":
            ev.step(d["name"], args=d.get("args"), task=task, **{k: v for k, v in d.items() if k not in ("name", "args")})
        elif e.type == "tokens":
            cost = d.get("cost_usd")
            if cost is None:
                cost = cost_of(d) or 0.0
            more = {k: int(d[k]) for k in USAGE_KEYS[4:] if d.get(k)}  # image/audio/free slots, when a parser gives them
            ev.tokens(task=task, tokens_in=d["in"], tokens_out=d["out"], cached=d["cached"], thinking=d["thinking"],
                      cost_usd=cost, **more)
            for k, n in {"in": d["in"], "out": d["out"], "cached": d["cached"], "thinking": d["thinking"], **more}.items():
                totals[k] = totals.get(k, 0) + n
            totals["cost_usd"] = totals.get("cost_usd", 0.0) + cost
        elif e.type == "rate_limited":
            ev.rate_limited(d["retry_after"], task=task)
        elif e.type == "error":
            ev.error(d["msg"], task=task)
        else:
            ev.log(d.get("msg", ""), level=d.get("level", "info"), task=task)
