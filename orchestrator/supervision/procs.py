"""Agent processes: spawn them, observe them, stop them -- the whole tree, no survivor, no zombie.

Each runner gets its own session and process group (``start_new_session=True``), so one
``killpg`` reaches everything it started -- except descendants that called ``setsid`` themselves.
Those are found through the process tree (psutil ``children(recursive=True)``), taken before any
signal is sent, and every descendant ever seen by ``stats()`` is remembered for the same reason.

A process is identified by (pid, psutil ``create_time``): a recorded pid whose create time no
longer matches belongs to someone else and is never signalled. That is also how a restarted
orchestrator re-attaches to the runners of the previous one (``AgentProcess.attach``), and the
one way anything tells whether a recorded process still runs (``process_alive``).

Zombies: the orchestrator makes itself a *child subreaper* (Linux ``PR_SET_CHILD_SUBREAPER``) on
its first spawn, so an agent's orphaned descendants are re-parented to it rather than to PID 1
(which, in some containers, never reaps) -- and ``stop()`` reaps each one it killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from coordstore.errors import AgentError
from coordstore.private import open_private, private_dir

from orchestrator.supervision.proctree import CREATE_TIME_TOLERANCE_S, descendants

STOP_GRACE_S = 5.0  # SIGTERM -> SIGKILL: long enough for a runner to write its last event
KILL_WAIT_S = 2.0  # after SIGKILL the kernel needs only moments; longer means something is wrong
POLL_S = 0.01  # how often stop() looks again while waiting for the tree to go
_PR_SET_CHILD_SUBREAPER = 36
_subreaper: bool | None = None
def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux; idempotent).

    Returns whether it is one. Without it, a killed runner's escaped children are re-parented
    to PID 1 and may stay zombies forever where PID 1 does not reap.
    """
    global _subreaper
    if _subreaper is None:
        _subreaper = False
        if sys.platform.startswith("linux"):
            try:
                import ctypes  # lazy: `orch`'s start-up (every command loads this module); only for the subreaper

                libc = ctypes.CDLL(None, use_errno=True)
                _subreaper = libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
            except (OSError, AttributeError):
                _subreaper = False
    return _subreaper


def reap_orphans(sessions: Collection[int]) -> list[int]:
    """Reap zombie children of this process that belong to one of ``sessions`` (agents' session
    ids = their leaders' pids): descendants of agents re-parented to us as their subreaper.
    The leaders themselves and our other subprocesses (other sessions) are left to their owners.
    Returns the reaped pids; cheap enough to call once per supervisor tick."""
    reaped = []
    for child in psutil.Process().children():
        try:
            if child.pid in sessions or child.status() != psutil.STATUS_ZOMBIE or os.getsid(child.pid) not in sessions:
                continue
            pid, _ = os.waitpid(child.pid, os.WNOHANG)
        except (psutil.Error, OSError):
            continue
        if pid:
            reaped.append(pid)
    return reaped


def process_alive(pid: int | None, create_time: float | None) -> bool:
    """Whether the process recorded as (pid, create_time) still runs: the one test of a recorded
    process's liveness (a reused pid or a zombie is not alive). `runs`, `status`, `clean` and
    `resume` ask it of a run's orchestrator and runners; re-attaching is ``AgentProcess.attach``."""
    return AgentProcess.attach(pid, create_time) is not None


@dataclass(frozen=True)
class ProcStats:
    """Counters summed over a runner's process tree (monotonic while the tree lives)."""

    cpu_s: float  # user + system, including children already reaped inside the tree
    ctx_voluntary: int  # blocking waits: a runner that does anything at all makes these
    ctx_involuntary: int
    nprocs: int  # processes counted (leader + live descendants)


def _same(proc: psutil.Process, create_time: float) -> bool:
    try:
        return abs(proc.create_time() - create_time) <= CREATE_TIME_TOLERANCE_S
    except psutil.Error:
        return False


def _gone(proc: psutil.Process, reap: bool = True) -> bool:
    """True once ``proc`` (identified by pid + create_time) no longer runs; reaps it (``reap``)
    if it is a zombie child of ours (we are its parent or its subreaper)."""
    try:
        if not proc.is_running():  # gone, or the pid now belongs to someone else
            return True
        if proc.status() != psutil.STATUS_ZOMBIE:
            return False
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False
    if reap:
        try:
            os.waitpid(proc.pid, os.WNOHANG)
        except ChildProcessError:
            pass  # not ours to reap; a zombie is dead all the same
    return True


def _exists(proc: psutil.Process) -> bool:
    """Whether the process (pid + create_time) still has a process-table entry, zombie or not."""
    try:
        return proc.is_running()
    except psutil.Error:
        return False


def _signal(proc: psutil.Process, sig: int) -> None:
    try:
        proc.send_signal(sig)  # psutil refuses if the pid was reused
    except psutil.Error:
        pass


class AgentProcess:
    """One agent runner and everything it started."""

    def __init__(
        self,
        agent: str,
        pid: int,
        create_time: float,
        popen: subprocess.Popen | None = None,
        log_paths: tuple[Path, Path] | None = None,
    ):
        self.agent = agent
        self.pid = pid
        self.create_time = create_time
        self.log_paths = log_paths  # (stdout, stderr), None when attached
        self._popen = popen
        self._proc = psutil.Process(pid) if popen is not None else None
        self._returncode: int | None = None
        self._seen: dict[int, psutil.Process] = {}  # descendants ever observed, by pid
        self.survivors: list[int] = []  # pids the last stop() could not kill (should stay empty)

    def __repr__(self) -> str:
        return f"AgentProcess(agent={self.agent!r}, pid={self.pid}, create_time={self.create_time})"

    @classmethod
    def attach(cls, pid: int | None, create_time: float | None, agent: str = "") -> AgentProcess | None:
        """Re-attach to a runner recorded as (pid, create_time), or None if it is gone, dead
        (a zombie), the pid now belongs to another process, or nothing was recorded."""
        if not pid or create_time is None:
            return None
        try:
            proc = psutil.Process(pid)
        except psutil.Error:
            return None
        if not _same(proc, create_time) or _gone(proc):
            return None
        ap = cls(agent, pid, create_time)
        ap._proc = proc
        return ap

    # -- observation ------------------------------------------------------------------------
    @property
    def returncode(self) -> int | None:
        """Exit code (negative: killed by that signal) once known; None while running, or when
        the process was attached and someone else reaped it."""
        if self._returncode is None and self._popen is not None:
            self._returncode = self._popen.poll()
        return self._returncode

    def alive(self) -> bool:
        """Whether the runner itself (the group leader) still runs."""
        if self._popen is not None:
            return self._popen.poll() is None
        if self._proc is None:
            return False
        if _gone(self._proc, reap=False):
            self._reap_attached()  # keeps its exit status if it is our child
            return False
        return True

    def state(self) -> str | None:
        """The leader's scheduler state as psutil names it (``running``, ``sleeping``, ``stopped``
        after SIGSTOP, ``zombie``, ...), or None once it is gone: evidence for a verdict."""
        if self._proc is None or not self.alive():
            return None
        try:
            return self._proc.status()
        except psutil.Error:
            return None

    def _tree(self, extra: list[psutil.Process] = (), tick: object | None = None) -> list[psutil.Process]:
        """The leader (if alive) and every live descendant -- of it, of ``extra``, or seen before
        (escaped ones whose parent died are no longer reachable from the leader). ``tick``: share
        the process-table scan of that supervisor tick (observing, never stopping)."""
        procs: list[psutil.Process] = []
        roots = list(extra)
        if self._proc is not None and self.alive():
            procs.append(self._proc)
            roots.append(self._proc)
        for root in roots:
            try:
                for child in descendants(root, tick):
                    known = self._seen.get(child.pid)
                    if known is None or not _exists(known):  # new, or its pid was reused
                        self._seen[child.pid] = child
            except psutil.Error:
                pass
        for pid, child in list(self._seen.items()):
            if not _gone(child):  # _gone reaps the zombies that are ours
                procs.append(child)
            elif not _exists(child):
                del self._seen[pid]  # kept while a zombie, so it is reaped once it is ours
        return procs

    def stats(self, tick: object | None = None) -> ProcStats | None:
        """CPU time and context switches summed over the tree; None when nothing of it runs.
        ``tick``: the supervisor tick asking (its agents share one process-table scan)."""
        cpu = 0.0
        vol = invol = n = 0
        for proc in self._tree(tick=tick):
            try:
                with proc.oneshot():
                    t = proc.cpu_times()
                    c = proc.num_ctx_switches()
            except psutil.Error:
                continue
            cpu += t.user + t.system + t.children_user + t.children_system
            vol += c.voluntary
            invol += c.involuntary
            n += 1
        return ProcStats(cpu, vol, invol, n) if n else None

    # -- stopping ----------------------------------------------------------------------------
    def stop(self, grace_s: float = STOP_GRACE_S) -> int | None:
        """SIGTERM the group (and every escaped descendant), wait up to ``grace_s``, SIGKILL
        whatever is left, and reap. Returns ``returncode``. Safe to call again."""
        procs = self._tree()  # taken BEFORE any signal: afterwards orphans lose their parent link
        if procs:
            self._signal_all(procs, signal.SIGTERM)
            left = self._wait(procs, grace_s)
            if left:
                left = self._tree(extra=left)  # and whatever they started during the grace period
                self._signal_all(left, signal.SIGKILL)
                left = self._wait(left, KILL_WAIT_S)
            # a process stuck in uninterruptible sleep can outlive SIGKILL for a while: report it
            # rather than abort the caller's shutdown
            self.survivors = [p.pid for p in left]
        self._tree()  # reap the descendants that died as zombies and were re-parented to us
        self._reap_attached()
        reap_orphans({self.pid})  # and those of its session we never saw alive
        return self.returncode

    def _signal_all(self, procs: list[psutil.Process], sig: int) -> None:
        # the group first (one syscall reaches members we never saw), but only while its id
        # cannot have been reused: our Popen child is unreaped, or a member we verified by
        # create_time is still in it (a group id is never reused while it has members)
        safe = self._popen is not None and self._popen.returncode is None
        for proc in procs:
            if safe:
                break
            try:
                safe = os.getpgid(proc.pid) == self.pid and not self._done(proc)
            except (ProcessLookupError, PermissionError):
                continue
        if safe:
            try:
                os.killpg(self.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        for proc in procs:  # then everyone individually: escaped descendants are in other groups
            _signal(proc, sig)

    def _wait(self, procs: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
        deadline = time.monotonic() + timeout_s
        left = list(procs)
        while True:
            left = [p for p in left if not self._done(p)]
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(POLL_S)

    def _done(self, proc: psutil.Process) -> bool:
        if proc is not self._proc:
            return _gone(proc)
        if self._popen is not None:  # Popen must do the reaping, or it loses the return code
            return self._popen.poll() is not None
        if _gone(proc, reap=False):
            self._reap_attached()
            return True
        return False

    def _reap_attached(self) -> None:
        """An attached runner that is our child (same process, or we are its subreaper)."""
        if self._popen is not None or self._returncode is not None:
            return
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == self.pid:
            self._returncode = os.waitstatus_to_exitcode(status)


def spawn(
    argv: Sequence[str],
    agent: str,
    env: Mapping[str, str] | None,
    cwd: Path | str,
    log_dir: Path | str,
    inherit_env: bool = True,
) -> AgentProcess:
    """Start ``argv`` as agent ``agent`` in its own session/process group.

    ``env`` is laid over this process's environment (or replaces it with ``inherit_env=False``).
    stdout/stderr append to ``<log_dir>/<agent>.out.log`` / ``.err.log`` (a respawn keeps the
    history, and their growth is a liveness signal). stdin is /dev/null.
    """
    if not argv:
        raise AgentError(f"agent {agent!r}: empty command")
    cwd = Path(cwd)
    if not cwd.is_dir():
        raise AgentError(f"agent {agent!r}: working directory {cwd} does not exist")
    log_dir = Path(log_dir)
    private_dir(log_dir)
    full_env = {**(os.environ if inherit_env else {}), **(env or {})}
    out_path, err_path = log_dir / f"{agent}.out.log", log_dir / f"{agent}.err.log"
    become_subreaper()
    append = os.O_WRONLY | os.O_APPEND
    with os.fdopen(open_private(out_path, append), "ab") as out, os.fdopen(open_private(err_path, append), "ab") as err:
        try:
            popen = subprocess.Popen(
                list(argv), cwd=cwd, env=full_env, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True
            )
        except OSError as e:
            raise AgentError(f"agent {agent!r}: cannot run {argv[0]!r}: {e.strerror or e}") from e
    # still our unreaped child even if it already exited, so this cannot race
    create_time = psutil.Process(popen.pid).create_time()
    return AgentProcess(agent, popen.pid, create_time, popen=popen, log_paths=(out_path, err_path))
