"""Learned routing policies (``knn``, ``mlp``, ``mf``) and everything they need at serving time.

Every router predicts, for one query, **every model's expected score and expected cost**, and
chooses with one rule (CARROT's): maximise ``score - lam * cost / cost_scale`` over the models
whose cautious predicted cost fits the budget left. Modules, one job each:

- :mod:`~orchestra.policies.learned.policy`: the policies (importing this package registers them;
  numpy and torch load only when one is built);
- :mod:`~orchestra.policies.learned.artifact`: the trained router (``TrainedRouter``) and its
  artifact directory (``load_router``);
- :mod:`~orchestra.policies.learned.locations`: where artifacts live, found by path or name;
- :mod:`~orchestra.policies.learned.features`: query embeddings (two views) and task one-hots;
- :mod:`~orchestra.policies.learned.cost`: the per-model cost model;
- :mod:`~orchestra.policies.learned.scorers`, :mod:`~orchestra.policies.learned.torch_scorers`:
  the score models (kNN; MLP and matrix factorisation);
- :mod:`~orchestra.policies.learned.chooser`: the choosing rule and the λ grid.

Training (cross-validation, calibration, ``orchestra train knn|mlp|mf``) lives in the training
package, above this one: serving never imports it.
"""

from orchestra.policies.learned.policy import (
    KNNPolicy,
    LearnedRouterPolicy,
    MFPolicy,
    MLPPolicy,
    parse_k,
    parse_lam,
    route_or_answer,
)

__all__ = ["KNNPolicy", "LearnedRouterPolicy", "MFPolicy", "MLPPolicy", "parse_k", "parse_lam",
           "route_or_answer"]
