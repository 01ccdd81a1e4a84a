"""A tiny TCP relay, run as its own process by tests: ``python tests/tcprelay.py LISTEN_HOST
LISTEN_PORT TARGET_HOST TARGET_PORT``. Prints ``listening`` once bound. Killing the process cuts
every connection it carries (their peers see the socket close) and refuses new ones: a host cut
off from the service. Used to reach a server that listens on 127.0.0.1 only (PostgreSQL here)
from a network namespace, without touching the server's configuration."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def main(listen_host: str, listen_port: int, target_host: str, target_port: int) -> None:
    async def serve(r, w):
        try:
            tr, tw = await asyncio.open_connection(target_host, target_port)
        except OSError:
            w.close()
            return
        await asyncio.gather(_pipe(r, tw), _pipe(tr, w))

    server = await asyncio.start_server(serve, listen_host, listen_port, reuse_address=True)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


def start(listen_host: str, listen_port: int, target_host: str, target_port: int) -> subprocess.Popen:
    """This relay as a child process, once it listens. Its stdout is read for that one line and
    closed; stderr goes to /dev/null: no pipe is left for a relay to fill and stall on."""
    p = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), listen_host, str(listen_port), target_host,
                          str(target_port)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline()
    p.stdout.close()
    if line.strip() != "listening":
        raise RuntimeError(f"relay on {listen_host}:{listen_port} did not start (exit {p.wait()})")
    return p


if __name__ == "__main__":
    h, p, th, tp = sys.argv[1:5]
    asyncio.run(main(h, int(p), th, int(tp)))
