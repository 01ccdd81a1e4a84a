"""`orch watch` in a real pseudo-terminal against a live run: it shows progress while the run goes
on, and exits by itself when the run ends. NO_COLOR is honoured (and colour is there without it).
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from cliruns import completed, isolated_env, start_run

WATCH_SCALE = "0.002"  # tiny-feature runs several seconds: time for a few frames before it ends
SGR = re.compile(r"\x1b\[([0-9;]*)m")


def run_in_pty(argv: list[str], env: dict[str, str], timeout: float = 90.0) -> tuple[int, str]:
    """Run ``argv`` with a 120x40 pseudo-terminal as its stdin/stdout/stderr; (exit code, output)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
            pytest.fail(f"{argv[3:]} did not exit within {timeout}s")
        return proc.wait(10), b"".join(chunks).decode("utf-8", "replace")
    finally:
        os.close(master)


def colours(text: str) -> set[int]:
    codes = set()
    for params in SGR.findall(text):
        codes |= {int(p) for p in params.split(";") if p.isdigit() and (30 <= int(p) <= 49 or 90 <= int(p) <= 107)}
    return codes


def test_watch_follows_a_live_run_and_exits_when_it_ends(tmp_path):
    env = {k: v for k, v in isolated_env(tmp_path / "home").items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    proc, run_dir = start_run(tmp_path / "results", WATCH_SCALE, env, tmp_path)
    try:
        deadline = time.monotonic() + 30
        while not ((run_dir / "orch.db").exists() and completed(run_dir)[1] > 0):
            assert time.monotonic() < deadline and proc.poll() is None, "the run did not start"
            time.sleep(0.05)
        assert proc.poll() is None
        watch_env = {**env, "NO_COLOR": "1", "TERM": "xterm-256color"}
        code, out = run_in_pty([sys.executable, "-m", "orchestrator", "watch", str(run_dir), "--interval", "0.2"], watch_env)
        run_code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.stderr.close()
    assert run_code == 0
    assert code == 0, out[-2000:]
    done, total = completed(run_dir)
    frames = [(int(a), int(b)) for a, b in re.findall(r"tasks (\d+)/(\d+)", out)]
    assert frames and {t for _, t in frames} == {total}
    assert any(d < total for d, _ in frames), "no frame showed the run in progress"
    assert frames[-1] == (done, total) == (total, total)
    assert [d for d, _ in frames] == sorted(d for d, _ in frames), "progress went backwards"
    assert re.search(r"\bw1\s+(active|idle|stopped|registered)\b", out)  # one line per agent with its verdict
    assert "latest" in out and "-> completed" in out  # the latest transitions
    last = [ln for ln in out.replace("\r", "\n").splitlines() if ln.strip()][-1]
    assert f"run {run_dir.name}: finished" in last
    assert colours(out) == set(), "NO_COLOR was set but colours were printed"

    # the same view without NO_COLOR does colour (so the check above can fail)
    code, coloured = run_in_pty([sys.executable, "-m", "orchestrator", "watch", str(run_dir)],
                                {k: v for k, v in {**env, "TERM": "xterm-256color"}.items() if k != "NO_COLOR"})
    assert code == 0 and colours(coloured)
    assert Path(run_dir / "metrics.json").is_file()
