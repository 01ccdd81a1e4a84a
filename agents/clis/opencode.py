"""opencode: ``opencode run --format json --auto`` with the prompt on stdin.

``run --format json`` prints one event per line, ``{type, timestamp, sessionID, ...}``:

- ``step_start {part}``
- ``tool_use {part:{tool, callID, state:{status: completed|error, input, output|error}}}`` --
  one per finished tool call, a ``step``
- ``text {part:{text}}``, ``reasoning {part:{text}}``
- ``step_finish {part:{reason, cost, tokens:{input, output, reasoning, cache:{read, write}}}}``
  -- per model step: a ``tokens`` event with opencode's own cost
- ``error {error:{name, data:{message, statusCode?, responseHeaders?}}}`` -- fails the run;
  status 429 is a rate limit
- ``done {reason, rejected}``

The prompt goes on stdin: opencode re-quotes a message argument that contains spaces.
``--auto`` approves permission requests that would otherwise be rejected headless.

With orch's coordination server (``Invocation.mcp``): ``mcp.orch`` (``remote``, a header naming
``{env:ORCH_MCP_TOKEN}``, which opencode substitutes, a generous timeout: its default of 5 s
holds for every tool call) and permission for its tools, in the global config file of a private
config directory (``XDG_CONFIG_HOME``, in the scratch directory), with the project's config off
(``OPENCODE_DISABLE_PROJECT_CONFIG``): opencode merges every config it finds, so hiding the
others is the only way to keep their servers out (``~/.opencode/opencode.json`` is still read:
opencode has no switch for it). The provider declared in ``OPENCODE_CONFIG_CONTENT`` (the run's
model server) is merged on top as before; credentials (``XDG_DATA_HOME``) are untouched; the
agent's shell commands see the private ``XDG_CONFIG_HOME`` too. Its tools are ``orch_<tool>``.
"""

from __future__ import annotations

import os
from typing import Any

from agents.clis.base import (MCP_TOKEN_ENV, MCP_TOOL_TIMEOUT_S, MODEL_SERVER_ENV, CliEvent, Invocation, JsonLinesParser, Preset, bearer,
                              error, log, looks_rate_limited, mcp_env, num, retry_after_in, scratch_json, step, tokens)


def build(inv: Invocation) -> list[str]:
    argv = ["run", "--format", "json", "--dir", inv.worktree]  # never a project found elsewhere
    if inv.settings["auto"]:
        argv.append("--auto")
    if inv.model:
        argv += ["--model", inv.model]
    elif os.environ.get(MODEL_SERVER_ENV):  # the run's model server, declared as provider "orch" in its env
        argv += ["--model", "orch/orch"]
    return argv + list(inv.extra_args)


def opencode_env(inv: Invocation) -> dict[str, str]:
    """With orch's coordination server: a private config directory whose global config declares
    only that server (see the module's doc), and the agent's token."""
    if not inv.mcp:
        return {}
    name = inv.mcp.name
    config = {"mcp": {name: {"type": "remote", "url": inv.mcp.url, "headers": bearer(f"{{env:{MCP_TOKEN_ENV}}}"), "enabled": True,
                             "oauth": False, "timeout": MCP_TOOL_TIMEOUT_S * 1000}},
              "permission": {f"{name}_*": "allow"}}
    home = scratch_json(inv, "opencode-config/opencode/opencode.json", config).parents[1]
    return {"XDG_CONFIG_HOME": str(home), "OPENCODE_DISABLE_PROJECT_CONFIG": "1", **mcp_env(inv)}


class OpencodeParser(JsonLinesParser):
    def on_object(self, obj: dict[str, Any]) -> list[CliEvent]:
        kind = obj.get("type")
        part = obj.get("part") if isinstance(obj.get("part"), dict) else {}
        if obj.get("sessionID"):
            self.info["session_id"] = obj["sessionID"]
        if kind == "tool_use":
            state = part.get("state") or {}
            out = [step(str(part.get("tool") or "tool"), state.get("input"))]
            if state.get("status") == "error":
                out.append(log(f"tool {part.get('tool')} failed: {str(state.get('error'))[:200]}", "warning"))
            return out
        if kind == "step_finish":
            t = part.get("tokens") or {}
            cache = t.get("cache") or {}
            return [tokens(num(t.get("input")) + num(cache.get("write")), num(t.get("output")), num(cache.get("read")),
                           num(t.get("reasoning")), part.get("cost"))]
        if kind == "error":
            return self._error(obj.get("error") or {})
        if kind == "done" and obj.get("rejected"):
            return [log(f"opencode rejected permissions: {', '.join(map(str, obj['rejected']))}", "warning")]
        return []

    def _error(self, err: dict[str, Any]) -> list[CliEvent]:
        data = err.get("data") if isinstance(err.get("data"), dict) else {}
        msg = str(data.get("message") or err.get("message") or err.get("name") or "error")
        status = data.get("statusCode")
        self.failure = f"opencode: {err.get('name') or 'error'}: {msg[:500]}"
        out = []
        if status == 429 or looks_rate_limited(msg):
            headers = data.get("responseHeaders") or {}
            wait = str(headers.get("retry-after", ""))
            seconds = float(wait) if wait.replace(".", "", 1).isdigit() else retry_after_in(msg)
            self.gave_up_rate_limited = seconds
            out.append(self._rate_limited(seconds))
        return out + [error(self.failure)]


PRESET = Preset(
    name="opencode",
    binary="opencode",
    install="npm install -g opencode-ai",
    key_env=("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "OPENROUTER_API_KEY", "GEMINI_API_KEY",
             "GOOGLE_GENERATIVE_AI_API_KEY", "GROQ_API_KEY", "XAI_API_KEY", "DEEPSEEK_API_KEY", "OPENCODE_API_KEY"),
    key_files=("$XDG_DATA_HOME/opencode/auth.json", "~/.local/share/opencode/auth.json"),
    settings={"auto": True},
    build=build,
    parser=OpencodeParser,
    help_argv=("run", "--help"),
    prompt_on_stdin=True,
    env=opencode_env,
    doc="opencode run --format json",
)
