"""Turning a policy spec into a policy: a registered name (``"cheapest"``,
``"single:gpt-4o"``), a recipe file (``policies/x.yaml``) or an instance (:func:`resolve_policy`);
the built-in policies are imported here, so they register before any lookup."""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestra.errors import UserError
from orchestra.policies.base import Policy
from orchestra.policies.registry import PolicyFactory, registered

if TYPE_CHECKING:
    from orchestra.spec import Pool

__all__ = ["check_policy", "policy_base", "policy_names", "resolve_policy"]

_FACTORIES, _DOC_LINES = registered()


def policy_names() -> dict[str, str]:
    """Registered policy names with a one-line description."""
    _load_builtin()
    return dict(sorted(_DOC_LINES.items()))


def _load_builtin() -> None:
    # Importing the modules registers their policies.
    import orchestra.policies.baselines

    try:
        import orchestra.policies.learned
    except ImportError:
        pass
    # ``bandit`` registers itself; numpy loads when one is built.
    import orchestra.policies.bandit

    # ``escalate`` registers itself; numpy loads when one is built.
    import orchestra.policies.escalate

    # The GNN package registers ``gnn`` without importing torch (its factory does, lazily).
    import orchestra.policies.gnn
    import orchestra.policies.rl  # noqa: F401  (registers ``rl``; torch loads on first use)


def _call_factory(factory: PolicyFactory, name: str, pool: Pool, arg: str | None,
                  params: Mapping[str, Any]) -> Policy:
    sig = inspect.signature(factory)
    kwargs: dict[str, Any] = dict(params)
    accepts_var = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    if "pool" in sig.parameters:
        kwargs["pool"] = pool
    if arg is not None:
        if "arg" not in sig.parameters:
            raise UserError(f"policy {name!r} takes no argument (got {name}:{arg})")
        kwargs["arg"] = arg
    elif "arg" in sig.parameters and sig.parameters["arg"].default is inspect.Parameter.empty:
        raise UserError(f"policy {name!r} needs an argument, e.g. '{name}:<value>'")
    if not accepts_var:
        unknown = sorted(k for k in kwargs if k not in sig.parameters)
        if unknown:
            allowed = sorted(k for k in sig.parameters if k not in ("pool", "arg"))
            raise UserError(f"policy {name!r} got unknown parameter(s) {unknown}; allowed: {allowed}")
    for key, value in params.items():
        if key in sig.parameters and key not in ("pool", "arg"):
            _check_param(name, key, sig.parameters[key], value)
    return factory(**kwargs)


_SCALARS: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "bool": (bool,),
                                         "str": (str,), "None": (type(None),)}


def _check_param(policy: str, key: str, param: inspect.Parameter, value: Any) -> None:
    """Refuse a parameter whose value does not fit a plain scalar annotation (``int``,
    ``float | None``...): ``--param k=abc`` is a UserError here, not a TypeError mid-run."""
    ann = param.annotation
    names = [a.strip() for a in ann.split("|")] if isinstance(ann, str) else []
    if not names or any(n not in _SCALARS for n in names):
        return  # not a plain scalar (or not annotated): the factory checks it
    ok = any(isinstance(value, _SCALARS[n]) and not (isinstance(value, bool) and n != "bool")
             for n in names)
    if isinstance(value, float) and not math.isfinite(value):
        ok = False
    if not ok:
        got = repr(value)
        got = got if len(got) <= 60 else got[:59] + "…"
        expected = " or ".join("null" if n == "None" else n for n in names)
        example = {"int": "2", "float": "0.5", "bool": "true", "str": "text"}.get(names[0], "")
        raise UserError(f"policy {policy!r} parameter {key!r} expects {expected} (got {got}); "
                        f"e.g. --param {key}={example}")


def resolve_policy(spec: str | Path | Policy | None, pool: Pool,
                   params: Mapping[str, Any] | None = None) -> Policy:
    """Turn a name, a recipe file or an instance into a policy for ``pool``.

    Args:
        spec: ``"cheapest"``, ``"single:<model>"``, a registered name, a recipe YAML (a path or a
            name under ``policies/``), or a :class:`Policy`. ``None`` takes the pool's default.
        pool: the pool the policy will route over.
        params: keyword parameters for the factory (override the recipe's).

    Raises:
        UserError: for an unknown name (listing the known ones) or a bad recipe.
    """
    if spec is None:
        spec = pool.policy
    if not isinstance(spec, (str, Path)):
        check_policy(spec)
        return spec
    _load_builtin()
    s = str(spec)
    if s.endswith((".yaml", ".yml")) or Path(s).is_file():
        return _from_recipe(Path(s), pool, params)
    name, _, arg = s.partition(":")
    if name in _FACTORIES:
        return _call_factory(_FACTORIES[name], name, pool, arg or None, params or {})
    from orchestra._paths import find_named_file, named_files

    recipe = find_named_file("policies", s)
    if recipe is not None:
        return _from_recipe(recipe, pool, params)
    raise UserError(
        f"unknown policy {s!r}; known policies: {sorted(_FACTORIES)}; recipes: "
        f"{sorted(named_files('policies'))} (or give a path to a recipe YAML)"
    )


def check_policy(policy: Any) -> None:
    """Refuse an object that cannot serve as a policy, saying what it lacks.

    A policy has ``decide(view)``, ``async adecide(view)`` or ``start(ctx)``
    (returning a per-run decider with ``decide`` or ``adecide``); ``observe(feedback)`` is
    optional.
    """
    if not any(callable(getattr(policy, m, None)) for m in ("decide", "adecide", "start")):
        raise UserError(f"expected a policy name, recipe file or object with decide(view), async "
                        f"adecide(view) or start(ctx) (got {policy!r})")
    observe = getattr(policy, "observe", None)
    if observe is not None and not callable(observe):
        raise UserError(f"policy {policy!r}: 'observe' must be a method (got {observe!r})")


def _recipe(path: Path, params: Mapping[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """A recipe's registered policy name and its parameters merged with ``params`` (which win);
    relative artifact paths made relative to the recipe file."""
    from orchestra._yaml import read_yaml_file

    data = read_yaml_file(path, "policy recipe")  # aliases bounded, duplicate keys refused
    if not isinstance(data, dict) or "policy" not in data:
        raise UserError(
            f"{path}: a policy recipe needs a 'policy' key naming a registered policy "
            f"(got {data!r:.80})"
        )
    merged = {**(data.get("params") or {}), **(params or {})}
    base = str(data["policy"])
    if base.endswith((".yaml", ".yml")):
        raise UserError(f"{path}: 'policy' must name a registered policy, not another recipe")
    _load_builtin()
    if base.partition(":")[0] not in _FACTORIES:
        raise UserError(
            f"{path}: 'policy: {base}' is not a registered policy; expected one of "
            f"{sorted(_FACTORIES)}"
        )
    # Relative artifact paths in a recipe are relative to the recipe file.
    for k, v in list(merged.items()):
        if isinstance(v, str) and k in ("path", "artifact", "model_path") and not Path(v).is_absolute():
            merged[k] = str((path.parent / v).resolve())
    return base, merged


def _from_recipe(path: Path, pool: Pool, params: Mapping[str, Any] | None) -> Policy:
    base, merged = _recipe(path, params)
    return resolve_policy(base, pool, merged)


def policy_base(spec: str | Path, params: Mapping[str, Any] | None = None
                ) -> tuple[str, dict[str, Any]]:
    """The registered policy a spec resolves to (``knn`` for ``knn`` or for a recipe saying
    ``policy: knn``) and its parameters (a recipe's merged with ``params``), without building
    it; the name keeps its ``:arg`` (``single:gpt-4o``).

    Raises:
        UserError: an unknown name or a bad recipe (as :func:`resolve_policy`).
    """
    _load_builtin()
    s = str(spec)
    if s.endswith((".yaml", ".yml")) or Path(s).is_file():
        return _recipe(Path(s), params)
    if s.partition(":")[0] in _FACTORIES:
        return s, dict(params or {})
    from orchestra._paths import find_named_file, named_files

    recipe = find_named_file("policies", s)
    if recipe is not None:
        return _recipe(recipe, params)
    raise UserError(
        f"unknown policy {s!r}; known policies: {sorted(_FACTORIES)}; recipes: "
        f"{sorted(named_files('policies'))} (or give a path to a recipe YAML)"
    )
