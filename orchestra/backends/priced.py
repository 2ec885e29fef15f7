"""Filling in the prices a pool leaves unset: from litellm's cost map (read offline), or, for the
embedded local models, their documented nominal prices. The runtime prices every pool it is
given (:func:`priced_pool`) before the first call, so the budget always knows what a call costs.

This lives with the backends, not in :mod:`orchestra.spec`: the spec only describes a pool; what a
model costs is the providers' knowledge.
"""

from __future__ import annotations

from orchestra.backends.pricing import litellm_prices
from orchestra.errors import UserError
from orchestra.spec import ModelSpec, Pool

__all__ = ["priced_model", "priced_pool"]


def priced_model(model: ModelSpec) -> ModelSpec:
    """``model`` with its unset prices filled from litellm's cost map (or the embedded models'
    nominal prices).

    Raises:
        UserError: when a price is unset and no source knows the model.
    """
    if model.input_price is not None and model.output_price is not None:
        return model
    known = litellm_prices(model.id)
    if known is None and model.provider == "local":
        from orchestra.backends.local import get_local_model  # the model registry, on demand

        info = get_local_model(model.id)
        known = (info.input_price, info.output_price)
    if known is None:
        raise UserError(
            f"model {model.name!r} ({model.id!r}) has no price: litellm's cost map does not "
            "know it. Set input_price and output_price (USD per 1M tokens) in the pool."
        )
    return model.model_copy(update={
        "input_price": model.input_price if model.input_price is not None else known[0],
        "output_price": model.output_price if model.output_price is not None else known[1],
    })


def priced_pool(pool: Pool) -> Pool:
    """``pool`` with every model priced (:func:`priced_model`)."""
    return pool.model_copy(update={"models": tuple(priced_model(m) for m in pool.models)})
