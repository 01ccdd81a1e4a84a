"""Gemini CLI: ``gemini -p PROMPT --output-format stream-json --approval-mode yolo``.

Headless stream-json prints one event per line, each with ``type`` and ``timestamp``:

- ``init {session_id, model}``
- ``message {role, content, delta?}``
- ``tool_use {tool_name, tool_id, parameters}`` -- a ``step``
- ``tool_result {tool_id, status: success|error, output?, error?:{type, message}}``
- ``error {severity: warning|error, message}`` -- quota exhaustion (RESOURCE_EXHAUSTED, 429)
  is back-pressure
- ``result {status: success|error, error?, stats:{input_tokens, output_tokens, cached, input,
  total_tokens, duration_ms, tool_calls}}`` -- ``stats.input`` is the uncached part of
  ``input_tokens``; Gemini CLI reports no cost.

API retries appear only on stderr: ``Attempt 2 failed with status 429. Retrying with backoff...``,
or, for a 429 that suggests a delay, ``Attempt 1 failed: MESSAGE`` and ``... Retrying after 2312ms...``.
Exit codes: 0 success, 1 general/API error, 41 authentication, 42 bad input, 53 turn limit.

With orch's model server or its coordination server (``Invocation.mcp``), gemini runs with a
private home (``GEMINI_CLI_HOME``, in the scratch directory) whose settings say what orch needs:
API-key auth; ``mcpServers.orch`` (``httpUrl``, a header naming ``${ORCH_MCP_TOKEN}``, which
gemini expands, ``trust`` so its calls need no confirmation) allowed alone (``mcp.allowed`` and
``--allowed-mcp-server-names``: no server of the user's or the project's settings), and no loop
detection (a role session polls ``list_tasks`` again and again by design). Its tools are
``mcp_orch_<tool>``.
"""

from __future__ import annotations

import os
import re
from typing import Any

from agents.clis.base import (MCP_TOKEN_ENV, MCP_TOOL_TIMEOUT_S, MODEL_SERVER_ENV, CliEvent, Invocation, JsonLinesParser, Preset, bearer,
                              error, log, looks_rate_limited, mcp_env, num, retry_after_in, scratch_json, step, tokens)

EXIT_REASONS = {
    # with GOOGLE_GEMINI_BASE_URL set, gemini picks its "gateway" auth unless settings choose one
    41: "authentication failed; with GOOGLE_GEMINI_BASE_URL set, also set security.auth.selectedType "
        "(e.g. gemini-api-key) in ~/.gemini/settings.json",
    42: "invalid input",
    53: "turn limit exceeded",
}
SERVED_MODEL = "gemini-2.5-pro"  # the model named to orch's model server when the variant names none
_ATTEMPT = re.compile(r"Attempt (?P<n>\d+) failed with status (?P<status>\d+)\. Retrying")
# a quota error with a suggested delay: "Attempt 1 failed: <message>\nSuggested retry after 2s.. Retrying after 2312ms..."
_QUOTA_RETRY = re.compile(r"\. Retrying after (?P<ms>\d+)ms")


def build(inv: Invocation) -> list[str]:
    s = inv.settings
    argv = ["--prompt", inv.prompt, "--output-format", "stream-json", "--approval-mode", s["approval_mode"]]
    if s["skip_trust"]:
        argv.append("--skip-trust")
    if inv.mcp:
        argv += ["--allowed-mcp-server-names", inv.mcp.name]
    if inv.model:
        argv += ["--model", inv.model]
    elif os.environ.get(MODEL_SERVER_ENV):  # a named model: "auto" asks the server to route every turn first
        argv += ["--model", SERVED_MODEL]
    return argv + list(inv.extra_args)


def settings(inv: Invocation) -> dict[str, Any]:
    """What orch's runs need in gemini's settings (empty: nothing, gemini keeps the user's home).
    With ``GOOGLE_GEMINI_BASE_URL`` set, gemini picks its "gateway" auth unless settings choose
    one, and then refuses it in headless mode (exit 41)."""
    out: dict[str, Any] = {}
    if os.environ.get(MODEL_SERVER_ENV):
        out["security"] = {"auth": {"selectedType": "gemini-api-key"}}
    if inv.mcp:
        out["mcpServers"] = {inv.mcp.name: {"httpUrl": inv.mcp.url, "headers": bearer(f"${{{MCP_TOKEN_ENV}}}"), "trust": True,
                                            "timeout": MCP_TOOL_TIMEOUT_S * 1000}}
        out["mcp"] = {"allowed": [inv.mcp.name]}
        out["model"] = {"disableLoopDetection": True}
    return out


def gemini_env(inv: Invocation) -> dict[str, str]:
    """A private gemini home (in the scratch directory) holding ``settings(inv)``, when there are any."""
    wanted = settings(inv)
    if not wanted:
        return {}
    home = scratch_json(inv, "gemini-home/.gemini/settings.json", wanted).parents[1]
    return {"GEMINI_CLI_HOME": str(home), **mcp_env(inv)}


class GeminiParser(JsonLinesParser):
    def feed_stderr(self, line: str) -> list[CliEvent]:
        # API retries show only on stderr: "Attempt 2 failed with status 429. Retrying with backoff..."
        q = _QUOTA_RETRY.search(line)
        if q:  # gemini prints this only for errors it classified as a retryable quota error
            return [self._rate_limited(int(q["ms"]) / 1000.0)]
        m = _ATTEMPT.search(line)
        if not m:
            return []
        if m["status"] == "429":
            return [self._rate_limited(retry_after_in(line))]
        return [log(f"gemini retries the API after status {m['status']} (attempt {m['n']})", "warning")]

    def on_object(self, obj: dict[str, Any]) -> list[CliEvent]:
        kind = obj.get("type")
        if kind == "init":
            self.info.update({k: obj[k] for k in ("session_id", "model") if obj.get(k)})
            return []
        if kind == "tool_use":
            return [step(str(obj.get("tool_name") or "tool"), obj.get("parameters"))]
        if kind == "tool_result" and obj.get("status") == "error":
            err = obj.get("error") or {}
            return [log(f"tool error ({err.get('type')}): {str(err.get('message'))[:200]}", "warning")]
        if kind == "error":
            msg = str(obj.get("message") or "")
            if looks_rate_limited(msg):
                return [self._rate_limited(retry_after_in(msg))]
            return [log(f"gemini: {msg[:500]}", "warning" if obj.get("severity") == "warning" else "error")]
        if kind == "result":
            stats = obj.get("stats") or {}
            cached = num(stats.get("cached"))
            uncached = num(stats["input"]) if "input" in stats else max(0, num(stats.get("input_tokens")) - cached)
            out = [tokens(uncached, num(stats.get("output_tokens")), cached, 0, None)]
            self.info["tool_calls"] = num(stats.get("tool_calls"))
            if obj.get("status") == "error":
                err = obj.get("error") or {}
                msg = str(err.get("message") or "error")
                self.failure = f"gemini: {err.get('type') or 'error'}: {msg[:500]}"
                if looks_rate_limited(msg):
                    self.gave_up_rate_limited = retry_after_in(msg)
                out.append(error(self.failure))
            return out
        return []

    def finish(self, returncode: int) -> list[CliEvent]:
        if returncode in EXIT_REASONS and self.failure is None:
            self.failure = f"gemini: exit {returncode} ({EXIT_REASONS[returncode]})"
        return []


PRESET = Preset(
    name="gemini",
    binary="gemini",
    install="npm install -g @google/gemini-cli",
    key_env=("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_GENAI_USE_GCA"),
    key_files=("~/.gemini/oauth_creds.json",),
    settings={"approval_mode": "yolo", "skip_trust": True},
    build=build,
    parser=GeminiParser,
    help_argv=("--help",),
    env=gemini_env,
    doc="Gemini CLI headless (-p) with stream-json output",
)
