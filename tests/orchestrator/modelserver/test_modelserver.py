"""The scripted model server's protocols, with the official SDKs (``anthropic``, ``openai``,
``google-genai``) as clients: streaming and not, tool calls, usage, side requests, for the
Anthropic Messages API, OpenAI's Chat Completions and Responses, and the Gemini API. Also the
request record over HTTP, raw HTTP edge cases, and ``orch model-server`` as a process.

Every test starts its own server on 127.0.0.1 (port 0) and stops it (the ``serve`` fixture).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request

import anthropic
import pytest

from modelserver_helpers import BASH, CHAT_TOOLS, RESP_TOOLS, TWO_TURNS, after_tools, anth, oai, script_file
from orchestrator.modelserver import ModelServer


# ---------------------------------------------------------------- Anthropic Messages
def test_anthropic_plain_tool_call_usage_and_next_turn(serve):
    srv = serve(TWO_TURNS)
    c = anth(srv)
    m = c.messages.create(model="claude-x", max_tokens=100, messages=after_tools(0), tools=BASH)
    assert m.stop_reason == "tool_use"
    assert [b.type for b in m.content] == ["text", "tool_use"]
    assert m.content[0].text == "Looking."
    call = m.content[1]
    assert call.name == "Bash" and call.input["command"] == "echo hi > a.txt"
    # Anthropic counts cache reads apart from input; thinking belongs to the output
    assert (m.usage.input_tokens, m.usage.cache_read_input_tokens, m.usage.output_tokens) == (700, 500, 110)
    m2 = c.messages.create(model="claude-x", max_tokens=100, messages=after_tools(1), tools=BASH)
    assert m2.stop_reason == "end_turn" and m2.content[0].text == "All done."
    assert m2.usage.input_tokens > 0 and m2.usage.output_tokens > 0  # estimated from the sizes
    r1, r2 = srv.requests
    assert (r1["api"], r1["model"], r1["messages"], r1["tools"], r1["turn"], r1["tool_calls"]) == ("anthropic", "claude-x", 1, ["Bash"], 0, ["Bash"])
    assert (r2["messages"], r2["turn"], r2["tool_calls"], r2["stream"]) == (3, 1, [], False)
    assert r1["usage"] == {"in": 1200, "out": 80, "cached": 500, "thinking": 30}
    assert srv.usage()["in"] == 1200 + r2["usage"]["in"] and srv.usage()["requests"] == 2


def test_anthropic_stream_matches_plain_answer(serve):
    srv = serve(TWO_TURNS)
    c = anth(srv)
    with c.messages.stream(model="claude-x", max_tokens=100, messages=after_tools(0), tools=BASH) as s:
        kinds = [ev.type for ev in s]
        final = s.get_final_message()
    plain = c.messages.create(model="claude-x", max_tokens=100, messages=after_tools(0), tools=BASH)
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "text" in kinds and kinds.count("input_json") >= 2  # the tool input arrives in pieces
    assert final.stop_reason == "tool_use"
    assert [b.model_dump(exclude={"id"}) for b in final.content] == [b.model_dump(exclude={"id"}) for b in plain.content]
    assert (final.usage.input_tokens, final.usage.cache_read_input_tokens, final.usage.output_tokens) == (700, 500, 110)
    assert [r["stream"] for r in srv.requests] == [True, False]


def test_anthropic_long_tool_input_streams_in_many_deltas(serve):
    cmd = "printf '%s\\n' " + " ".join(f"line{i}" for i in range(200)) + " > big.txt"
    srv = serve([{"bash": cmd}])
    with anth(srv).messages.stream(model="m", max_tokens=10, messages=after_tools(0), tools=BASH) as s:
        deltas = [ev for ev in s if ev.type == "content_block_delta"]
        final = s.get_final_message()
    assert len(deltas) > 10  # the JSON arrives in pieces, as the real API sends it
    assert final.content[0].input["command"] == cmd


def test_anthropic_side_request_without_tools_gets_structured_stub(serve):
    """claude asks for a session title (no tools, a JSON schema): answered aside, the script's
    turn 0 (and its fault) stays for the real conversation."""
    srv = serve([{"fault": "rate_limit"}, {"bash": "true"}])
    c = anth(srv)
    side = c.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "title?"}],
                             extra_body={"output_config": {"format": {"type": "json_schema", "schema": {
                                 "type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]}}}})
    assert json.loads(side.content[0].text) == {"title": "scripted"}
    with pytest.raises(anthropic.RateLimitError):
        c.messages.create(model="m", max_tokens=10, messages=after_tools(0), tools=BASH)
    assert [(r["side"], r["status"]) for r in srv.requests] == [(True, 200), (False, 429)]


def test_count_tokens_and_models(serve):
    srv = serve(TWO_TURNS)
    n = anth(srv).messages.count_tokens(model="m", messages=[{"role": "user", "content": "x" * 400}])
    assert n.input_tokens >= 100
    assert {m.id for m in oai(srv).models.list()} >= {"gpt-scripted"}


# ---------------------------------------------------------------- OpenAI Chat Completions
def test_chat_plain_and_stream_tool_calls_and_usage(serve):
    srv = serve(TWO_TURNS)
    c = oai(srv)
    r = c.chat.completions.create(model="gpt-x", messages=[{"role": "user", "content": "go"}], tools=CHAT_TOOLS)
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "tool_calls" and msg.content == "Looking."
    [call] = msg.tool_calls
    assert call.function.name == "shell"  # the portable bash call, shaped for a `shell` tool
    assert json.loads(call.function.arguments) == {"command": ["bash", "-lc", "echo hi > a.txt"]}
    assert (r.usage.prompt_tokens, r.usage.prompt_tokens_details.cached_tokens, r.usage.completion_tokens) == (1200, 500, 110)
    assert r.usage.completion_tokens_details.reasoning_tokens == 30

    chunks = list(c.chat.completions.create(model="gpt-x", messages=[{"role": "user", "content": "go"}], tools=CHAT_TOOLS,
                                            stream=True, stream_options={"include_usage": True}))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    args = "".join(tc.function.arguments or "" for ch in chunks if ch.choices for tc in ch.choices[0].delta.tool_calls or [])
    finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert text == "Looking." and json.loads(args) == json.loads(call.function.arguments) and finish == ["tool_calls"]
    assert chunks[-1].usage.prompt_tokens == 1200 and chunks[-1].choices == []

    follow = [{"role": "user", "content": "go"}, {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
              {"role": "tool", "tool_call_id": call.id, "content": "ok"}]
    r2 = c.chat.completions.create(model="gpt-x", messages=follow, tools=CHAT_TOOLS)
    assert r2.choices[0].finish_reason == "stop" and r2.choices[0].message.content == "All done."
    assert [(q["api"], q["turn"], q["messages"]) for q in srv.requests] == [("chat", 0, 1), ("chat", 0, 1), ("chat", 1, 3)]


def test_chat_with_the_helper_stream_api(serve):
    srv = serve(TWO_TURNS)
    with oai(srv).chat.completions.stream(model="gpt-x", messages=[{"role": "user", "content": "go"}],
                                          tools=CHAT_TOOLS) as s:
        for _ in s:
            pass
        done = s.get_final_completion()
    assert done.choices[0].message.tool_calls[0].function.name == "shell"


# ---------------------------------------------------------------- OpenAI Responses
def test_responses_plain_stream_and_previous_response_id(serve):
    srv = serve(TWO_TURNS)
    c = oai(srv)
    r = c.responses.create(model="gpt-x", input="go", tools=RESP_TOOLS)
    kinds = [o.type for o in r.output]
    assert kinds == ["message", "function_call"] and r.output_text == "Looking."
    fc = r.output[1]
    assert fc.name == "exec_command" and json.loads(fc.arguments) == {"cmd": "echo hi > a.txt"}
    assert (r.usage.input_tokens, r.usage.input_tokens_details.cached_tokens, r.usage.output_tokens) == (1200, 500, 110)

    with c.responses.stream(model="gpt-x", input="go", tools=RESP_TOOLS) as s:
        types = [ev.type for ev in s]
        final = s.get_final_response()
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert "response.function_call_arguments.delta" in types and "response.output_text.delta" in types
    assert json.loads(final.output[1].arguments) == {"cmd": "echo hi > a.txt"} and final.usage.output_tokens == 110

    # continued by reference (the server remembers the turn) ...
    r2 = c.responses.create(model="gpt-x", previous_response_id=r.id, tools=RESP_TOOLS,
                            input=[{"type": "function_call_output", "call_id": fc.call_id, "output": "ok"}])
    assert r2.output_text == "All done."
    # ... or sent in full (the turn is counted from the items)
    full = [{"role": "user", "content": "go"}, {"type": "function_call", "call_id": fc.call_id, "name": fc.name,
                                                 "arguments": fc.arguments}, {"type": "function_call_output", "call_id": fc.call_id, "output": "ok"}]
    assert c.responses.create(model="gpt-x", input=full, tools=RESP_TOOLS).output_text == "All done."
    assert [q["turn"] for q in srv.requests] == [0, 0, 1, 1]


# ---------------------------------------------------------------- Gemini
GEMINI_TOOLS = [{"function_declarations": [{"name": "run_shell_command", "description": "run a command",
                                            "parameters": {"type": "OBJECT", "properties": {"command": {"type": "STRING"}}}}]}]


def gem(srv: ModelServer, base: str | None = None):
    from google import genai
    from google.genai import types

    return genai.Client(api_key=srv.key, http_options=types.HttpOptions(base_url=base or srv.url,
                                                                   retry_options=types.HttpRetryOptions(attempts=1)))


def test_gemini_plain_stream_tool_calls_and_usage(serve):
    from google.genai import types

    srv = serve(TWO_TURNS)
    c = gem(srv)
    cfg = types.GenerateContentConfig(tools=GEMINI_TOOLS, automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True))
    r = c.models.generate_content(model="gemini-x", contents="go", config=cfg)
    assert r.text == "Looking." and r.candidates[0].finish_reason == types.FinishReason.STOP
    [call] = r.function_calls
    assert call.name == "run_shell_command" and call.args == {"command": "echo hi > a.txt"}
    u = r.usage_metadata
    assert (u.prompt_token_count, u.cached_content_token_count, u.candidates_token_count, u.thoughts_token_count) == (1200, 500, 80, 30)

    pieces = list(c.models.generate_content_stream(model="gemini-x", contents="go", config=cfg))
    assert "".join(p.text or "" for p in pieces if p.candidates and any(pt.text for pt in p.candidates[0].content.parts or [])) == "Looking."
    assert [fc.name for p in pieces for fc in p.function_calls or []] == ["run_shell_command"]
    assert pieces[-1].candidates[0].finish_reason == types.FinishReason.STOP and pieces[-1].usage_metadata.total_token_count == 1310

    history = [types.Content(role="user", parts=[types.Part(text="go")]), r.candidates[0].content,
               types.Content(role="user", parts=[types.Part.from_function_response(name=call.name, response={"output": "ok"})])]
    r2 = c.models.generate_content(model="gemini-x", contents=history, config=cfg)
    assert r2.text == "All done." and not r2.function_calls
    # the SDK's API version (v1 or v1beta) is its own choice; the server takes either
    assert [(q["api"], q["path"].split("/models/")[1], q["turn"], q["stream"]) for q in srv.requests] == [
        ("gemini", "gemini-x:generateContent", 0, False), ("gemini", "gemini-x:streamGenerateContent", 0, True),
        ("gemini", "gemini-x:generateContent", 1, False)]


def test_gemini_side_request_rate_limit_and_count_tokens(serve):
    from google.genai import errors, types

    srv = serve([{"fault": {"kind": "rate_limit", "retry_after": 2}}, "ok"])
    c = gem(srv)
    schema = {"type": "OBJECT", "properties": {"complexity_reasoning": {"type": "STRING"}, "complexity_score": {"type": "INTEGER"}},
              "required": ["complexity_reasoning", "complexity_score"]}
    side = c.models.generate_content(model="gemini-x", contents="route this", config=types.GenerateContentConfig(
        response_mime_type="application/json", response_schema=schema))
    assert json.loads(side.text) == {"complexity_reasoning": "scripted", "complexity_score": 0}
    with pytest.raises(errors.ClientError) as e:
        c.models.generate_content(model="gemini-x", contents="go")
    assert e.value.code == 429 and e.value.status == "RESOURCE_EXHAUSTED"
    assert e.value.details["error"]["details"][0]["retryDelay"] == "2s"
    assert c.models.generate_content(model="gemini-x", contents="go").text == "ok"
    assert c.models.count_tokens(model="gemini-x", contents="hello there").total_tokens > 0
    assert [(q["status"], q["side"]) for q in srv.requests] == [(200, True), (429, False), (200, False)]



# ---------------------------------------------------------------- records over HTTP, and the command
def test_records_and_usage_over_http(serve):
    srv = serve(TWO_TURNS, record=None)
    anth(srv).messages.create(model="m", max_tokens=10, messages=after_tools(0), tools=BASH)
    def get(path: str):
        return json.load(urllib.request.urlopen(urllib.request.Request(srv.url + path, headers={"x-api-key": srv.key}), timeout=5))

    reqs, usage = get("/_orch/requests"), get("/_orch/usage")
    assert [r["tool_calls"] for r in reqs] == [["Bash"]] and usage["in"] == 1200 and usage["requests"] == 1


def test_raw_http_chunked_body_bad_json_and_unknown_route(serve):
    import http.client

    srv = serve(TWO_TURNS)

    def post(path: str, body, chunked: bool = False) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        conn.request("POST", path, body=iter([data[:10], data[10:]]) if chunked else data,
                     headers={"content-type": "application/json", "x-api-key": srv.key}, encode_chunked=chunked)
        r = conn.getresponse()
        out = (r.status, json.loads(r.read()))
        conn.close()
        return out

    req = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "go"}], "tools": BASH}
    status, msg = post("/v1/messages", req, chunked=True)
    assert status == 200 and msg["content"][1]["name"] == "Bash"
    status, err = post("/v1/messages", b"{not json")
    assert status == 400 and "invalid JSON body" in err["error"]["message"]
    status, err = post("/v1/nothing", req)
    assert status == 404 and "/v1/nothing" in err["error"]["message"]
    assert len(srv.requests) == 1  # only the served conversation is recorded


def test_orch_model_server_command(tmp_path):
    script = script_file(tmp_path, TWO_TURNS)
    rec = tmp_path / "rec.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "model-server", "--script", str(script), "--port", "0",
                             "--record", str(rec), "--fault", "rate_limit@0:retry_after=0", "-v"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url, key = proc.stdout.readline().strip(), proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and len(key) >= 32, url
        with pytest.raises(anthropic.AuthenticationError):  # the printed key is the one it takes
            anthropic.Anthropic(base_url=url, api_key="k", max_retries=0).messages.create(model="m", max_tokens=10, messages=after_tools(0))
        c = anthropic.Anthropic(base_url=url, api_key=key, max_retries=0)
        with pytest.raises(anthropic.RateLimitError):
            c.messages.create(model="m", max_tokens=10, messages=after_tools(0), tools=BASH)
        assert c.messages.create(model="m", max_tokens=10, messages=after_tools(0), tools=BASH).content[1].name == "Bash"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "stopped; usage" in err and '"in": 1200' in err
    assert " 429 rate_limit" in err and " 200 Bash" in err  # --verbose: one line per request
    assert [json.loads(line)["status"] for line in rec.read_text().splitlines()] == [429, 200]


def test_orch_model_server_bad_script_is_one_line_error(tmp_path):
    p = subprocess.run([sys.executable, "-m", "orchestrator", "model-server", "--script", str(tmp_path / "nope.yaml")],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and p.stderr.count("\n") == 1 and "nope.yaml" in p.stderr and p.stdout == ""
