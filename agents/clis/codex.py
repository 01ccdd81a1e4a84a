"""OpenAI Codex CLI: ``codex exec --json ... PROMPT``.

``exec --json`` prints one ThreadEvent per line:

- ``thread.started {thread_id}``, ``turn.started {}``
- ``item.started|item.updated|item.completed {item:{id, type, ...}}`` with item types
  ``command_execution {command, aggregated_output, exit_code, status}``,
  ``file_change {changes:[{path, kind}], status}``, ``mcp_tool_call {server, tool, arguments}``,
  ``web_search {query}``, ``agent_message {text}``, ``reasoning {text}``, ``todo_list``,
  ``error {message}`` (a non-fatal warning)
- ``turn.completed {usage:{input_tokens, cached_input_tokens, output_tokens,
  reasoning_output_tokens}}`` (newer versions add ``cache_write_input_tokens``)
- ``turn.failed {error:{message}}`` and ``error {message}`` (retries, stream errors)

A tool item becomes one ``step`` when it starts (or when it completes, if it never started).
``input_tokens`` counts cached tokens too and ``output_tokens`` the reasoning tokens (OpenAI's
convention), so ``in`` = input - cached and ``out`` = output - reasoning (``thinking``).
Codex reports no cost. A 429 / "rate limit" / "usage limit" message is back-pressure.

With orch's coordination server (``Invocation.mcp``): ``--ignore-user-config`` (no server of the
user's ``config.toml``; credentials still come from ``CODEX_HOME``) and ``mcp_servers.orch`` as a
``-c`` override -- streamable HTTP, the token from ``ORCH_MCP_TOKEN`` (``bearer_token_env_var``),
``required`` (``codex exec`` fails when it cannot connect), its tools approved without asking
(otherwise ``exec`` fails each call: "requires approval, but approval policy is never"),
generous timeouts. On the Responses API codex offers the server's tools as one ``namespace`` tool
``mcp__orch`` holding functions ``<tool>``, and takes a call only as ``function_call`` with
``namespace: "mcp__orch", name: "<tool>"`` (a flat ``mcp__orch__<tool>`` is an "unsupported
call"); its parser's steps are ``mcp:orch.<tool>``.
"""

from __future__ import annotations

import json
import os
from typing import Any

from agents.clis.base import (MCP_STARTUP_S, MCP_TOKEN_ENV, MCP_TOOL_TIMEOUT_S, MODEL_SERVER_ENV, CliEvent, Invocation, JsonLinesParser,
                              McpEndpoint, Preset, error, log, looks_rate_limited, mcp_env, num, retry_after_in, step, tokens)

SERVED_MODEL = "gpt-5-codex"  # a model family codex knows (it sends tools for it) when talking to orch's server
TOOL_ITEMS = ("command_execution", "file_change", "mcp_tool_call", "web_search")


def build(inv: Invocation) -> list[str]:
    s = inv.settings
    argv = ["exec", "--json", "--color", "never", "--sandbox", s["sandbox"], "--skip-git-repo-check", "--cd", inv.worktree]
    served = os.environ.get(MODEL_SERVER_ENV)
    if served:  # codex ignores OPENAI_BASE_URL: the run's model server is declared as a provider
        argv += ["-c", f'model_providers.orch={{name="orch",base_url="{served}/v1",env_key="OPENAI_API_KEY",wire_api="responses"}}',
                 "-c", "model_provider=orch"]
        if not inv.model:  # codex offers tools only to model families it knows; its default is not one here
            argv += ["--model", SERVED_MODEL]
    if inv.mcp:
        argv += ["--ignore-user-config", "-c", mcp_override(inv.mcp)]
    if inv.model:
        argv += ["--model", inv.model]
    return argv + list(inv.extra_args) + [inv.prompt]


def mcp_override(mcp: McpEndpoint) -> str:
    """``mcp_servers.<name>={...}``: the server as one TOML inline table (JSON's strings, numbers
    and booleans are TOML's too)."""
    table = {"url": mcp.url, "bearer_token_env_var": MCP_TOKEN_ENV, "required": True, "startup_timeout_sec": MCP_STARTUP_S,
             "tool_timeout_sec": MCP_TOOL_TIMEOUT_S, "default_tools_approval_mode": "approve"}
    return f"mcp_servers.{mcp.name}={{{','.join(f'{k}={json.dumps(v)}' for k, v in table.items())}}}"


def _step_of(item: dict[str, Any]) -> CliEvent:
    t = item.get("type")
    if t == "command_execution":
        return step("exec", item.get("command"))
    if t == "file_change":
        return step("apply_patch", [(c.get("kind"), c.get("path")) for c in item.get("changes") or [] if isinstance(c, dict)])
    if t == "mcp_tool_call":
        return step(f"mcp:{item.get('server')}.{item.get('tool')}", item.get("arguments"))
    return step("web_search", item.get("query"))


class CodexParser(JsonLinesParser):
    def __init__(self) -> None:
        super().__init__()
        self.started: set[str] = set()  # tool items already counted as a step
        self.usage_seen = (0, 0, 0, 0)  # totals reported so far (turn.completed carries thread totals)

    def on_object(self, obj: dict[str, Any]) -> list[CliEvent]:
        kind = obj.get("type")
        item = obj.get("item") if isinstance(obj.get("item"), dict) else {}
        if kind == "thread.started":
            self.info["session_id"] = obj.get("thread_id")
            return []
        if kind in ("item.started", "item.completed") and item.get("type") in TOOL_ITEMS:
            iid = str(item.get("id"))
            out = []
            if iid not in self.started:
                self.started.add(iid)
                out.append(_step_of(item))
            if kind == "item.completed" and item.get("status") in ("failed", "declined"):
                out.append(log(f"codex {item.get('type')} {item.get('status')}: {str(item.get('command') or '')[:200]}", "warning"))
            return out
        if kind == "item.completed" and item.get("type") == "error":
            return [log(f"codex: {item.get('message')}", "warning")]
        if kind == "turn.completed":
            return [self._usage(obj.get("usage") or {})]
        if kind == "turn.failed":
            msg = str((obj.get("error") or {}).get("message") or "turn failed")
            self.failure = f"codex: turn failed: {msg[:500]}"
            if looks_rate_limited(msg):
                self.gave_up_rate_limited = retry_after_in(msg)
            return [error(self.failure)]
        if kind == "error":
            msg = str(obj.get("message") or "")
            if looks_rate_limited(msg):
                return [self._rate_limited(retry_after_in(msg))]
            return [log(f"codex: {msg[:500]}", "warning")]
        return []

    def _usage(self, usage: dict[str, Any]) -> CliEvent:
        now = tuple(num(usage.get(k)) for k in ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_output_tokens"))
        seen = self.usage_seen
        # thread totals grow monotonically; anything else is a per-turn count, taken as is
        delta = tuple(a - b for a, b in zip(now, seen)) if all(a >= b for a, b in zip(now, seen)) else now
        self.usage_seen = now
        tin, cached, tout, reasoning = delta
        return tokens(max(0, tin - cached), max(0, tout - reasoning), cached, reasoning, None)


PRESET = Preset(
    name="codex",
    binary="codex",
    install="npm install -g @openai/codex",
    key_env=("OPENAI_API_KEY", "CODEX_API_KEY"),
    key_files=("$CODEX_HOME/auth.json", "~/.codex/auth.json"),
    settings={"sandbox": "workspace-write"},
    build=build,
    parser=CodexParser,
    help_argv=("exec", "--help"),
    env=mcp_env,
    doc="OpenAI Codex CLI, codex exec --json",
)
