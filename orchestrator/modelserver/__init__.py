"""``orch model-server``: a scripted model that real agent CLIs talk to, offline and deterministic.

It serves the Anthropic Messages API and OpenAI's Chat Completions and Responses APIs on
127.0.0.1, streaming (SSE) and not, and answers every request from a **script**:

    context.py        which session / task a request belongs to (carried in the base URL)
    turns.py          a Turn (text, tool calls, usage, fault) and its YAML/JSON form
    scripts.py        the scripts: ``file``, ``sim``, ``replay``
    roles.py          the role scripts (``coordinator``, ``worker``, ``lead``, ``decomposer``): a
                      real CLI playing an agent of an agent-driven run through orch's tools
                      (conversation.py, roleworkers.py, roledispatch.py)
    history.py        a conversation's tool calls and results, whatever its API
    tools.py          portable tool calls (``bash``, ``mcp:<tool>``) resolved onto each client's own tools
    apicommon.py      ids, token counts, SSE helpers shared by the APIs
    anthropic_api.py  /v1/messages
    openai_api.py     /v1/chat/completions and /v1/responses
    confine.py        which files a request may have read: only inside the server's worktrees
    server.py         the HTTP server, faults on demand, the request record

    with ModelServer("path/to/script.yaml", worktrees=[wt]) as srv:
        env = agent_env(srv.url, srv.key)  # ANTHROPIC_BASE_URL, OPENAI_BASE_URL, the server's key
        ...run a client...
        srv.requests, srv.usage()
"""

from __future__ import annotations

from agents.clis.serverurl import SessionContext, agent_env, session_url
from orchestrator.modelserver.server import ModelServer
from orchestrator.modelserver.turns import FAULTS, Fault, ToolCall, Turn, Usage

__all__ = ["ModelServer", "SessionContext", "agent_env", "session_url", "Turn", "ToolCall", "Usage", "Fault", "FAULTS"]
