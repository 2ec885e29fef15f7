"""Raw cells of benchmark files: missing values and prompts stored as lists of turns."""

from __future__ import annotations

import ast
import math
import re
from typing import Any


def _is_missing(v: Any) -> bool:
    """An empty cell: None, NaN (pandas), or a blank string."""
    return (
        v is None
        or (isinstance(v, float) and math.isnan(v))
        or (isinstance(v, str) and not v.strip())
    )


def _join_turns(v: Any) -> str | None:
    """RouterBench stores prompts and responses as the repr of a list of turns; join them.

    ``ast.literal_eval`` only builds literals (it never runs code). Anything that is not a
    list of strings is kept as written.
    """
    if _is_missing(v):
        return None
    if isinstance(v, list | tuple):
        return "\n\n".join(str(t) for t in v)
    s = str(v)
    st = s.strip()
    if len(st) >= 2 and st[0] == "[" and st[-1] == "]":
        fast = _single_literal(st)
        if fast is not None:
            return fast
        try:
            val = ast.literal_eval(st)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return s
        if isinstance(val, list | tuple) and all(isinstance(t, str) for t in val):
            return "\n\n".join(val)
    return s


# A one-element list of a plain quoted string, the common case: decoded without building an
# AST (10x faster). Anything else (other escapes, several turns) goes to ast.literal_eval.
_ONE_SQ = re.compile(r"\[\s*'((?:[^'\\\n]++|\\.)*+)'\s*\]", re.DOTALL)

_ONE_DQ = re.compile(r'\[\s*"((?:[^"\\\n]++|\\.)*+)"\s*\]', re.DOTALL)

_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"'}

_ESCAPE = re.compile(r"\\(.)", re.DOTALL)


def _single_literal(st: str) -> str | None:
    pattern = _ONE_SQ if st[1:2] == "'" else _ONE_DQ if st[1:2] == '"' else None
    m = pattern.fullmatch(st) if pattern is not None else None
    if m is None:
        return None
    body = m.group(1)
    if "\\" not in body:
        return body
    if any(e not in _SIMPLE_ESCAPES for e in _ESCAPE.findall(body)):
        return None
    return _ESCAPE.sub(lambda x: _SIMPLE_ESCAPES[x.group(1)], body)
