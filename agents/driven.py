"""The runner's loop in agent-driven variants (``coordination: agents``): no policy picks tasks; the
agent's kind plays its role through the coordination tools (``agents.kinds.PLAYERS``: the sim,
the real CLIs as long-lived sessions, aider as an executor of assigned tasks) and decides
everything with them.

The runner keeps what it keeps for any agent: the process, the lease (every wait goes through
``Pulse``, which beats; a player with ``heartbeats = False`` -- a CLI whose own output proves its
life -- waits in ``step()`` and the lease is renewed without heartbeat events, so a silent CLI is
seen silent), the events, the end. The player's ``close()``, if it has one, runs however the loop
ends (SIGTERM included): no process of the player outlives the runner. The tools' URL and the
agent's run-scoped token come in its environment (``ORCH_MCP_URL``, ``ORCH_MCP_TOKEN``), set by the
orchestrator at spawn. The loop ends when every task of the run is terminal or the run stopped running; the runner reads that
from the store, as every runner does, so the end costs the agent no coordination call.

A refusal the role did not expect (``ToolRefused`` out of ``step``) is logged as an ``error`` event
and the role looks again after a wait; ``MAX_REFUSED`` of them in a row mean the agent cannot
coordinate, and it ends with an error (the supervisor takes over). A server it cannot reach is an
``AgentError`` at once (``agents.toolclient``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from coordstore.errors import AgentError, StoreError

from agents.config import MCP_TOKEN_ENV, MCP_URL_ENV
from agents.kinds import resolve_player
from agents.policies.base import run_over
from agents.toolclient import ToolClient, ToolRefused

MAX_REFUSED = 20  # unexpected refusals in a row: the agent and the tools no longer agree
MAX_STORE_ERRORS = 20  # as the runner's MAX_LOOP_ERRORS: the store is gone, not busy


def drive(cfg, store, events, pulse, env: Mapping[str, str] = os.environ) -> None:
    """Play the agent's role until the run is over."""
    url, token = env.get(MCP_URL_ENV), env.get(MCP_TOKEN_ENV)
    if not url or not token:
        missing = " and ".join(k for k, v in ((MCP_URL_ENV, url), (MCP_TOKEN_ENV, token)) if not v)
        raise AgentError(f"agent {cfg.agent_id} is agent-driven but {missing} is not set in its environment")
    player_class = resolve_player(cfg.kind)
    with ToolClient(url, token) as client:
        player = player_class(cfg, client, events, pulse)
        try:
            _play(player, cfg, store, events, pulse)
        finally:  # whatever ended the loop (a SIGTERM too): the player's processes end with it
            close = getattr(player, "close", None)
            if close is not None:
                close()


def _play(player, cfg, store, events, pulse) -> None:
    for key in getattr(player, "unknown", ()):
        events.log(f"kind {cfg.kind}: option {key!r} is not one of its options; ignored", level="warning")
    quiet = not getattr(player, "heartbeats", True)  # its own events prove life (a CLI's output)
    player.begin()
    refused = store_errors = 0
    while True:
        try:
            if run_over(store, cfg.run_id):
                break
            store_errors = 0
        except StoreError as e:  # a busy store: look again after a pause, give up if it persists
            store_errors += 1
            events.error(f"store error: {e}")
            if store_errors >= MAX_STORE_ERRORS:
                raise
        try:
            progressed = player.step()
            refused = 0
        except ToolRefused as e:
            refused += 1
            events.error(f"coordination tool refused: {e.text}")
            if refused >= MAX_REFUSED:
                raise AgentError(f"agent {cfg.agent_id}: {refused} coordination calls refused in a row, the last: {e.text}") from e
            progressed = False
        if quiet:  # step() waited for the player's output: the lease only, no heartbeat event
            pulse.renew()
        elif progressed:
            pulse.beat()
        else:
            pulse.sleep(player.wait_s())
    player.end()
