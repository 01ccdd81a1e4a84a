"""A derived metric's expression: arithmetic over other metrics, parsed with ast, never eval'd; what
it may not write is refused when parsed, what it cannot compute is None or one error."""

from __future__ import annotations

import pytest

from orchestrator.views.derived import Expression, ExpressionError

VALUES = {"done": 6, "wall": 3_600_000, "none": None, "zero": 0,
          "busy_ms": {"w1": 300, "w2": 100, "w3": 200}, "utilization": {"mean": 0.5, "w1": 0.9, "w2": 0.1},
          "tokens": {"in": 10, "out": 5, "total": 15}, "empty": {}}


@pytest.mark.parametrize("text,value", [
    ("done / (wall / 3600000)", 6.0),
    ("2 + 3 * 4 - 10 // 3 % 2", 13),
    ("-done + +1", -5),
    ("2 ** 10", 1024.0),
    ("min(done, 4, 9) + max(1, done) + abs(-2) + round(2.567, 1)", 4 + 6 + 2 + 2.6),
    ("max(busy_ms) - min(busy_ms)", 200),
    ("sum(busy_ms) / done", 100.0),
    ("mean(busy_ms)", 200),
    ("max(utilization)", 0.9),  # the per-agent values: the mean entry is not an agent's
    ("sum(tokens)", 15),  # nor is a total
    ("tokens[\"total\"] / tokens['in']", 1.5),
    ("busy_ms['w9']", None),  # no such agent: no sample
    ("done > 5", 1),
    ("1 < done <= 5", 0),
    ("done if wall > 0 else 0", 6),
    ("done / zero", None),  # division by zero: undefined, not an error
    ("done // zero + 1", None),
    ("done % zero", None),
    ("none * 2 + done", None),  # a metric without a sample makes the result None
    ("max(empty)", None),
    ("max(none)", None),
])
def test_values(text, value):
    e = Expression(text)
    got = e.evaluate(VALUES)
    assert got == pytest.approx(value) if value is not None else got is None
    assert set(e.names) <= set(VALUES)


def test_names_are_the_metrics_read_in_order_once():
    assert Expression("a / (b + a) * max(c)").names == ["a", "b", "c"]


@pytest.mark.parametrize("text,needle", [
    ("done /", "not an expression"),
    ("done $ 2", "not an expression at column 6"),
    ("__import__('os').system('true')", "the functions are min, max, abs, round, sum and mean"),
    ("done.real", "'done.real': not allowed"),
    ("open('x')", "the functions are"),
    ("(lambda: 1)()", "the functions are"),
    ("[x for x in busy_ms]", "not allowed"),
    ("'text'", "only numbers"),
    ("True + 1", "only numbers"),
    ("done and wall", "not allowed"),
    ("busy_ms[0]", "a subscript is a metric's name and a quoted key"),
    ("max(*busy_ms)", "with plain arguments"),
    ("round(done, ndigits=2)", "with plain arguments"),
    ("abs(1, 2)", "abs takes 1 argument"),
    ("sum(1 + 2)", "sum takes one metric that is a mapping"),
    ("done = 1", "not an expression"),
])
def test_what_may_not_be_written_is_refused_when_parsed(text, needle):
    with pytest.raises(ExpressionError, match=None) as e:
        Expression(text)
    assert needle in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("text,needle", [
    ("busy_ms + 1", "busy_ms is a mapping, not a number"),
    ("busy_ms", "its value is a mapping"),
    ("done['x']", "done is a number, not a mapping"),
    ("sum(done)", "done is a number, not a mapping"),
    ("10.0 ** 400", "cannot be computed"),  # overflow is no silent infinity
    ("1e300 * 1e300", "not a finite number"),
    ("(-8) ** 0.5", "not a finite number"),
])
def test_what_cannot_be_computed_is_one_error(text, needle):
    with pytest.raises(ExpressionError) as e:
        Expression(text).evaluate(VALUES)
    assert needle in str(e.value)
