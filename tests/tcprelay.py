"""A tiny TCP relay, run as its own process by tests: ``python tests/tcprelay.py LISTEN_HOST
LISTEN_PORT TARGET_HOST TARGET_PORT``. Prints ``listening`` once bound. Killing the process cuts
every connection it carries (their peers see the socket close) and refuses new ones: a host cut
off from the service. Used to reach a server that listens on 127.0.0.1 only (PostgreSQL here)
from a network namespace, without touching the server's configuration."""

from __future__ import annotations

import asyncio
import sys


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


if __name__ == "__main__":
    h, p, th, tp = sys.argv[1:5]
    asyncio.run(main(h, int(p), th, int(tp)))
