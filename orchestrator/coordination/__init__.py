"""The coordination tools agents call (MCP): one server per run, over streamable HTTP on
127.0.0.1 or stdio, each agent acting through its own run-scoped token.

``tokens`` (who may call), ``runctx`` (the run as the server sees it), ``tools`` and its groups
(the tools as plain Python over the store, one history row per call), ``schemas`` and ``server``
(the MCP face), ``__main__`` (``python -m orchestrator.coordination``)."""
