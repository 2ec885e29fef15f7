"""The answer-aware learned cascade, policy ``escalate`` (FrugalGPT / AutoMix style).

A scorer predicts P(correct) of each answer a run has seen, from the query, the answer text and
its agreement with the other answers; a gain model predicts what calling one more model would
add. The policy starts with the model of best expected utility, then after each round answers
with the most probable answer or calls the model whose expected gain − λ·cost is best, within
the budget left. Modules, one job each:

- :mod:`~orchestra.policies.escalate.policy`: the policy (importing this package registers it;
  numpy loads only when one is built);
- :mod:`~orchestra.policies.escalate.cascade`: the trained model and the decision rule, plus
  :func:`~orchestra.policies.escalate.cascade.simulate` on recorded answers;
- :mod:`~orchestra.policies.escalate.features`: query, answer and agreement features;
- :mod:`~orchestra.policies.escalate.mlp`: the small classifier served in numpy;
- :mod:`~orchestra.policies.escalate.artifact`: the artifact directory (save / load).

Training (``orchestra train escalate``) lives in :mod:`orchestra.training.escalate_fit`.
"""

from orchestra.policies.escalate.policy import EscalatePolicy

__all__ = ["EscalatePolicy"]
