"""The model server's faults on demand, as the official SDKs meet them: 429 with retry-after,
529/503 overloaded, a plain error, a stream cut midway, a stream that never ends, a tool-call
loop; faults set on the server for any script, and each session's own fault state."""

from __future__ import annotations

import time

import anthropic
import openai
import pytest

from coordstore.errors import InputError
from modelserver_helpers import BASH, TWO_TURNS, after_tools, anth, is_transport_error, oai
from orchestrator.modelserver import session_url


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
    from orchestrator.cli.model import parse_fault_option

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
