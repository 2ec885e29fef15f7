"""Model prices from litellm's cost map (read locally, never from the network)."""

from __future__ import annotations

import os
from functools import lru_cache

__all__ = ["import_litellm", "litellm_prices"]


def import_litellm():  # type: ignore[no-untyped-def]
    """Import litellm without letting it fetch its cost map from the network."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_LOG", "ERROR")
    import litellm

    litellm.suppress_debug_info = True
    litellm.telemetry = False
    return litellm


@lru_cache(maxsize=512)
def litellm_prices(model_id: str) -> tuple[float, float] | None:
    """(input, output) USD per 1M tokens from litellm's cost map, or None if unknown."""
    litellm = import_litellm()
    cost_map = litellm.model_cost
    candidates = [model_id]
    if "/" in model_id:
        candidates.append(model_id.split("/", 1)[1])
    for key in candidates:
        info = cost_map.get(key)
        if info and info.get("input_cost_per_token") is not None:
            # Rounded: 4e-07 * 1e6 is 0.39999999999999997 in floating point.
            return (
                round(float(info["input_cost_per_token"]) * 1e6, 9),
                round(float(info.get("output_cost_per_token") or 0.0) * 1e6, 9),
            )
    return None
