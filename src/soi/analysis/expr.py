"""A tiny, safe expression language over per-example columns.

Used for custom category rules and selection filters, e.g. ``"confidence < 0.3 and variability > 0.2"``
or ``"soi in ['forgettable_lost', 'never_learned'] and task == 'rte'"``. Supported: column names,
numbers, strings, lists, comparisons (chained too), ``in`` / ``not in``, ``and`` / ``or`` / ``not``,
``+ - * / abs()``. Nothing else is evaluated (no attribute access, no calls but ``abs``).

Bounds (docs/errors.md): an expression has at most :data:`MAX_LENGTH` characters and :data:`MAX_DEPTH` levels
of nesting; numbers are evaluated as float64 (``1/0`` is ``inf``, a huge literal is a large float, never a
huge integer); arithmetic applies to numbers only, so there is no string or list repetition. Every failure
is a one-line :class:`SoiError`.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Mapping
from typing import Any

import numpy as np

from soi.errors import SoiError

_CMP = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
_BIN = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
MAX_LENGTH = 10_000
"""Longest accepted expression (characters)."""
MAX_DEPTH = 64
"""Deepest accepted nesting of the expression tree (operators, calls, lists)."""


def _depth(tree: ast.AST) -> int:
    """Depth of the syntax tree, computed without recursion."""
    deepest, stack = 0, [(tree, 0)]
    while stack:
        node, d = stack.pop()
        if not isinstance(node, ast.expr_context | ast.operator | ast.boolop | ast.cmpop | ast.unaryop):
            deepest = max(deepest, d)
            stack.extend((child, d + 1) for child in ast.iter_child_nodes(node))
    return deepest - 1  # the Expression wrapper is not a level


def _shown(expression: str) -> str:
    return expression if len(expression) <= 200 else expression[:200] + "..."


def parse(expression: str) -> ast.Expression:
    """Parse and check ``expression``; raises :class:`SoiError` on anything unsupported or too large."""
    if not isinstance(expression, str):
        raise SoiError(f"an expression must be a string, got {type(expression).__name__} {expression!r:.60}")
    if len(expression) > MAX_LENGTH:
        raise SoiError(f"expression too long ({len(expression):,} characters; at most {MAX_LENGTH:,})")
    shown = _shown(expression)
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise SoiError(f"cannot parse expression {shown!r}: {exc.msg}") from None
    except (ValueError, MemoryError, RecursionError) as exc:  # null bytes; nesting beyond the parser's stack
        reason = "nested too deeply" if isinstance(exc, MemoryError | RecursionError) else str(exc)
        raise SoiError(f"cannot parse expression {shown!r}: {reason}") from None
    if (depth := _depth(tree)) > MAX_DEPTH:
        raise SoiError(f"expression {shown!r} is nested too deeply ({depth} levels; at most {MAX_DEPTH})")
    for node in ast.walk(tree):
        ok = isinstance(node, ast.Expression | ast.BoolOp | ast.And | ast.Or | ast.UnaryOp | ast.Not
                        | ast.USub | ast.UAdd | ast.Compare | ast.BinOp | ast.Name | ast.Load
                        | ast.Constant | ast.List | ast.Tuple | ast.In | ast.NotIn | ast.Call) \
            or type(node) in _CMP or type(node) in _BIN
        if isinstance(node, ast.Call):
            ok = isinstance(node.func, ast.Name) and node.func.id == "abs" and len(node.args) == 1 \
                and not node.keywords
        if not ok:
            raise SoiError(f"unsupported syntax {type(node).__name__!r} in expression {shown!r}")
    return tree


def names(expression: str) -> set[str]:
    """Column names an expression refers to."""
    tree = parse(expression)
    calls = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and id(n) not in calls}


def evaluate(expression: str, columns: Mapping[str, np.ndarray], n: int | None = None) -> np.ndarray:
    """Evaluate ``expression`` over ``columns`` and return a boolean mask of length ``n``."""
    tree = parse(expression)
    shown = _shown(expression)
    if n is None:
        n = len(next(iter(columns.values()))) if columns else 0

    def ev(node: ast.AST) -> Any:
        match node:
            case ast.Expression(body=body):
                return ev(body)
            case ast.Name(id=name):
                if name not in columns:
                    raise SoiError(f"unknown column {name!r} in expression {shown!r}; "
                                   f"available: {sorted(columns)}")
                return np.asarray(columns[name])
            case ast.Constant(value=v):
                if isinstance(v, bool):
                    return np.bool_(v)
                if isinstance(v, int | float):  # float64: no huge integers, 1/0 is inf
                    return np.float64(v if isinstance(v, float) or abs(v) < 1e308 else (np.inf if v > 0 else -np.inf))
                if not isinstance(v, str):
                    raise SoiError(f"unsupported constant {v!r:.60} in expression {shown!r}")
                return v
            case ast.List(elts=elts) | ast.Tuple(elts=elts):
                return [ev(e) for e in elts]
            case ast.UnaryOp(op=ast.Not(), operand=x):
                return ~_as_bool(ev(x), shown)
            case ast.UnaryOp(op=ast.USub(), operand=x):
                return -_number(ev(x), shown)
            case ast.UnaryOp(op=ast.UAdd(), operand=x):
                return _number(ev(x), shown)
            case ast.BoolOp(op=op, values=values):
                masks = [_as_bool(ev(v), shown) for v in values]
                out = masks[0]
                for m in masks[1:]:
                    out = (out & m) if isinstance(op, ast.And) else (out | m)
                return out
            case ast.BinOp(left=a, op=op, right=b):
                return _BIN[type(op)](_number(ev(a), shown), _number(ev(b), shown))
            case ast.Call(args=[x]):
                return np.abs(_number(ev(x), shown))
            case ast.Compare(left=left, ops=ops, comparators=comps):
                out = None
                a = ev(left)
                for op, comp in zip(ops, comps, strict=True):
                    b = ev(comp)
                    if isinstance(op, ast.In | ast.NotIn):
                        if not isinstance(b, list):
                            raise SoiError(f"'in' needs a list on its right in expression {shown!r}")
                        res = np.isin(a, b)
                        res = ~res if isinstance(op, ast.NotIn) else res
                    else:
                        res = _CMP[type(op)](a, b)
                    res = np.asarray(res, dtype=bool)
                    out = res if out is None else out & res
                    a = b
                return out
        raise SoiError(f"unsupported syntax in expression {shown!r}")  # pragma: no cover

    try:
        with np.errstate(all="ignore"):
            result = np.asarray(ev(tree))
        if result.dtype != bool:
            raise SoiError(f"expression {shown!r} is not a condition (it gives {result.dtype} values)")
        return np.broadcast_to(result, (n,)).copy()
    except (TypeError, ValueError, ArithmeticError) as exc:  # e.g. comparing a string column with a number
        raise SoiError(f"cannot evaluate expression {shown!r}: {' '.join(str(exc).split())[:200]}") from None
    except (MemoryError, RecursionError):
        raise SoiError(f"cannot evaluate expression {shown!r}: too large") from None


def _number(x: Any, shown: str) -> Any:
    """``x`` when it is a number or numeric column (arithmetic on strings, lists or conditions is refused)."""
    if isinstance(x, np.floating | float | int) and not isinstance(x, bool):
        return x
    arr = np.asarray(x) if not isinstance(x, list | str) else None
    if arr is None or arr.dtype.kind not in "biuf":
        raise SoiError(f"arithmetic needs numbers in expression {shown!r}")
    return x


def _as_bool(x: Any, shown: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype != bool:
        raise SoiError(f"'and'/'or'/'not' need conditions in expression {shown!r}")
    return arr
