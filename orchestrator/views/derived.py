"""A ``derived:`` metric's expression: parsed with ``ast`` into a small arithmetic language and
evaluated over other metrics' values, never by ``eval``.

The language: numbers; metric names; ``+ - * / // % **``, unary ``-`` and ``+``; parentheses;
comparisons (``< <= > >= == !=``, 1 or 0) and ``a if cond else b``; ``min``, ``max``, ``abs``,
``round``; ``name["key"]`` for one entry of a metric that is a mapping (``tokens["total"]``,
``busy_ms["w1"]``); and ``max``, ``min``, ``sum``, ``mean`` of one such metric over its values (the
per-agent ones: a ``mean`` or ``total`` entry is not an agent's). Nothing else parses: no
attributes, no other calls, no strings but a subscript's key.

A value that is None (a metric with no sample) makes the result None, as does a division by zero.
"""

from __future__ import annotations

import ast
import math
import operator
from statistics import mean
from typing import Any, Callable, Mapping

Number = int | float
_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
    ast.Pow: lambda a, b: float(a) ** float(b),  # floats: an int ** int could take forever to compute
}
_UNARY: dict[type, Callable[[Any], Any]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_COMPARE: dict[type, Callable[[Any, Any], bool]] = {
    ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
_FUNCTIONS: dict[str, Callable[..., Any]] = {"min": min, "max": max, "abs": abs, "round": round}
_AGGREGATES: dict[str, Callable[[list], Any]] = {"min": min, "max": max, "sum": sum, "mean": mean}
SUMMARY_ENTRIES = ("mean", "total")  # entries of a per-agent mapping that summarise the others
_ARITY = {"abs": (1, 1), "round": (1, 2), "min": (1, 64), "max": (1, 64), "sum": (1, 1), "mean": (1, 1)}


class ExpressionError(Exception):
    """An expression that does not parse, names what it may not, or cannot be evaluated."""


class _Undefined(Exception):
    """A None operand or a division by zero: the expression's value is None."""


class Expression:
    """One parsed expression; ``names`` are the metrics it reads."""

    def __init__(self, text: str):
        self.text = text
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as e:
            at = f" at column {e.offset}" if e.offset else ""
            raise ExpressionError(f"not an expression{at}: {e.msg}") from None
        self.names: list[str] = []
        self._check(tree.body)
        self._tree = tree.body

    def _check(self, node: ast.AST) -> None:
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
                raise ExpressionError(f"{node.value!r}: only numbers may be written in an expression")
        elif isinstance(node, ast.Name):
            if node.id not in self.names:
                self.names.append(node.id)
        elif isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            self._check(node.left)
            self._check(node.right)
        elif isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            self._check(node.operand)
        elif isinstance(node, ast.Compare) and all(type(op) in _COMPARE for op in node.ops):
            for part in (node.left, *node.comparators):
                self._check(part)
        elif isinstance(node, ast.IfExp):
            for part in (node.test, node.body, node.orelse):
                self._check(part)
        elif isinstance(node, ast.Subscript):
            key = node.slice
            if not (isinstance(node.value, ast.Name) and isinstance(key, ast.Constant) and isinstance(key.value, str)):
                raise ExpressionError("a subscript is a metric's name and a quoted key: busy_ms[\"w1\"]")
            self._check(node.value)
        elif isinstance(node, ast.Call):
            self._check_call(node)
        else:
            raise ExpressionError(f"{ast.unparse(node)!r}: not allowed (numbers, metric names, arithmetic, "
                                  "comparisons, min/max/abs/round/sum/mean)")

    def _check_call(self, node: ast.Call) -> None:
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if name not in _ARITY or node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise ExpressionError(f"{ast.unparse(node)!r}: the functions are min, max, abs, round, sum and mean, "
                                  "with plain arguments")
        low, high = _ARITY[name]
        if not low <= len(node.args) <= high:
            raise ExpressionError(f"{ast.unparse(node)!r}: {name} takes {low if low == high else f'{low} to {high}'} argument(s)")
        if name in ("sum", "mean") and not isinstance(node.args[0], ast.Name):
            raise ExpressionError(f"{ast.unparse(node)!r}: {name} takes one metric that is a mapping (busy_ms)")
        for a in node.args:
            self._check(a)

    def evaluate(self, values: Mapping[str, Any]) -> Number | None:
        """The value over ``values`` (every name in ``names``); None where undefined."""
        try:
            v = _Evaluator(values).visit(self._tree)
        except _Undefined:
            return None
        except KeyError as e:
            raise ExpressionError(f"{e.args[0]!r} has no value") from None
        except (OverflowError, ValueError, TypeError) as e:
            raise ExpressionError(f"cannot be computed: {e}") from None
        if v is None:
            return None
        if isinstance(v, bool):
            return int(v)
        if isinstance(v, dict):
            raise ExpressionError("its value is a mapping, not a number (take one entry, or max/min/sum/mean of it)")
        if isinstance(v, complex) or not math.isfinite(v):
            raise ExpressionError(f"its value is {v}, not a finite number")
        return v


class _Evaluator:
    def __init__(self, values: Mapping[str, Any]):
        self.values = values

    def visit(self, node: ast.AST) -> Any:
        return getattr(self, type(node).__name__)(node)

    def number(self, node: ast.AST) -> Number:
        v = self.visit(node)
        if v is None:
            raise _Undefined
        if isinstance(v, dict):
            raise ExpressionError(f"{ast.unparse(node)} is a mapping, not a number (take one entry, or max/min/sum/mean of it)")
        if isinstance(v, complex):
            raise ExpressionError(f"{ast.unparse(node)} is {v}, not a real number")
        return v

    def Constant(self, node: ast.Constant) -> Number:
        return node.value

    def Name(self, node: ast.Name) -> Any:
        return self.values[node.id]

    def Subscript(self, node: ast.Subscript) -> Any:
        mapping = self.visit(node.value)
        if mapping is None:
            raise _Undefined
        if not isinstance(mapping, dict):
            raise ExpressionError(f"{ast.unparse(node.value)} is a number, not a mapping: it has no [{node.slice.value!r}]")
        return mapping.get(node.slice.value)

    def BinOp(self, node: ast.BinOp) -> Number:
        left, right = self.number(node.left), self.number(node.right)
        try:
            return _BINARY[type(node.op)](left, right)
        except ZeroDivisionError:
            raise _Undefined from None

    def UnaryOp(self, node: ast.UnaryOp) -> Number:
        return _UNARY[type(node.op)](self.number(node.operand))

    def Compare(self, node: ast.Compare) -> int:
        left = self.number(node.left)
        for op, part in zip(node.ops, node.comparators):
            right = self.number(part)
            if not _COMPARE[type(op)](left, right):
                return 0
            left = right
        return 1

    def IfExp(self, node: ast.IfExp) -> Any:
        return self.visit(node.body) if self.number(node.test) else self.visit(node.orelse)

    def Call(self, node: ast.Call) -> Number:
        name = node.func.id
        if len(node.args) == 1 and name in _AGGREGATES:
            one = self.visit(node.args[0])
            if one is None:
                raise _Undefined
            if isinstance(one, dict):
                values = [self._entry(node.args[0], k, v) for k, v in one.items() if k not in SUMMARY_ENTRIES]
                if not values:
                    raise _Undefined  # no agent: no maximum
                return _AGGREGATES[name](values)
            if name in ("sum", "mean"):
                raise ExpressionError(f"{ast.unparse(node)}: {ast.unparse(node.args[0])} is a number, not a mapping")
            return one
        return _FUNCTIONS[name](*(self.number(a) for a in node.args))

    def _entry(self, node: ast.AST, key: str, v: Any) -> Number:
        if v is None:
            raise _Undefined
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise ExpressionError(f"{ast.unparse(node)}[{key!r}] is not a number")
        return v
