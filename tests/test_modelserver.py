"""The scripted model server alone, with the official SDKs (``anthropic``, ``openai``) as clients.

Every test starts its own server on 127.0.0.1 (port 0) and stops it. Protocol: streaming and not,
tool calls, usage, for the Anthropic Messages API and OpenAI's Chat Completions and Responses.
Faults: 429 + retry-after, 529, a cut stream, a hanging stream, a tool-call loop, a plain error.
Scripts: ``file``, ``sim`` (its edits run for real in a git repo), ``replay`` (a real commit
reproduced by running the served tool call). And ``orch model-server`` as a process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import anthropic
import openai
import pytest

from coordstore.errors import InputError
from gitfixtures import GIT_ID, git, make_repo, write
from coordstore.models import Task
from orchestrator.modelserver import ModelServer, session_url
from orchestrator.modelserver.scripts import FileScript
from orchestrator.modelserver.tasksource import GraphTasks

BASH = [{"name": "Bash", "description": "run a command", "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}}}]
CHAT_TOOLS = [{"type": "function", "function": {"name": "shell", "parameters": {
    "type": "object", "properties": {"command": {"type": "array", "items": {"type": "string"}}}}}}]
RESP_TOOLS = [{"type": "function", "name": "exec_command", "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}}}]


def script_file(tmp_path: Path, turns, name: str = "script.yaml") -> Path:
    import yaml

    p = tmp_path / name
    p.write_text(yaml.safe_dump(turns) if name.endswith(".yaml") else json.dumps(turns))
    return p


@pytest.fixture
def serve(tmp_path):
    """``serve(script, **kw)`` -> a started ModelServer; every one is stopped after the test."""
    started: list[ModelServer] = []

    def start(script, **kw) -> ModelServer:
        if isinstance(script, list):
            script = str(script_file(tmp_path, script, f"s{len(started)}.yaml"))
        srv = ModelServer(script, **kw).start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


def anth(srv: ModelServer, base: str | None = None, **kw) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=base or srv.url, api_key="k", max_retries=kw.pop("max_retries", 0), **kw)


def oai(srv: ModelServer, base: str | None = None, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=(base or srv.url) + "/v1", api_key="k", max_retries=kw.pop("max_retries", 0), **kw)


def after_tools(n: int) -> list[dict]:
    """An Anthropic conversation that has had ``n`` tool-call turns."""
    msgs: list[dict] = [{"role": "user", "content": "go"}]
    for i in range(n):
        msgs += [{"role": "assistant", "content": [{"type": "tool_use", "id": f"t{i}", "name": "Bash", "input": {"command": "x"}}]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"t{i}", "content": "ok"}]}]
    return msgs


def is_transport_error(e: BaseException) -> bool:
    """A broken or timed-out connection, as either SDK (or its HTTP library underneath) reports it."""
    names = {c.__name__ for c in type(e).__mro__}
    return bool(names & {"APIConnectionError", "APITimeoutError", "TransportError"})


TWO_TURNS = [{"text": "Looking.", "bash": "echo hi > a.txt", "usage": {"input": 1200, "output": 80, "cached": 500, "thinking": 30}},
             "All done."]


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

    return genai.Client(api_key="k", http_options=types.HttpOptions(base_url=base or srv.url,
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


# ---------------------------------------------------------------- faults
def test_rate_limit_once_with_retry_after_then_the_turn(serve):
    srv = serve([{"fault": {"kind": "rate_limit", "retry_after": 2}}, {"bash": "true"}])
    with pytest.raises(anthropic.RateLimitError) as e:
        anth(srv).messages.create(model="m", max_tokens=10, messages=after_tools(0), tools=BASH)
    assert e.value.response.headers["retry-after"] == "2" and e.value.response.headers["retry-after-ms"] == "2000"
    m = anth(srv).messages.create(model="m", max_tokens=10, messages=after_tools(0), tools=BASH)
    assert m.content[0].name == "Bash"
    assert [(r["status"], r["fault"], r.get("retry_after")) for r in srv.requests] == [(429, "rate_limit", 2), (200, None, None)]
    assert srv.usage()["requests"] == 1  # a refused request delivered no tokens


def test_sdk_retries_429_and_529_by_itself(serve):
    srv = serve([{"fault": {"kind": "rate_limit", "retry_after": 0.2}}, {"bash": "true"},
                 {"fault": {"kind": "overloaded", "retry_after": 0.2}}, "ok"])
    c = anth(srv, max_retries=2)
    assert c.messages.create(model="m", max_tokens=10, messages=after_tools(0), tools=BASH).stop_reason == "tool_use"
    assert c.messages.create(model="m", max_tokens=10, messages=after_tools(1), tools=BASH).content[0].text == "ok"
    assert [r["status"] for r in srv.requests] == [429, 200, 529, 200]


def test_openai_rate_limit_and_overloaded(serve):
    srv = serve([{"fault": {"kind": "rate_limit", "times": 2}}, {"text": "x"}, {"fault": "overloaded"}, "y"])
    c = oai(srv)
    for _ in range(2):
        with pytest.raises(openai.RateLimitError) as e:
            c.chat.completions.create(model="g", messages=[{"role": "user", "content": "go"}])
        assert e.value.response.headers["retry-after"] == "1"
    assert c.chat.completions.create(model="g", messages=[{"role": "user", "content": "go"}]).choices[0].message.content == "x"
    with pytest.raises(openai.InternalServerError) as e:  # 503: OpenAI has no 529
        c.responses.create(model="g", input=[{"role": "user", "content": "go"}, {"role": "assistant", "content": "x"},
                                             {"role": "user", "content": "more"}])
    assert e.value.status_code == 503


def test_overloaded_and_plain_error_anthropic(serve):
    srv = serve([{"fault": "overloaded"}, {"bash": "true"}, {"fault": {"kind": "error", "status": 400, "message": "no such thing"}}, "x"])
    with pytest.raises(anthropic.APIStatusError) as e:
        anth(srv).messages.create(model="m", max_tokens=10, messages=after_tools(0), tools=BASH)
    assert e.value.status_code == 529 and e.value.body["error"]["type"] == "overloaded_error"
    with pytest.raises(anthropic.BadRequestError) as e:
        anth(srv, max_retries=2).messages.create(model="m", max_tokens=10, messages=after_tools(1), tools=BASH)
    assert "no such thing" in str(e.value)
    assert [r["status"] for r in srv.requests] == [529, 400]  # a 400 is not retried


@pytest.mark.parametrize("stream", [True, False])
def test_cut_response_breaks_then_the_retry_gets_the_turn(serve, stream):
    srv = serve([{"fault": "cut"}, {"bash": "echo retried"}])
    c = anth(srv)
    with pytest.raises(Exception) as e:
        if stream:
            with c.messages.stream(model="m", max_tokens=10, messages=after_tools(0), tools=BASH) as s:
                s.get_final_message()
        else:
            c.messages.create(model="m", max_tokens=10, messages=after_tools(0), tools=BASH)
    assert is_transport_error(e.value), repr(e.value)
    m = c.messages.create(model="m", max_tokens=10, messages=after_tools(0), tools=BASH)
    assert m.content[0].input["command"] == "echo retried"
    assert [r["fault"] for r in srv.requests] == ["cut", None]


def test_hanging_stream_never_finishes_and_ends_with_the_server(serve):
    srv = serve([{"fault": "hang"}, "x"])
    c = anth(srv, timeout=1.0)
    t0 = time.monotonic()
    with pytest.raises(Exception) as e:
        with c.messages.stream(model="m", max_tokens=10, messages=after_tools(0), tools=BASH) as s:
            first = next(iter(s))  # the stream has begun ...
            assert first.type == "message_start"
            s.get_final_message()  # ... and says nothing more
    assert is_transport_error(e.value), repr(e.value)
    assert 0.9 < time.monotonic() - t0 < 10
    assert srv.requests[0]["fault"] == "hang"
    # a client that stays is released when the server stops
    import threading

    errors: list[BaseException] = []

    def stay() -> None:
        try:
            with anth(srv, timeout=60).messages.stream(model="m", max_tokens=10, messages=after_tools(0), tools=BASH) as s2:
                s2.get_final_message()
        except BaseException as ex:  # noqa: BLE001 - collected for the assertion below
            errors.append(ex)

    srv2 = serve([{"fault": {"kind": "hang", "times": None}}])
    srv = srv2
    t = threading.Thread(target=stay)
    t.start()
    deadline = time.monotonic() + 5
    while not srv2.requests and time.monotonic() < deadline:
        time.sleep(0.02)
    t0 = time.monotonic()
    srv2.stop()
    t.join(10)
    assert not t.is_alive() and time.monotonic() - t0 < 5
    assert errors and is_transport_error(errors[0]), errors


def test_tool_call_loop_repeats_forever(serve):
    srv = serve([{"bash": "ls"}, {"bash": "git status", "fault": "loop"}, "never reached"])
    c = anth(srv)
    got = [c.messages.create(model="m", max_tokens=10, messages=after_tools(n), tools=BASH).content[0].input["command"]
           for n in range(6)]
    assert got == ["ls"] + ["git status"] * 5


def test_server_level_faults_on_demand_apply_to_any_script(serve):
    from orchestrator.cli_model import parse_fault_option

    turn, fault = parse_fault_option("rate_limit@1:retry_after=3:times=2")
    assert (turn, fault.kind, fault.retry_after_s, fault.times) == (1, "rate_limit", 3.0, 2)
    srv = serve(TWO_TURNS, faults=dict([parse_fault_option("overloaded@0")]))
    with pytest.raises(anthropic.APIStatusError):
        anth(srv).messages.create(model="m", max_tokens=10, messages=after_tools(0), tools=BASH)
    assert anth(srv).messages.create(model="m", max_tokens=10, messages=after_tools(0), tools=BASH).stop_reason == "tool_use"
    with pytest.raises(InputError, match="KIND@TURN"):
        parse_fault_option("rate_limit")
    with pytest.raises(InputError, match=r"--fault 'nope@1'.*kind"):
        parse_fault_option("nope@1")


def test_sessions_keep_their_own_fault_state(serve):
    srv = serve([{"fault": "rate_limit"}, {"bash": "true"}])
    for name in ("a", "b"):  # each session meets its own 429
        with pytest.raises(anthropic.RateLimitError):
            anth(srv, base=session_url(srv.url, session=name)).messages.create(model="m", max_tokens=10, messages=after_tools(0), tools=BASH)
    assert [r["session"] for r in srv.requests] == ["a", "b"]


# ---------------------------------------------------------------- file scripts
def test_file_script_errors_name_the_file_and_key(tmp_path):
    bad = [({"turns": [{"bash": 3}]}, "turns.0.bash"),
           ([{"text": "x", "fault": {"kind": "flood"}}], "turns.0.fault.kind"),
           ([{"txt": "x"}], "turns.0.txt"),
           ([{"fault": {"kind": "rate_limit", "retry_after": -1}}], "turns.0.fault.retry_after"),
           ([], "non-empty list")]
    for i, (data, where) in enumerate(bad):
        p = script_file(tmp_path, data, f"bad{i}.json")
        with pytest.raises(InputError) as e:
            FileScript.load(p)
        assert str(p) in str(e.value) and where in str(e.value), str(e.value)
    (tmp_path / "broken.yaml").write_text("- [unclosed\n")
    with pytest.raises(InputError, match="broken.yaml: not valid YAML"):
        FileScript.load(tmp_path / "broken.yaml")
    with pytest.raises(InputError, match="not sim, replay, nor an existing script file"):
        ModelServer(str(tmp_path / "missing.yaml"))


def test_fault_only_turn_attaches_to_the_next(tmp_path):
    s = FileScript.from_data([{"fault": "rate_limit"}, {"bash": "a"}, "end", {"fault": "hang"}], "x")
    assert [(t.fault.kind if t.fault else None, [c.input["command"] for c in t.tool_calls], t.text) for t in s.turns] == \
        [("rate_limit", ["a"], ""), (None, [], "end"), ("hang", [], "Done.")]


# ---------------------------------------------------------------- sim and replay against real git
def run_conversation(c: anthropic.Anthropic, cwd: Path, limit: int = 30) -> list:
    """Drive a conversation the way an agent CLI does: run every Bash call in ``cwd``, send the results."""
    msgs: list[dict] = [{"role": "user", "content": "Do the task."}]
    replies = []
    for _ in range(limit):
        m = c.messages.create(model="m", max_tokens=100, messages=msgs, tools=BASH)
        replies.append(m)
        if m.stop_reason != "tool_use":
            return replies
        results = []
        for b in m.content:
            if b.type == "tool_use":
                p = subprocess.run(["bash", "-c", b.input["command"]], cwd=cwd, capture_output=True, text=True, env={**os.environ, **GIT_ID})
                results.append({"type": "tool_result", "tool_use_id": b.id, "content": (p.stdout + p.stderr) or "(no output)",
                                "is_error": p.returncode != 0})
        msgs += [{"role": "assistant", "content": [b.model_dump(include={"type", "id", "name", "input", "text"}) for b in m.content]},
                 {"role": "user", "content": results}]
    raise AssertionError(f"no end after {limit} turns")


def test_sim_script_makes_the_sim_kinds_edits_with_its_tokens(serve, tmp_path):
    from agents.kinds.simplan import SimOptions, edit_text, make_plan

    repo = make_repo(tmp_path / "repo", {"src/a.py": "x = 1\n# orch-slot: t1\n", "README.md": "hi\n"})
    task = Task(id="t1", title="Add the thing", file_scope=["src/a.py", "docs/"], time_estimate_ms=120_000)
    srv = serve("sim")
    base = session_url(srv.url, task=task, seed=7, attempt=1, worktree=str(repo))
    replies = run_conversation(anth(srv, base=base), repo)
    plan = make_plan(task, 7, 1, 1.0, SimOptions())
    assert len(replies) == len(plan.steps) + 1 and replies[-1].stop_reason == "end_turn"
    new_a, _ = edit_text("x = 1\n# orch-slot: t1\n", "src/a.py", task, plan.digest)
    assert (repo / "src/a.py").read_text() == new_a and "# task t1: Add the thing [sim" in new_a
    docs = list((repo / "docs").iterdir())
    assert [p.name for p in docs] == ["t1.md"] and docs[0].read_text() == edit_text(None, "docs/t1.md", task, plan.digest)[0]
    served = [r for r in srv.requests if r["tool_calls"]]
    assert [(r["usage"]["in"], r["usage"]["out"], r["usage"]["cached"], r["usage"]["thinking"]) for r in served] == \
        [s.tokens for s in plan.steps]
    assert {r["session"] for r in srv.requests} == {"t1.1"} and {r["task"] for r in srv.requests} == {"t1"}


def test_sim_faults_become_http_faults(serve, tmp_path):
    """The sim plan's rate limit is served as one 429 with its retry-after, and p_stall as a hang."""
    from agents.kinds.simplan import SimOptions, make_plan

    task = Task(id="t9", title="x", time_estimate_ms=300_000, meta={"sim": {"p_rate_limit": 1.0, "retry_after_s": 4}})
    plan = make_plan(task, 1, 1, 0.5, SimOptions(p_rate_limit=1.0, retry_after_s=4))
    srv = serve("sim")
    c = anth(srv, base=session_url(srv.url, task=task, seed=1, attempt=1, time_scale=0.5, worktree=str(tmp_path)))
    k = plan.rate_limit_step
    with pytest.raises(anthropic.RateLimitError) as e:
        c.messages.create(model="m", max_tokens=10, messages=after_tools(k), tools=BASH)
    assert e.value.response.headers["retry-after"] == "2"  # 4 agent seconds x time scale 0.5
    assert c.messages.create(model="m", max_tokens=10, messages=after_tools(k), tools=BASH).stop_reason == "tool_use"

    stall = Task(id="t8", title="y", time_estimate_ms=300_000, meta={"sim": {"p_stall": 1.0}})
    c2 = anth(srv, base=session_url(srv.url, task=stall, seed=1, worktree=str(tmp_path)), timeout=0.5)
    splan = make_plan(stall, 1, 1, 1.0, SimOptions(p_stall=1.0))
    with pytest.raises(Exception) as e2:
        c2.messages.create(model="m", max_tokens=10, messages=after_tools(splan.fault_step), tools=BASH)
    assert is_transport_error(e2.value)
    assert srv.requests[-1]["fault"] == "hang"


def test_replay_script_reproduces_a_real_commit(serve, tmp_path):
    repo = make_repo(tmp_path / "repo", {"a.py": "one\ntwo\nthree\n", "gone.txt": "bye\n", "keep.txt": "k\n"})
    write(repo, {"a.py": "one\n2\nthree\nfour\n", "gone.txt": None, "new/b.bin": bytes(range(256)),
                 "noeol.txt": "no newline at the end", "ORCH_EOF.txt": "ORCH_EOF\n"})
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "the change\n\nwith a body")
    target = git(repo, "rev-parse", "HEAD")
    wt = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", "--detach", str(wt), "HEAD^")
    srv = serve("replay")
    base = session_url(srv.url, task={"id": "r1", "title": "the change", "meta": {"commit": target}}, worktree=str(wt))
    replies = run_conversation(anth(srv, base=base), wt)
    assert [r.stop_reason for r in replies] == ["tool_use", "end_turn"]
    assert "git apply" in replies[0].content[1].input["command"]
    git(wt, "add", "-A")
    assert git(wt, "write-tree") == git(repo, "rev-parse", f"{target}^{{tree}}")


def test_replay_with_commit_keeps_author_and_message(serve, tmp_path):
    repo = make_repo(tmp_path / "repo", {"a.txt": "a\n"})
    write(repo, {"a.txt": "b\n"})
    git(repo, "add", "-A")
    subprocess.run(["git", "commit", "-q", "-m", "orig msg\n\n  indented  \n"], cwd=repo, check=True, capture_output=True,
                   env={**os.environ, **GIT_ID, "GIT_AUTHOR_NAME": "Ada L", "GIT_AUTHOR_EMAIL": "ada@x", "GIT_AUTHOR_DATE": "1700000000 +0200"})
    target = git(repo, "rev-parse", "HEAD")
    wt = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", "--detach", str(wt), "HEAD^")
    srv = serve("replay", script_options={"commit": True})
    run_conversation(anth(srv, base=session_url(srv.url, task={"id": "r1", "meta": {"commit": target}}, worktree=str(wt))), wt)
    fmt = "%an|%ae|%ad|%B"
    assert git(wt, "log", "-1", "--date=raw", f"--format={fmt}") == git(repo, "log", "-1", "--date=raw", f"--format={fmt}", target)
    assert git(wt, "rev-parse", "HEAD^{tree}") == git(repo, "rev-parse", f"{target}^{{tree}}")


def test_replay_without_a_task_is_a_clear_400(serve):
    srv = serve("replay")
    with pytest.raises(anthropic.BadRequestError, match="carries no task"):
        anth(srv).messages.create(model="m", max_tokens=10, messages=after_tools(0), tools=BASH)
    assert srv.requests[0]["status"] == 400


def test_task_named_in_the_prompt_is_found_in_a_graph(serve, tmp_path):
    """No context in the URL: the task comes from orch's prompt line and the template."""
    tpl = tmp_path / "graph.json"
    tpl.write_text(json.dumps({"format": "orch-graph", "version": 1, "tasks": [
        {"id": "t1", "title": "first", "file_scope": ["x.md"], "time_estimate_ms": 30_000}], "dependencies": []}))
    repo = make_repo(tmp_path / "repo", {"x.md": "# doc\n"})
    srv = serve("sim", tasks=GraphTasks(tpl))
    prompt = "You are w1, a coding agent.\n\nTask t1: first\n\nDo it.\nCWD: ignored"
    m = anth(srv).messages.create(model="m", max_tokens=10, tools=BASH, system=f"CWD: {repo}",
                                  messages=[{"role": "user", "content": prompt}])
    assert m.stop_reason == "tool_use" and "x.md" in m.content[0].input["command"]
    assert (srv.requests[0]["session"], srv.requests[0]["task"]) == ("t1.1", "t1")


# ---------------------------------------------------------------- records over HTTP, and the command
def test_records_and_usage_over_http(serve):
    srv = serve(TWO_TURNS, record=None)
    anth(srv).messages.create(model="m", max_tokens=10, messages=after_tools(0), tools=BASH)
    reqs = json.load(urllib.request.urlopen(srv.url + "/_orch/requests", timeout=5))
    usage = json.load(urllib.request.urlopen(srv.url + "/_orch/usage", timeout=5))
    assert [r["tool_calls"] for r in reqs] == [["Bash"]] and usage["in"] == 1200 and usage["requests"] == 1


def test_raw_http_chunked_body_bad_json_and_unknown_route(serve):
    import http.client

    srv = serve(TWO_TURNS)

    def post(path: str, body, chunked: bool = False) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        conn.request("POST", path, body=iter([data[:10], data[10:]]) if chunked else data,
                     headers={"content-type": "application/json"}, encode_chunked=chunked)
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
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url
        c = anthropic.Anthropic(base_url=url, api_key="k", max_retries=0)
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
