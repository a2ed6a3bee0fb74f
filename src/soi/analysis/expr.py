"""A tiny, safe expression language over per-example columns.

Used for custom category rules and selection filters, e.g. ``"confidence < 0.3 and variability > 0.2"``
or ``"soi in ['forgettable_lost', 'never_learned'] and task == 'rte'"``. Supported: column names,
numbers, strings, lists, comparisons (chained too), ``in`` / ``not in``, ``and`` / ``or`` / ``not``,
``+ - * / abs()``. Nothing else is evaluated (no attribute access, no calls but ``abs``).
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


def parse(expression: str) -> ast.Expression:
    """Parse and check ``expression``; raises :class:`SoiError` on anything unsupported."""
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise SoiError(f"cannot parse expression {expression!r}: {exc.msg}") from None
    for node in ast.walk(tree):
        ok = isinstance(node, ast.Expression | ast.BoolOp | ast.And | ast.Or | ast.UnaryOp | ast.Not
                        | ast.USub | ast.UAdd | ast.Compare | ast.BinOp | ast.Name | ast.Load
                        | ast.Constant | ast.List | ast.Tuple | ast.In | ast.NotIn | ast.Call) \
            or type(node) in _CMP or type(node) in _BIN
        if isinstance(node, ast.Call):
            ok = isinstance(node.func, ast.Name) and node.func.id == "abs" and len(node.args) == 1 \
                and not node.keywords
        if not ok:
            raise SoiError(f"unsupported syntax {type(node).__name__!r} in expression {expression!r}")
    return tree


def names(expression: str) -> set[str]:
    """Column names an expression refers to."""
    tree = parse(expression)
    calls = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and id(n) not in calls}


def evaluate(expression: str, columns: Mapping[str, np.ndarray], n: int | None = None) -> np.ndarray:
    """Evaluate ``expression`` over ``columns`` and return a boolean mask of length ``n``."""
    tree = parse(expression)
    if n is None:
        n = len(next(iter(columns.values()))) if columns else 0

    def ev(node: ast.AST) -> Any:
        match node:
            case ast.Expression(body=body):
                return ev(body)
            case ast.Name(id=name):
                if name not in columns:
                    raise SoiError(f"unknown column {name!r} in expression {expression!r}; "
                                   f"available: {sorted(columns)}")
                return np.asarray(columns[name])
            case ast.Constant(value=v):
                if not isinstance(v, int | float | str | bool):
                    raise SoiError(f"unsupported constant {v!r} in expression {expression!r}")
                return v
            case ast.List(elts=elts) | ast.Tuple(elts=elts):
                return [ev(e) for e in elts]
            case ast.UnaryOp(op=ast.Not(), operand=x):
                return ~_as_bool(ev(x), expression)
            case ast.UnaryOp(op=ast.USub(), operand=x):
                return -ev(x)
            case ast.UnaryOp(op=ast.UAdd(), operand=x):
                return ev(x)
            case ast.BoolOp(op=op, values=values):
                masks = [_as_bool(ev(v), expression) for v in values]
                out = masks[0]
                for m in masks[1:]:
                    out = (out & m) if isinstance(op, ast.And) else (out | m)
                return out
            case ast.BinOp(left=a, op=op, right=b):
                return _BIN[type(op)](ev(a), ev(b))
            case ast.Call(args=[x]):
                return np.abs(ev(x))
            case ast.Compare(left=left, ops=ops, comparators=comps):
                out = None
                a = ev(left)
                for op, comp in zip(ops, comps, strict=True):
                    b = ev(comp)
                    if isinstance(op, ast.In | ast.NotIn):
                        if not isinstance(b, list):
                            raise SoiError(f"'in' needs a list on its right in expression {expression!r}")
                        res = np.isin(a, b)
                        res = ~res if isinstance(op, ast.NotIn) else res
                    else:
                        res = _CMP[type(op)](a, b)
                    res = np.asarray(res, dtype=bool)
                    out = res if out is None else out & res
                    a = b
                return out
        raise SoiError(f"unsupported syntax in expression {expression!r}")  # pragma: no cover

    try:
        with np.errstate(divide="ignore", invalid="ignore"):
            result = np.asarray(ev(tree))
    except (TypeError, ValueError) as exc:  # e.g. comparing a string column with a number
        raise SoiError(f"cannot evaluate expression {expression!r}: {exc}") from None
    if result.dtype != bool:
        raise SoiError(f"expression {expression!r} is not a condition (it gives {result.dtype} values)")
    return np.broadcast_to(result, (n,)).copy()


def _as_bool(x: Any, expression: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype != bool:
        raise SoiError(f"'and'/'or'/'not' need conditions in expression {expression!r}")
    return arr
