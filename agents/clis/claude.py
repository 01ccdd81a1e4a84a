"""Claude Code: ``claude -p PROMPT --output-format stream-json --verbose ...``.

The stream is one JSON object per line (the Agent SDK's message shapes):

- ``{"type":"system","subtype":"init", "session_id", "model", "cwd", "tools", ...}``
- ``{"type":"assistant","message":{"content":[{"type":"tool_use","name","input","id"}, text...],
  "usage":{...}}}`` -- every ``tool_use`` block becomes a ``step``
- ``{"type":"user","message":{"content":[{"type":"tool_result","is_error",...}]}}``
- ``{"type":"system","subtype":"api_retry","attempt","max_retries","retry_delay_ms",
  "error_status","error"}`` -- ``rate_limit``/429 and ``overloaded``/529 are back-pressure
  (``rate_limited``); other retried errors are logged
- ``{"type":"rate_limit_event","rate_limit_info":{"status":"rejected","resetsAt":<epoch s>}}``
- ``{"type":"result","subtype":"success"|"error_max_turns"|"error_during_execution",
  "is_error", "result", "num_turns", "total_cost_usd", "usage":{...}, "api_error_status"}``
  -- its usage and cost become the one ``tokens`` event (the whole session's totals), and
  ``is_error`` fails the task.

``--permission-mode acceptEdits`` plus ``--allowedTools Bash`` lets it edit and run commands
headless; ``--dangerously-skip-permissions`` is refused when running as root, so orch does not
use it. ``--bare`` skips hooks, plugins and CLAUDE.md discovery and takes the key strictly from
``ANTHROPIC_API_KEY`` (``ANTHROPIC_BASE_URL`` points it at another endpoint).

With orch's coordination server (``Invocation.mcp``): ``--mcp-config`` with the server as inline
JSON (its header names ``${ORCH_MCP_TOKEN}``, which claude expands), ``--strict-mcp-config`` so no
other configured server is started, and ``mcp__orch`` (every tool of that server) among the
allowed tools. Its tools are ``mcp__orch__<tool>``.
"""

from __future__ import annotations

import json
import time
from typing import Any

from agents.clis.base import (MCP_TOKEN_ENV, MCP_TOOL_TIMEOUT_S, CliEvent, Invocation, JsonLinesParser, Preset, bearer, error, log,
                              mcp_env, num, step, tokens)

# retried API errors that are back-pressure, not faults (claude's own error categories)
BACKPRESSURE = {"rate_limit", "overloaded"}
BACKPRESSURE_STATUS = {429, 529}
IDLE_TIMEOUT_ENV = "CLAUDE_CODE_MCP_TOOL_IDLE_TIMEOUT"  # ms an HTTP MCP call may stay silent


def build(inv: Invocation) -> list[str]:
    s = inv.settings
    # the prompt first: --allowedTools is variadic and would swallow a positional after it
    argv = ["-p", inv.prompt, "--output-format", "stream-json", "--verbose", "--permission-mode", s["permission_mode"]]
    allowed = list(s["allowed_tools"])
    if inv.mcp:
        server = {"type": "http", "url": inv.mcp.url, "headers": bearer(f"${{{MCP_TOKEN_ENV}}}"),
                  "timeout": MCP_TOOL_TIMEOUT_S * 1000}  # ms, one tool call
        argv += ["--mcp-config", json.dumps({"mcpServers": {inv.mcp.name: server}}), "--strict-mcp-config"]
        allowed.append(f"mcp__{inv.mcp.name}")  # the whole server
    if allowed:
        argv += ["--allowedTools", ",".join(allowed)]
    if s["bare"]:
        argv.append("--bare")
    if inv.model:
        argv += ["--model", inv.model]
    return argv + list(inv.extra_args)


def claude_env(inv: Invocation) -> dict[str, str]:
    """The agent's token, and claude's limit on an MCP call that sends nothing raised to the
    whole call's (by default 5 minutes: a completing update may verify longer)."""
    if not inv.mcp:
        return {}
    return {**mcp_env(inv), IDLE_TIMEOUT_ENV: str(MCP_TOOL_TIMEOUT_S * 1000)}


class ClaudeParser(JsonLinesParser):
    def on_object(self, obj: dict[str, Any]) -> list[CliEvent]:
        kind = obj.get("type")
        if kind == "assistant":
            out = []
            for block in (obj.get("message") or {}).get("content") or []:
                if isinstance(block, dict) and block.get("type") in ("tool_use", "server_tool_use"):
                    out.append(step(str(block.get("name") or "tool"), block.get("input")))
            return out
        if kind == "user":
            out = []
            for block in (obj.get("message") or {}).get("content") or []:
                if isinstance(block, dict) and block.get("type") == "tool_result" and block.get("is_error"):
                    out.append(log(f"tool error: {_text(block.get('content'))[:200]}", "warning"))
            return out
        if kind == "system":
            return self._system(obj)
        if kind == "rate_limit_event":
            info = obj.get("rate_limit_info") or {}
            if info.get("status") == "rejected":
                resets = info.get("resetsAt")
                wait = max(0.0, float(resets) - time.time()) if isinstance(resets, (int, float)) else 60.0
                return [self._rate_limited(wait)]
            return []
        if kind == "result":
            return self._result(obj)
        return []

    def _system(self, obj: dict[str, Any]) -> list[CliEvent]:
        sub = obj.get("subtype")
        if sub == "init":
            self.info.update({k: obj[k] for k in ("session_id", "model") if obj.get(k)})
            return [log(f"claude session {obj.get('session_id')} model {obj.get('model')}", "debug")]
        if sub == "api_retry":
            status, category = obj.get("error_status"), obj.get("error")
            delay = num(obj.get("retry_delay_ms")) / 1000.0
            if category in BACKPRESSURE or status in BACKPRESSURE_STATUS:
                return [self._rate_limited(delay)]
            return [log(f"claude retries the API after {category} (status {status}), attempt "
                        f"{obj.get('attempt')}/{obj.get('max_retries')}", "warning")]
        return []

    def _result(self, obj: dict[str, Any]) -> list[CliEvent]:
        usage = obj.get("usage") or {}
        self.info.update({k: obj[k] for k in ("num_turns", "duration_ms", "session_id") if k in obj})
        out = [tokens(num(usage.get("input_tokens")) + num(usage.get("cache_creation_input_tokens")),
                      num(usage.get("output_tokens")), num(usage.get("cache_read_input_tokens")), 0,
                      obj.get("total_cost_usd"))]
        if obj.get("is_error") or (obj.get("subtype") not in (None, "success")):
            errors = obj.get("errors") or []
            detail = obj.get("result") or "; ".join(str(e) for e in errors) or obj.get("subtype") or "error"
            self.failure = f"claude: {obj.get('subtype', 'error')}: {str(detail)[:500]}"
            if obj.get("api_error_status") in BACKPRESSURE_STATUS:
                self.gave_up_rate_limited = self.last_retry_after or 60.0
            out.append(error(self.failure))
        return out


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
    return str(content or "")


PRESET = Preset(
    name="claude",
    binary="claude",
    install="npm install -g @anthropic-ai/claude-code",
    key_env=("ANTHROPIC_API_KEY", "CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX", "CLAUDE_CODE_USE_FOUNDRY"),
    key_files=(),  # --bare never reads OAuth logins or the keychain
    settings={"permission_mode": "acceptEdits", "allowed_tools": ["Bash"], "bare": True},
    build=build,
    parser=ClaudeParser,
    help_argv=("--help",),
    env=claude_env,
    doc="Claude Code headless (-p) with stream-json output",
)
