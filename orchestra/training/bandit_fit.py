"""``orchestra train bandit``: the bandit's state learned offline, from a table or from traces.

The ``bandit`` policy (:mod:`orchestra.policies.bandit`) learns online, one run's feedback at a
time. Its per-model ridge estimators need only the outcomes of the model that was called, so
they learn just as well from a log: :func:`train_bandit` feeds every observation to
:meth:`BanditPolicy.learn <orchestra.policies.bandit.policy.BanditPolicy.learn>` in order and
saves the state the policy loads (``--policy bandit --param path=STATE``):

- **exported traces** (``orchestra traces export``, graded): each graded run that called one
  model is one observation of that model, in the order the runs were served
  (:func:`~orchestra.training.trace_data.observations_from_traces`). Replaying the log of a
  bandit that learned online rebuilds its state;
- **an outcome table**: every recorded cell is an observation (full information: every model on
  every training query), query by query.

The arms are the pool's models for the answer agent (``--pool``; for a table, by default the
table's replay pool). Observations of models the pool does not have are skipped and counted.
The features (embedder, ``dim``, ``task_slots``) are saved in the state, so serve it with the
same ones.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from orchestra.errors import UserError

if TYPE_CHECKING:
    from orchestra.policies.bandit.policy import BanditPolicy
    from orchestra.spec import Pool

__all__ = ["BanditObservation", "observations_from_table", "run_bandit_training",
           "train_bandit"]

#: Policy parameters ``--param`` may set for training (the rest are decide-time or the pool's).
_TRAIN_PARAMS = ("dim", "task_slots", "ridge", "agent", "lam", "alpha", "cost_scale", "seed")


@dataclass(frozen=True)
class BanditObservation:
    """One model's outcome on one query."""

    query: str
    task: str | None
    model: str
    score: float
    cost_usd: float


def observations_from_table(table: Any) -> list[BanditObservation]:
    """Every recorded cell of an outcome table, query by query, models in column order."""
    scores, costs = table.score_matrix(), table.cost_matrix()
    texts, tasks, models = table.query_texts, table.query_tasks, table.models
    out = []
    for qi, mi in zip(*np.nonzero(~np.isnan(scores)), strict=True):
        out.append(BanditObservation(texts[qi], tasks[qi], models[mi], float(scores[qi, mi]),
                                     float(costs[qi, mi])))
    return out


def train_bandit(pool: Pool, observations: Sequence[BanditObservation], *,
                 embedder: str = "minilm", params: Mapping[str, Any] | None = None,
                 progress: Callable[[str, int, int], None] | None = None,
                 timer: Any = None) -> tuple[BanditPolicy, dict[str, int]]:
    """A :class:`~orchestra.policies.bandit.policy.BanditPolicy` over ``pool`` that has learned
    ``observations`` in order.

    Args:
        pool: the pool whose answer agent's models are the arms (as served).
        observations: the outcomes to learn.
        embedder: ``minilm`` or ``hashing``.
        params: policy parameters (``dim``, ``task_slots``, ``ridge``, ``agent``, ...).
        progress: ``(stage, done, total)`` for embedding and learning.
        timer: a :class:`~orchestra.training.progress.PhaseTimer` to time ``embed`` and ``fit``.

    Returns:
        The policy and counts: ``learned``, ``skipped_unknown_model``.

    Raises:
        UserError: an unknown parameter, or no observation of any of the pool's models.
    """
    from contextlib import nullcontext

    from orchestra.policies.bandit.policy import BanditPolicy
    from orchestra.policies.learned.features import embed_queries
    from orchestra.training.progress import embed_with_progress

    params = dict(params or {})
    unknown = sorted(set(params) - set(_TRAIN_PARAMS))
    if unknown:
        raise UserError(f"unknown bandit parameter(s) {unknown!r}; expected some of "
                        f"{list(_TRAIN_PARAMS)}")
    phase = timer.phase if timer is not None else (lambda _name: nullcontext())
    with phase("embed"):  # building the features loads the embedder
        policy = BanditPolicy(pool, embedder=embedder, **params)
    usable = [o for o in observations if o.model in policy.arms]
    skipped = len(observations) - len(usable)
    if not usable:
        seen = sorted({o.model for o in observations})
        raise UserError(
            f"none of the {len(observations)} observations is of a model of pool "
            f"{pool.name!r} (observed models {seen[:8]!r}; the pool's {policy.arms!r}); expected "
            "--pool to be the pool the runs were served with"
        )
    texts = list(dict.fromkeys(o.query for o in usable))
    with phase("embed"):
        emb = embed_with_progress(lambda part: embed_queries(policy.features.embedder, part),
                                  texts, progress)
    row = {t: i for i, t in enumerate(texts)}
    with phase("fit"):
        x = policy.features.assemble(emb[[row[o.query] for o in usable]],
                                     [o.query for o in usable], [o.task for o in usable])
        for i, o in enumerate(usable):
            policy.learn(o.model, x[i], o.query, o.score, o.cost_usd)
            if progress is not None and ((i + 1) % 500 == 0 or i + 1 == len(usable)):
                progress("learning", i + 1, len(usable))
    return policy, {"learned": len(usable), "skipped_unknown_model": skipped}


def _pool_for(pool: str | None, table: Any, logged: bool) -> Pool:
    """The pool named by ``--pool`` (a pool name or YAML, or an outcome table's replay pool),
    else the training table's replay pool."""
    from orchestra.backends.priced import priced_pool
    from orchestra.backends.replay import pool_from_outcomes
    from orchestra.spec import Pool

    if pool is None:
        if logged:
            raise UserError(
                "training the bandit from traces needs --pool: the pool the runs were served "
                "with (a pool name or YAML, or an outcome table for its replay pool); its "
                "models become the bandit's arms"
            )
        return pool_from_outcomes(table)
    try:
        return priced_pool(Pool.load(pool))
    except UserError as pool_error:
        from orchestra.outcomes.loaders import load_outcomes

        try:
            return pool_from_outcomes(load_outcomes(pool))
        except UserError:
            raise pool_error from None


def run_bandit_training(opts: Mapping[str, Any]) -> dict[str, Any]:
    """``orchestra train bandit``: load, embed, learn, save; progress on stderr.

    ``opts`` as :func:`~orchestra.training.cli.train_options`, plus ``pool``.

    Returns:
        A summary: the state file, observations learned, per-model counts, phase seconds.
    """
    from rich.console import Console

    from orchestra.policies.learned.locations import default_artifact_dir
    from orchestra.training.progress import (
        PhaseTimer,
        artifact_base,
        load_training_table,
        stage_progress,
    )
    from orchestra.training.trace_data import observations_from_traces

    timer = PhaseTimer()
    err = Console(stderr=True, emoji=False, highlight=False)
    data_name = str(opts["data"])
    clip = bool(opts.get("clip_scores"))
    with timer.phase("load"):
        table, source = load_training_table(data_name, opts.get("split"), err,
                                            clip_scores=clip, dedupe=bool(opts.get("dedupe")),
                                            kind="bandit")
        logged = table.meta.get("feedback") == "logged"
        if logged:
            obs_t, _ = observations_from_traces(data_name, clip_scores=clip)
            obs = [BanditObservation(o.query, o.task, o.model, o.score, o.cost_usd)
                   for o in obs_t]
        else:
            obs = observations_from_table(table)
        pool = _pool_for(opts.get("pool"), table, logged)
    err.print(f"[bold]bandit[/bold] on {source}: {len(obs)} observation(s) of "
              f"{len({o.model for o in obs})} model(s) "
              f"({'logged feedback' if logged else 'full table: every recorded cell'}); arms: "
              f"pool {pool.name!r}")
    params = dict(opts.get("params") or {})
    seed = params.pop("seed", opts.get("seed", 0))
    with stage_progress(err) as progress:
        policy, counts = train_bandit(pool, obs, embedder=str(opts.get("embedder") or "minilm"),
                                      params={**params, "seed": seed}, progress=progress,
                                      timer=timer)
    out = Path(opts["out"]) if opts.get("out") else Path(
        f"{default_artifact_dir(artifact_base(source), 'bandit')}.npz")
    if out.is_dir():
        out = out / "bandit.npz"
    with timer.phase("save"):
        path = policy.save(out)
    summary: dict[str, Any] = {
        "kind": "bandit", "artifact": str(path), "data": source,
        "feedback": "logged" if logged else "full", "pool": pool.name,
        "n_train": counts["learned"], "skipped_unknown_model": counts["skipped_unknown_model"],
        "embedder": policy.features.embedder.name, "params": {
            "embedder": str(opts.get("embedder") or "minilm"), "dim": policy.features.dim,
            "task_slots": policy.features.task_slots},
        "observations": dict(policy.state_summary()["n"]),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if logged:
        summary["traces"] = table.meta.get("traces")
    if table.meta.get("repairs"):
        summary["repairs"] = table.meta["repairs"]  # what --clip-scores / --dedupe did
    summary["phase_seconds"] = timer.seconds()
    summary["seconds"] = summary["phase_seconds"]["total"]
    # The state file's header is the policy's; the training record goes beside it.
    Path(f"{path}.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary
