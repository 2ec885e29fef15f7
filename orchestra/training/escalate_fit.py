"""Training the answer-aware cascade (policy ``escalate``) on a table's training split.

Steps, all on the training queries only:

1. **Read** every recorded answer (:func:`prepare_escalate_data`); a table without recorded
   responses (LLMRouter's) cannot train it, and says so.
2. **States**: per query, every single model and a seeded sample of pairs and triples of models
   (which answers the cascade could have seen together).
3. **Scorer**, k-fold: per fold, task priors (smoothed mean score per task and model) and a
   small network P(correct | model, task, query, answer, agreement with the state's other
   answers) fit on the other folds; out-of-fold (OOF) probabilities for the fold.
4. **Gain model**, k-fold on the OOF probabilities: P(the answer chosen after calling candidate
   ``c`` in state ``S`` is correct), the target being the recorded score of the answer the
   scorer ranks first in ``S + c``.
5. **Cascade CV**: each fold's (priors, scorer, gain model) runs the cascade on its held-out
   queries over a λ grid (:func:`~orchestra.policies.escalate.cascade.simulate`); the
   hyperparameters with the best OOF AIQ win; the OOF curve calibrates λ (compact grid, default
   λ), as for the other learned routers.
6. **Final fit** on all training queries (the gain model on the OOF rows, so it sees scorer
   outputs of held-out quality, as at serving time).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from orchestra.errors import UserError
from orchestra.policies.escalate.cascade import Escalator, QueryAnswers, simulate
from orchestra.policies.escalate.features import (
    AFTER_EMPTY_COLUMN,
    after_features,
    answer_info,
    query_info,
    scorer_features,
)
from orchestra.policies.escalate.mlp import NumpyMLP
from orchestra.policies.learned.cost import CostModel
from orchestra.training.lambdas import compact_lambdas, cost_scale_of, default_lambda

if TYPE_CHECKING:
    from orchestra.outcomes.table import OutcomeTable

__all__ = ["DEFAULT_GRID", "EscalateData", "fit_mlp", "prepare_escalate_data", "task_priors",
           "train_escalate"]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]
Progress = Callable[[str, int, int], None]

#: Hyperparameters searched by cascade CV (every combination).
DEFAULT_GRID: dict[str, list[Any]] = {"hidden": [0, 16], "weight_decay": [1e-3],
                                      "lookahead": [True, False]}

#: λ values simulated during CV (the operating points of the curve).
CV_LAMBDAS: tuple[float, ...] = (0.0, 0.01, 0.02, 0.04, 0.07, 0.1, 0.15, 0.2, 0.3, 0.45, 0.7,
                                 1.0, 1.5, 2.5, 4.0, 8.0, 20.0)


@dataclass
class EscalateData:
    """A training table read for the cascade: queries, every answer, outcomes."""

    tasks: list[str]
    query_tasks: list[str]
    models: list[str]
    queries: list[QueryAnswers]
    lengths: FloatArray
    scores: FloatArray
    costs: FloatArray
    source: str = ""

    @property
    def n(self) -> int:
        return len(self.queries)


def prepare_escalate_data(table: OutcomeTable, *, source: str = "") -> EscalateData:
    """Read every recorded answer of ``table``.

    Raises:
        UserError: an empty table, or one without recorded responses (the cascade learns from
            answer text and agreement; LLMRouter's tables record scores only).
    """
    if table.n_queries == 0 or table.n_models < 2:
        raise UserError(f"expected a table with queries and at least 2 models to train escalate "
                        f"on (got {table.n_queries} queries x {table.n_models} models)")
    models = list(table.models)
    qids = list(table.queries)
    qpos = {q: i for i, q in enumerate(qids)}
    mpos = {m: j for j, m in enumerate(models)}
    resp: list[list[str | None]] = [[None] * len(models) for _ in qids]
    n_resp = 0
    for row in table.rows():
        if row.response is not None:
            resp[qpos[row.query_id]][mpos[row.model]] = row.response
            n_resp += 1
    if n_resp == 0:
        raise UserError(
            f"escalate needs recorded responses (answer text per query and model) to learn "
            f"from; {source or 'this table'} records scores only ({table.n_queries} queries x "
            f"{table.n_models} models, no 'response'). Use a table with responses, e.g. "
            "--data routerbench, or record responses with `orchestra outcomes`"
        )
    tasks = sorted(set(table.query_tasks))
    queries = []
    for text, task, answers in zip(table.query_texts, table.query_tasks, resp, strict=True):
        q = query_info(text, task, tasks)
        queries.append(QueryAnswers.build(q, [None if a is None else answer_info(a, q)
                                              for a in answers]))
    return EscalateData(
        tasks=tasks, query_tasks=list(table.query_tasks), models=models, queries=queries,
        lengths=np.array([float(q.info.length) for q in queries]),
        scores=np.asarray(table.score_matrix(), dtype=np.float64),
        costs=np.asarray(table.cost_matrix(), dtype=np.float64), source=source)


def task_priors(data: EscalateData, idx: IntArray, strength: float = 10.0) -> FloatArray:
    """``(tasks + 1, m)`` mean score per task and model over queries ``idx``, shrunk towards
    the model's mean over every task (``strength`` pseudo-queries); last row: every task."""
    s = data.scores[idx]
    seen = ~np.isnan(s)
    y = np.where(seen, s, 0.0)
    overall = (y.sum(axis=0) + 0.5 * strength) / (seen.sum(axis=0) + strength)
    tq = np.array([data.queries[i].info.task for i in idx.tolist()])
    rows = []
    for t in range(len(data.tasks)):
        sel = tq == t
        rows.append((y[sel].sum(axis=0) + strength * overall)
                    / (seen[sel].sum(axis=0) + strength))
    return np.vstack([*rows, overall]) if rows else overall[None, :]


def fit_mlp(x: FloatArray, y: FloatArray, *, hidden: int, weight_decay: float, seed: int,
            weight: FloatArray | None = None, iters: int = 100) -> NumpyMLP:
    """Fit :class:`~orchestra.policies.escalate.mlp.NumpyMLP` by full-batch L-BFGS on the
    binary cross-entropy (soft targets in [0, 1]) plus ``weight_decay`` x squared weights."""
    import torch

    torch.manual_seed(seed)
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std = np.where(std > 1e-8, std, 1.0)
    xt = torch.as_tensor((x - mean) / std, dtype=torch.float32)
    yt = torch.as_tensor(np.clip(y, 0.0, 1.0), dtype=torch.float32)
    wt = torch.as_tensor(np.ones(len(y)) if weight is None else weight, dtype=torch.float32)
    d = x.shape[1]
    w1 = torch.nn.Parameter(torch.randn(d, hidden) * (1.0 / np.sqrt(d))) if hidden else None
    b1 = torch.nn.Parameter(torch.zeros(hidden)) if hidden else None
    w2 = torch.nn.Parameter(torch.randn(hidden or d) * 0.01)
    b2 = torch.nn.Parameter(torch.zeros(()))
    params = [p for p in (w1, b1, w2, b2) if p is not None]
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=iters, history_size=20,
                            line_search_fn="strong_wolfe")
    loss_fn = torch.nn.BCEWithLogitsLoss(weight=wt / wt.mean())

    def forward() -> torch.Tensor:
        z = torch.tanh(xt @ w1 + b1) if w1 is not None and b1 is not None else xt
        return z @ w2 + b2

    def closure() -> torch.Tensor:
        opt.zero_grad()
        reg = sum((p**2).sum() for p in params if p.dim() > 0)
        loss = loss_fn(forward(), yt) + weight_decay * reg / len(y) * 100
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    opt.step(closure)  # type: ignore[no-untyped-call]
    det = [p.detach().double().numpy() for p in (w1, b1) if p is not None]
    return NumpyMLP(mean, std, det[0] if det else np.zeros((0, 0)),
                    det[1] if det else np.zeros(0), w2.detach().double().numpy(),
                    float(b2.detach()))


# ---------------------------------------------------------------------- states and rows
def _states(m: int, rng: np.random.Generator, pairs: int, triples: int) -> NDArray[np.bool_]:
    """Single models, ``pairs`` random pairs and ``triples`` random triples, as masks."""
    out = [np.eye(m, dtype=bool)]
    for size, count in ((2, pairs), (3, triples)):
        if m < size:
            continue
        for _ in range(count):
            mk = np.zeros(m, dtype=bool)
            mk[rng.choice(m, size=size, replace=False)] = True
            out.append(mk[None, :])
    return np.unique(np.vstack(out), axis=0)


def _scorer_rows(esc_prior: FloatArray, data: EscalateData, idx: IntArray,
                 states: list[NDArray[np.bool_]]) -> tuple[FloatArray, FloatArray, IntArray]:
    """Scorer features and targets of every (state, answering model) of queries ``idx``."""
    xs, ys, owner = [], [], []
    for qi in idx.tolist():
        qa = data.queries[qi]
        masks = states[qi]
        prior = esc_prior[qa.info.task if qa.info.task >= 0 else -1]
        x, rows = scorer_features(qa.info, prior, qa.feats, qa.agree, masks, len(data.tasks))
        xs.append(x)
        ys.append(np.nan_to_num(data.scores[qi, rows[:, 1]], nan=0.0))
        owner.append(np.full(len(rows), qi))
    return np.vstack(xs), np.concatenate(ys), np.concatenate(owner)


def _after_rows(esc: Escalator, data: EscalateData, idx: IntArray,
                states: list[NDArray[np.bool_]]) -> _GainRows:
    """Gain-model features and targets: per query, the empty state and every sampled state of
    size <= 2, each with every candidate not in it. Targets: how much the recorded score of the
    answer the scorer ranks first rises (``up``) or falls (``down``) once the candidate has
    answered (0 before any answer), and whether its answer agrees with that first-ranked one."""
    xs, ups, downs, agrees = [], [], [], []
    m = len(data.models)
    s = np.nan_to_num(data.scores, nan=0.0)
    for qi in idx.tolist():
        qa = data.queries[qi]
        prior = esc.prior_of(qa.info)
        base = [np.zeros(m, dtype=bool)] + [mk for mk in states[qi] if mk.sum() <= 2]
        base_m = np.vstack(base)
        rows_s, rows_c = np.nonzero(~base_m)
        grown = base_m[rows_s].copy()
        grown[np.arange(len(rows_c)), rows_c] = True
        p0, sup0 = esc.state_scores(qa, base_m, prior)
        p1, _ = esc.state_scores(qa, grown, prior)
        pick = np.argmax(np.where(grown, p1, -1.0), axis=1)
        xs.append(after_features(qa.info, prior, base_m[rows_s], p0[rows_s], sup0[rows_s],
                                 rows_c, len(data.tasks)))
        now_pick = np.argmax(np.where(base_m, p0, -1.0), axis=1)
        now = np.where(base_m.any(axis=1), s[qi, now_pick], 0.0)[rows_s]
        after = s[qi, pick]
        ups.append(np.maximum(after - now, 0.0))
        downs.append(np.maximum(now - after, 0.0))
        agrees.append(np.where(base_m[rows_s].any(axis=1), qa.agree[rows_c, now_pick[rows_s]],
                               0.0))
    return (np.vstack(xs), np.concatenate(ups), np.concatenate(downs), np.concatenate(agrees))


_GainRows = tuple[FloatArray, FloatArray, FloatArray, FloatArray]


def _stack(rows: Mapping[int, _GainRows], idx: IntArray) -> _GainRows:
    qs = idx.tolist()
    return (np.vstack([rows[q][0] for q in qs]), np.concatenate([rows[q][1] for q in qs]),
            np.concatenate([rows[q][2] for q in qs]), np.concatenate([rows[q][3] for q in qs]))


def _as_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if str(v).lower() in ("true", "1", "yes"):
        return True
    if str(v).lower() in ("false", "0", "no"):
        return False
    raise UserError(f"lookahead must be true or false (got {v!r})")


def _kfold(n: int, folds: int, seed: int) -> list[tuple[IntArray, IntArray]]:
    perm = np.random.default_rng(seed).permutation(n)
    parts = np.array_split(perm, folds)
    return [(np.sort(np.concatenate([p for j, p in enumerate(parts) if j != i])), np.sort(parts[i]))
            for i in range(folds)]


def _cost_model(data: EscalateData, idx: IntArray) -> CostModel:
    onehot = np.zeros((len(idx), len(data.tasks)), dtype=np.float32)
    t = np.array([data.queries[i].info.task for i in idx.tolist()])
    onehot[np.arange(len(idx)), t] = 1.0
    return CostModel.fit(data.lengths[idx], onehot, data.costs[idx])


def _curve_aiq(points: Sequence[tuple[float, float]], max_cost: float) -> float:
    from orchestra.eval.metrics import aiq

    return float(aiq(list(points), max_cost)) if max_cost > 0 else max(q for _, q in points)


@dataclass
class _FoldModels:
    tr: IntArray
    te: IntArray
    prior: FloatArray
    cost: CostModel


def _escalator(data: EscalateData, fm: _FoldModels, scorer: NumpyMLP,
               gain: tuple[NumpyMLP, NumpyMLP, NumpyMLP], cost_scale: float,
               lookahead: bool = False) -> Escalator:
    return Escalator(models=data.models, tasks=data.tasks, prior=fm.prior, cost=fm.cost,
                     cost_scale=cost_scale, scorer=scorer, up=gain[0], down=gain[1],
                     agree=gain[2], lookahead=lookahead)


def _fit_gain(rows: _GainRows, hp: Mapping[str, Any], seed: int
              ) -> tuple[NumpyMLP, NumpyMLP, NumpyMLP]:
    x, up, down, agree = rows
    answered = x[:, AFTER_EMPTY_COLUMN] == 0.0
    return (fit_mlp(x, up, seed=seed, **hp), fit_mlp(x, down, seed=seed + 1, **hp),
            fit_mlp(x[answered], agree[answered], seed=seed + 2, **hp))


def train_escalate(data: EscalateData, *, params: Mapping[str, Any] | None = None,
                   grid: Mapping[str, Sequence[Any]] | None = None, folds: int = 5,
                   seed: int = 0, pairs: int = 12, triples: int = 5, max_calls: int = 3,
                   lambdas: Sequence[float] = CV_LAMBDAS,
                   progress: Progress | None = None) -> Escalator:
    """Train the cascade on ``data`` (the training split; see the module docstring).

    Args:
        data: from :func:`prepare_escalate_data`.
        params: fixed hyperparameters (``hidden``, ``weight_decay``, ``lookahead``) instead of
            the search; a list value is searched (``{"lookahead": [True, False]}``); the others
            take the first value of :data:`DEFAULT_GRID`.
        grid: the search grid (default :data:`DEFAULT_GRID`).
        folds: CV folds (>= 2).
        seed: seeds states, folds and networks.
        pairs, triples: sampled states per query.
        max_calls: calls per query in the CV simulation.
        lambdas: λ grid of the CV simulation.
        progress: callback ``(stage, done, total)``.

    Raises:
        UserError: bad folds or grid.
    """
    if folds < 2 or data.n < folds:
        raise UserError(f"expected 2 <= folds <= number of queries ({data.n}) (got {folds!r})")
    search = ({k: list(v) if isinstance(v, (list, tuple)) else [v] for k, v in params.items()}
              if params else dict(grid or DEFAULT_GRID))
    search = {k: list(v) for k, v in ({**{k: v[:1] for k, v in DEFAULT_GRID.items()},
                                        **search}).items()}
    unknown = sorted(set(search) - set(DEFAULT_GRID))
    if unknown:
        raise UserError(f"unknown escalate hyperparameter(s) {unknown}; expected "
                        f"{sorted(DEFAULT_GRID)}")
    configs: list[dict[str, Any]] = [{"hidden": int(h), "weight_decay": float(w)}
               for h in search["hidden"] for w in search["weight_decay"]]
    looks = [_as_bool(v) for v in search["lookahead"]]
    t0 = time.time()
    rng = np.random.default_rng(seed)
    m = len(data.models)
    states = [_states(m, rng, pairs, triples) for _ in range(data.n)]
    splits = _kfold(data.n, folds, seed)
    fold_models = [_FoldModels(tr, te, task_priors(data, tr), _cost_model(data, tr))
                   for tr, te in splits]
    cost_scale = cost_scale_of(data.costs)
    max_cost = float(np.nan_to_num(data.costs, nan=0.0).sum(axis=0).max())
    total = len(configs) * folds * 3
    done = 0

    def tick(stage: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(stage, done, total)

    table: list[dict[str, Any]] = []
    best: tuple[float, int] | None = None
    kept: dict[int, Any] = {}
    for ci, cfg in enumerate(configs):
        hp: dict[str, Any] = {"hidden": cfg["hidden"], "weight_decay": cfg["weight_decay"]}
        scorers = []
        for fi, fm in enumerate(fold_models):
            x, y, _ = _scorer_rows(fm.prior, data, fm.tr, states)
            scorers.append(fit_mlp(x, y, seed=seed + fi, **hp))
            tick("cross-validation: scorer")
        # Gain-model rows from OOF scorer outputs, per query.
        after_x: dict[int, _GainRows] = {}
        for fi, fm in enumerate(fold_models):
            esc = _escalator(data, fm, scorers[fi], (scorers[fi],) * 3, cost_scale)
            for qi in fm.te.tolist():
                after_x[qi] = _after_rows(esc, data, np.asarray([qi]), states)
            tick("cross-validation: gain rows")
        curves = np.zeros((len(looks), len(lambdas), 2))
        for fi, fm in enumerate(fold_models):
            gain = _fit_gain(_stack(after_x, fm.tr), hp, seed + 100 + 3 * fi)
            qs = [data.queries[i] for i in fm.te.tolist()]
            for la, look in enumerate(looks):
                esc = _escalator(data, fm, scorers[fi], gain, cost_scale, look)
                for li, r in enumerate(simulate(esc, qs, data.scores[fm.te], data.costs[fm.te],
                                                lambdas, max_calls=max_calls)):
                    curves[la, li, 0] += r["total_cost"]
                    curves[la, li, 1] += r["mean_score"] * len(fm.te)
            tick("cross-validation: cascade")
        curves[:, :, 1] /= data.n
        kept[ci] = after_x
        for la, look in enumerate(looks):
            score = _curve_aiq([(float(c), float(q)) for c, q in curves[la]], max_cost)
            table.append({"params": {**hp, "lookahead": look}, "oof_aiq": score, "config": ci,
                          "curve": [{"lam": float(lam), "cost_per_query": float(c / data.n),
                                     "quality": float(q)}
                                    for lam, (c, q) in zip(lambdas, curves[la], strict=True)]})
            if best is None or score > best[0] + 1e-9:
                best = (score, len(table) - 1)
    assert best is not None
    bi = best[1]
    hp = {k: v for k, v in table[bi]["params"].items() if k != "lookahead"}
    look = bool(table[bi]["params"]["lookahead"])
    all_idx = np.arange(data.n)
    prior = task_priors(data, all_idx)
    x, y, _ = _scorer_rows(prior, data, all_idx, states)
    scorer = fit_mlp(x, y, seed=seed, **hp)
    up, down, agree = _fit_gain(_stack(kept[table[bi]["config"]], np.arange(data.n)), hp,
                                seed + 100)
    cal = {"lam": [float(v) for v in lambdas],
           "cost_per_query": [r["cost_per_query"] for r in table[bi]["curve"]],
           "quality": [r["quality"] for r in table[bi]["curve"]]}
    config = {
        "data": data.source, "n_train": data.n, "seed": seed, "folds": folds,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "max_calls": max_calls,
        "states": {"pairs": pairs, "triples": triples},
        "cv": {"selected_by": "OOF AIQ of the simulated cascade", "best": table[bi]["params"],
               "best_oof_aiq": table[bi]["oof_aiq"], "grid": table},
        "calibration": cal, "lambdas": compact_lambdas(cal), "default_lam": default_lambda(cal),
        "cost_normalisation": "cost / mean training cost per query of the most expensive model",
        "train_seconds": round(time.time() - t0, 1),
    }
    return Escalator(models=data.models, tasks=data.tasks, prior=prior,
                     cost=_cost_model(data, all_idx), cost_scale=cost_scale, scorer=scorer,
                     up=up, down=down, agree=agree, lookahead=look, config=config)


def run_escalate_training(opts: Mapping[str, Any]) -> dict[str, Any]:
    """``orchestra train escalate``: load the split, read its answers, cross-validate, train,
    save; rich progress on stderr. ``opts`` as :func:`~orchestra.training.cli.train_options`.

    Returns:
        A summary: artifact path, chosen hyperparameters, CV AIQ, λ grid.
    """
    from rich.console import Console

    from orchestra.policies.escalate.artifact import save_escalator
    from orchestra.policies.learned.locations import default_artifact_dir
    from orchestra.training.progress import (
        PhaseTimer,
        artifact_base,
        load_training_table,
        record_phases,
        stage_progress,
    )

    timer = PhaseTimer()
    err = Console(stderr=True, emoji=False, highlight=False)
    with timer.phase("load"):
        table, source = load_training_table(str(opts["data"]), opts.get("split"), err,
                                            clip_scores=bool(opts.get("clip_scores")),
                                            dedupe=bool(opts.get("dedupe")), kind="escalate")
    err.print(f"[bold]escalate[/bold] cascade on {source}: {table.n_queries} queries x "
              f"{table.n_models} models, {len(table.tasks)} task(s)")
    with timer.phase("embed"):  # no embedding: the answers' features are read instead
        err.print("reading the recorded answers")
        data = prepare_escalate_data(table, source=source)
    params = opts.get("params")
    with timer.phase("fit"), stage_progress(err) as progress:
        esc = train_escalate(data, params=params, folds=int(opts.get("folds", 5)),
                             seed=int(opts.get("seed", 0)), progress=progress)
    with timer.phase("save"):
        path = save_escalator(esc, opts.get("out")
                              or default_artifact_dir(artifact_base(source), "escalate"))
    from orchestra.policies.learned.provenance import write_trained_on

    write_trained_on(path, "escalate", table, source)  # what `orchestra eval` finds it by
    phases = timer.seconds()
    record_phases(Path(path) / "config.json", phases)
    cv = esc.config["cv"]
    return {
        "kind": "escalate", "artifact": str(path), "data": source, "n_train": data.n,
        "embedder": "none (answer text and agreement features)", "params": cv["best"],
        "cv_folds": esc.config["folds"], "cv_oof_aiq": cv["best_oof_aiq"], "cv_oof_bce": None,
        "configs_tried": len(cv["grid"]), "default_lam": esc.config["default_lam"],
        "lambdas": esc.config["lambdas"], "seconds": phases["total"], "phase_seconds": phases,
    }
