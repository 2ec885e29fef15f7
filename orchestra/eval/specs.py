"""What to evaluate: policy specs (``NAME[:ARG][,key=value,...]``) and the λ sweep."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

import numpy as np

from orchestra.errors import UserError

__all__ = ["DEFAULT_LAMBDAS", "LambdaSweep", "PolicySpec", "parse_lambdas"]

#: λ grid for policies with a cost trade-off that do not give their own (``default_lambdas``).
DEFAULT_LAMBDAS: tuple[float, ...] = (0.0, *(float(x) for x in np.geomspace(0.01, 100.0, 13)))

#: A parsed ``--lambdas``: ``"auto"`` (each policy's own grid) or the λ values to sweep.
LambdaSweep: TypeAlias = Literal["auto"] | list[float]


@dataclass(frozen=True)
class PolicySpec:
    """A policy to evaluate: ``NAME[:ARG][,key=value,...]``.

    ``NAME[:ARG]`` is anything :func:`~orchestra.policies.base.resolve_policy` accepts (a
    registered name, ``single:<model>``, a recipe path or name); ``key=value`` pairs are its
    parameters (values parsed as JSON when they parse, else strings), e.g.
    ``ensemble,k=3,select=cheapest`` or ``knn,path=routerbench-knn``. A ``lam=`` parameter fixes λ
    (no sweep).
    """

    text: str
    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> PolicySpec:
        s = text.strip()
        if not s:
            raise UserError(f"expected a policy like 'cheapest' or 'ensemble,k=3' (got {text!r})")
        head, *rest = s.split(",")
        params: dict[str, Any] = {}
        for item in rest:
            if "=" not in item:
                raise UserError(
                    f"policy {text!r}: expected key=value after ',' (got {item!r}); e.g. "
                    "'ensemble,k=3,select=cheapest'"
                )
            k, v = item.split("=", 1)
            try:
                params[k.strip()] = json.loads(v)
            except json.JSONDecodeError:
                params[k.strip()] = v.strip()
        return cls(text=s, name=head.strip(), params=params)


def parse_lambdas(text: str | Sequence[float] | None) -> LambdaSweep:
    """``"auto"`` (or None) → ``"auto"``; ``"0,0.1,1"`` or a list → the floats.

    Raises:
        UserError: a value that is not a number >= 0.
    """
    if text is None:
        return "auto"
    parts: Sequence[str | float]
    if isinstance(text, str):
        if text.strip().lower() == "auto":
            return "auto"
        parts = [p for p in text.replace(" ", ",").split(",") if p]
    else:
        parts = list(text)
    out = []
    for p in parts:
        try:
            v = float(p)
        except (TypeError, ValueError):
            raise UserError(f"expected --lambdas auto or numbers like 0,0.1,1 (got {p!r})") from None
        if not v >= 0 or math.isinf(v):
            raise UserError(f"expected λ >= 0 and finite (got {p!r})")
        out.append(v)
    if not out:
        raise UserError(f"expected --lambdas auto or a list of numbers (got {text!r})")
    return out
