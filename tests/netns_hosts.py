"""Several "hosts" on one machine, each a network namespace (needs root and ``ip``).

Layout (``X`` a random free second octet, names unique per ``Network``):

* a hub address ``10.X.0.1/32`` on the machine's own ``lo`` (no dummy device: that kernel module
  may be missing): the "coordinator host" as the others reach it; ``git daemon`` listens there;
* host ``k``: namespace ``<prefix>-<name>``, a veth pair, ``10.X.k.1/30`` on the machine's side,
  ``10.X.k.2/30`` inside, default route via ``10.X.k.1`` (so the hub is reachable);
* PostgreSQL listens on 127.0.0.1 only: each host reaches it through its own TCP relay
  (``tests/tcprelay.py``) bound on ``10.X.k.1:<pg port>``. Stopping that relay cuts that host alone
  off from the store; its git (the hub) stays reachable.

A process started with ``Host.cmd(argv, hide=[dirs])`` runs inside the namespace with each of
``dirs`` covered by an empty tmpfs in its own mount namespace (``ip netns exec`` makes one): it
cannot see the coordinator's run directory even though it shares the file system.

``close()`` (also on failure: use it as a context manager) kills whatever still runs in the
namespaces, the relays and the daemon, deletes the namespaces (their veths go with them) and the
hub address.
"""

from __future__ import annotations

import os
import random
import secrets
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import tcprelay


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and p.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {p.stderr.strip()}")
    return p


def _free_octet() -> int:
    used = _ip("-4", "addr").stdout + _ip("-4", "route").stdout
    for _ in range(100):
        x = random.randint(64, 250)
        if f"10.{x}." not in used:
            return x
    raise RuntimeError("no free 10.X.0.0/16 for test namespaces")


def _stop(p: subprocess.Popen | None) -> None:
    if p is not None and p.poll() is None:
        p.kill()
        p.wait(timeout=10)


@dataclass
class Host:
    name: str
    ns: str
    outside: str  # the machine's end of the veth (where this host's relays listen)
    inside: str
    pg_target: tuple[str, int]
    pg_port: int
    relay: subprocess.Popen | None = None

    def cmd(self, argv: list[str], hide: list[Path] = ()) -> list[str]:
        mounts = "".join(f"mount -t tmpfs orch-hidden {shlex.quote(str(d))} && " for d in hide)
        return ["ip", "netns", "exec", self.ns, "sh", "-c", mounts + 'exec "$@"', "sh", *argv]

    def store_url(self, url: str) -> str:
        """``url`` (a postgresql:// URL as the machine reaches it) as this host reaches it: via its relay."""
        parts = urlsplit(url)
        user = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        return urlunsplit((parts.scheme, f"{user}{self.outside}:{self.pg_port}", parts.path, parts.query, parts.fragment))

    def start_relay(self) -> None:
        self.relay = tcprelay.start(self.outside, self.pg_port, *self.pg_target)

    def cut_store(self) -> None:
        """This host loses the store: its relay dies (open connections close, new ones are refused)."""
        _stop(self.relay)
        self.relay = None


@dataclass
class Network:
    pg_url: str  # the store's postgresql:// URL as the machine reaches it
    prefix: str = field(default_factory=lambda: f"o{secrets.token_hex(3)}")
    hosts: list[Host] = field(default_factory=list)
    daemon: subprocess.Popen | None = None

    def __post_init__(self):
        if os.geteuid() != 0:
            raise RuntimeError("network namespaces need root")
        self.x = _free_octet()
        self.hub = f"10.{self.x}.0.1"
        _ip("addr", "add", f"{self.hub}/32", "dev", "lo")
        parts = urlsplit(self.pg_url)
        self.pg_target = (parts.hostname or "127.0.0.1", parts.port or 5432)

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def add_host(self, name: str) -> Host:
        k = len(self.hosts) + 1
        ns, out_dev, in_dev = f"{self.prefix}-{name}", f"{self.prefix}{k}h", f"{self.prefix}{k}w"
        outside, inside = f"10.{self.x}.{k}.1", f"10.{self.x}.{k}.2"
        h = Host(name, ns, outside, inside, self.pg_target, self.pg_target[1])
        self.hosts.append(h)  # before anything exists: close() removes what was made
        _ip("netns", "add", ns)
        _ip("link", "add", out_dev, "type", "veth", "peer", "name", in_dev)
        _ip("link", "set", in_dev, "netns", ns)
        _ip("addr", "add", f"{outside}/30", "dev", out_dev)
        _ip("link", "set", out_dev, "up")
        for args in (("link", "set", "lo", "up"), ("addr", "add", f"{inside}/30", "dev", in_dev),
                     ("link", "set", in_dev, "up"), ("route", "add", "default", "via", outside)):
            _ip("-n", ns, *args)
        h.start_relay()
        return h

    def serve_git(self, base: Path) -> str:
        """``git daemon`` for the bare repositories under ``base`` on the hub; returns ``git://hub``."""
        self.daemon = subprocess.Popen(["git", "daemon", "--export-all", "--enable=receive-pack", "--reuseaddr",
                                        f"--base-path={base}", f"--listen={self.hub}", "--informative-errors", str(base)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        return f"git://{self.hub}"

    def wait_git(self, url: str, timeout: float = 20.0) -> None:
        end = time.monotonic() + timeout
        while subprocess.run(["git", "ls-remote", url], capture_output=True).returncode != 0:
            if time.monotonic() > end or (self.daemon and self.daemon.poll() is not None):
                raise RuntimeError(f"git daemon does not serve {url}")
            time.sleep(0.1)

    def close(self) -> None:
        for h in self.hosts:
            pids = _ip("netns", "pids", h.ns, check=False).stdout.split()
            for pid in pids:  # only processes this test started inside its own namespace
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            _stop(h.relay)
            _ip("netns", "del", h.ns, check=False)  # its veth pair goes with it
        if self.daemon is not None and self.daemon.poll() is None:
            # `git daemon` runs git-daemon as its child: the whole group goes, or git-daemon outlives the test
            os.killpg(self.daemon.pid, signal.SIGKILL)
            self.daemon.wait(timeout=10)
        _ip("addr", "del", f"{self.hub}/32", "dev", "lo", check=False)
