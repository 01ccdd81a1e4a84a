"""The CLI presets' parsers, on streams recorded from the real CLIs (``tests/fixtures/cli/``): tool
steps, tokens, cost, errors, rate limits and giving up on them, lines that are not JSON."""

from __future__ import annotations

import json
import time

import pytest

from agents.clis import parser_class
from fixtures_path import TEST_FIXTURES

FIXTURES = TEST_FIXTURES / "cli"


def parse(cli: str, name: str, rc: int = 0, cwd: str = "WT"):
    """Feed a fixture through the preset's parser: (parser, events)."""
    parser = parser_class(cli)()
    events = []
    path = next(p for p in (FIXTURES / f"{name}.jsonl", FIXTURES / f"{name}.txt") if p.exists())
    for line in path.read_text().splitlines(keepends=True):
        events += parser.feed(line.replace("{{cwd}}", cwd).replace("{{file}}", "hello.txt"))
    err = FIXTURES / f"{name}.stderr.txt"
    if err.exists():
        for line in err.read_text().splitlines(keepends=True):
            events += parser.feed_stderr(line)
    events += parser.finish(rc)
    return parser, events


def of(events, type_):
    return [e.data for e in events if e.type == type_]


def test_claude_edit_stream():
    parser, events = parse("claude", "claude-edit")
    assert [(s["name"], s["args"]["command"]) for s in of(events, "step")] == [("Bash", "printf 'hello from claude\\n' > WT/hello.txt")]
    [t] = of(events, "tokens")  # one, from the result line: the session's totals
    assert (t["in"], t["out"], t["cached"], t["thinking"]) == (2403 + 600, 83, 1000, 0)
    assert t["cost_usd"] == pytest.approx(0.027465)
    assert parser.failure is None and not of(events, "error") and not of(events, "rate_limited")
    assert parser.info["session_id"] == "df5eb2f5-0f30-4f88-ba13-86da3457f9f7" and parser.info["num_turns"] == 2


def test_claude_retried_rate_limit_is_back_pressure():
    parser, events = parse("claude", "claude-ratelimit")
    assert of(events, "rate_limited") == [{"retry_after": 1.0}]
    assert parser.failure is None and len(of(events, "step")) == 1


def test_claude_gives_up_on_rate_limit():
    parser, events = parse("claude", "claude-ratelimit-giveup", rc=1)
    assert [r["retry_after"] for r in of(events, "rate_limited")] == [1.0, pytest.approx(1.005, abs=1e-3)]
    assert "429" in parser.failure and "rate limit" in parser.failure
    assert parser.gave_up_rate_limited == pytest.approx(1.005, abs=1e-3)
    assert of(events, "error")[0]["msg"] == parser.failure


def test_claude_auth_error_fails_and_is_not_a_rate_limit():
    parser, events = parse("claude", "claude-autherror", rc=1)
    assert parser.failure == "claude: success: Invalid API key · Fix external API key"  # subtype says success, is_error says no
    assert parser.gave_up_rate_limited is None and not of(events, "rate_limited")
    assert any("authentication_failed" in log["msg"] for log in of(events, "log"))


def test_claude_subscription_limit_event():
    parser = parser_class("claude")()
    line = json.dumps({"type": "rate_limit_event", "rate_limit_info": {"status": "rejected", "resetsAt": time.time() + 90},
                       "uuid": "u", "session_id": "s"})
    [ev] = parser.feed(line)
    assert ev.type == "rate_limited" and 85 <= ev.data["retry_after"] <= 90
    assert parser.feed(json.dumps({"type": "rate_limit_event", "rate_limit_info": {"status": "allowed"}})) == []


def test_codex_edit_stream():
    parser, events = parse("codex", "codex-edit")
    [s] = of(events, "step")  # started and completed: one step
    assert s["name"] == "exec" and "hello from codex" in s["args"]
    [t] = of(events, "tokens")
    assert (t["in"], t["cached"], t["out"], t["thinking"], t["cost_usd"]) == (3001 - 1200, 1200, 101 - 24, 24, None)
    assert any("Model metadata" in log["msg"] for log in of(events, "log"))
    assert parser.failure is None and parser.info["session_id"] == "01a20a6e-1b49-7b22-a525-38245680102b"


def test_codex_turn_totals_become_deltas():
    parser = parser_class("codex")()
    first = parser.feed('{"type":"turn.completed","usage":{"input_tokens":100,"cached_input_tokens":40,"output_tokens":10}}')
    second = parser.feed('{"type":"turn.completed","usage":{"input_tokens":250,"cached_input_tokens":90,"output_tokens":30}}')
    assert (first[0].data["in"], first[0].data["cached"], first[0].data["out"]) == (60, 40, 10)
    assert (second[0].data["in"], second[0].data["cached"], second[0].data["out"]) == (100, 50, 20)


def test_codex_gives_up_on_rate_limit():
    parser, events = parse("codex", "codex-ratelimit-giveup", rc=1)
    assert len(of(events, "rate_limited")) == 2  # "Reconnecting... 429" and the final error
    assert parser.failure == "codex: turn failed: exceeded retry limit, last status: 429 Too Many Requests"
    assert parser.gave_up_rate_limited is not None


def test_gemini_edit_stream():
    parser, events = parse("gemini", "gemini-edit")
    [s] = of(events, "step")
    assert s["name"] == "run_shell_command" and s["args"]["command"].endswith("> WT/hello.txt")
    [t] = of(events, "tokens")
    assert (t["in"], t["out"], t["cached"], t["cost_usd"]) == (2403, 93, 300, None)
    assert parser.failure is None and parser.info["tool_calls"] == 1


def test_gemini_rate_limit_from_stderr_and_result_error():
    parser, events = parse("gemini", "gemini-ratelimit", rc=1)
    assert len(of(events, "rate_limited")) == 3  # two retries on stderr, one error event
    assert parser.failure.startswith("gemini: Error: Resource has been exhausted")
    assert parser.gave_up_rate_limited is not None
    p = parser_class("gemini")()
    p.finish(53)
    assert p.failure == "gemini: exit 53 (turn limit exceeded)"


def test_gemini_quota_retry_with_a_suggested_delay():
    """gemini 0.61's stderr for a 429 carrying RetryInfo: the wait it announces is the retry_after."""
    p = parser_class("gemini")()
    lines = ["Attempt 1 failed: Rate limited by the orch model server (scripted)",
             "Suggested retry after 2s.. Retrying after 5892ms...",
             "Attempt 2 failed with status 503. Retrying with backoff... ApiError: overloaded"]
    events = [e for line in lines for e in p.feed_stderr(line)]
    assert [(e.type, e.data.get("retry_after")) for e in events] == [("rate_limited", 5.892), ("log", None)]
    assert p.last_retry_after == 5.892


def test_opencode_edit_stream():
    parser, events = parse("opencode", "opencode-edit")
    [s] = of(events, "step")
    assert s["name"] == "bash" and "hello from claude" in s["args"]["command"]
    t1, t2 = of(events, "tokens")  # one per model step, each with opencode's own cost
    assert (t1["in"], t1["out"], t1["cached"], t1["cost_usd"]) == (1201 + 300, 41, 500, 0.005493)
    assert (t2["in"], t2["out"], t2["cost_usd"]) == (1202 + 300, 42, 0.005511)
    assert parser.failure is None and parser.info["session_id"].startswith("ses_")


def test_opencode_errors():
    parser, events = parse("opencode", "opencode-autherror", rc=1)
    assert parser.failure == "opencode: APIError: invalid x-api-key" and not of(events, "rate_limited")
    p = parser_class("opencode")()
    out = p.feed(json.dumps({"type": "error", "error": {"name": "APIError", "data": {
        "message": "Too Many Requests", "statusCode": 429, "responseHeaders": {"retry-after": "7"}}}}))
    assert [e.type for e in out] == ["rate_limited", "error"] and out[0].data["retry_after"] == 7.0
    assert p.gave_up_rate_limited == 7.0


def test_aider_edit_text():
    parser, events = parse("aider", "aider-edit")
    assert of(events, "step") == [{"name": "edit", "args": "hello.txt"}]
    [t] = of(events, "tokens")
    assert (t["in"], t["out"], t["cached"], t["cost_usd"]) == (2300, 57, 0, 0.0064)
    assert parser.failure is None and not of(events, "error")  # the price-list fetch noise is no error


def test_aider_rate_limit_retries_then_gives_up():
    parser, events = parse("aider", "aider-ratelimit")
    waits = [r["retry_after"] for r in of(events, "rate_limited")]
    assert waits[:4] == [0.2, 0.5, 1.0, 2.0] and len(waits) >= 6
    assert parser.failure and "rate limited" in parser.failure and parser.gave_up_rate_limited == waits[-1]


def test_aider_tokens_without_cost_and_with_cache():
    p = parser_class("aider")()
    out = p.feed("Tokens: 12k sent, 1.5k cache write, 3.4k cache hit, 143 received.\n")
    out += p.feed("Applied edit to a.py\n")
    kinds = [e.type for e in out]
    assert kinds == ["tokens", "step"]
    assert (out[0].data["in"], out[0].data["cached"], out[0].data["out"], out[0].data["cost_usd"]) == (12000, 3400, 143, None)


def test_non_json_lines_are_kept_as_debug_logs():
    p = parser_class("codex")()
    [ev] = p.feed("Reading additional input from stdin...\n")
    assert ev.type == "log" and ev.data["level"] == "debug"
