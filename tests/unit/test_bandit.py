"""The ``bandit`` policy: an online LinUCB router that learns from the chosen model's outcome.

Synthetic problem: topic X (arithmetic words) is solved by the cheap model A, topic Y (poetry
words) by the cheap model B; the expensive model C solves both, always. Learning only from the
model it chose, the bandit must find A on X and B on Y at a moderate λ, C at λ = 0 and the
cheapest at a large λ — the last two from the same state, without retraining.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from orchestra import Orchestra, UserError
from orchestra.budget import BudgetLeft
from orchestra.embed import HashingEmbedder
from orchestra.policies.bandit.learner import LinearBandit
from orchestra.policies.bandit.policy import BanditPolicy
from orchestra.policies.base import CallView, DecisionView, Feedback, Route, RunView
from orchestra.policies.resolve import policy_names, resolve_policy
from orchestra.testing import FunctionBackend, make_pool
from orchestra.trace.store import MemoryTraceStore

X_WORDS = ["add", "sum", "multiply", "divide", "subtract", "integer", "equation", "fraction"]
Y_WORDS = ["poem", "sonnet", "haiku", "verse", "rhyme", "stanza", "ballad", "ode"]
PRICES = {"A": (1.0, 1.0), "B": (1.2, 1.2), "C": (20.0, 20.0)}


def query(topic: str, rng: np.random.Generator) -> str:
    words = X_WORDS if topic == "X" else Y_WORDS
    return f"please {' '.join(rng.choice(words, size=4, replace=False))} {rng.integers(10_000)}"


def outcome(model: str, topic: str, rng: np.random.Generator) -> float:
    right = model == "C" or (model == "A" and topic == "X") or (model == "B" and topic == "Y")
    return float(rng.random() < ((1.0 if model == "C" else 0.8) if right else 0.05))


def pool() -> Any:
    return make_pool(prices=list(PRICES.values()), names=list(PRICES), max_output_tokens=64)


def cost_of(model: str, q: str) -> float:
    pin, pout = PRICES[model]
    return (len(q) / 4 * pin + 20 * pout) / 1e6


def bandit(**params: Any) -> BanditPolicy:
    params = {"embedder": HashingEmbedder(), "dim": 32, "seed": 0, **params}
    p = resolve_policy("bandit", pool(), params)
    assert isinstance(p, BanditPolicy)
    return p


def train(p: BanditPolicy, n: int, lam: float | list[float], seed: int = 1) -> list[str]:
    """Stream ``n`` queries; learn only the chosen model's outcome. The choices made.

    ``lam`` a list: the users' preferences cycle through it (as BaRP samples them in training).
    """
    lams = lam if isinstance(lam, list) else [lam]
    rng = np.random.default_rng(seed)
    chosen = []
    for i in range(n):
        topic = "X" if i % 2 == 0 else "Y"
        q = query(topic, rng)
        x = p.featurize(q, None)
        name, _ = p.choose(x, q, lam=lams[i % len(lams)])
        assert name is not None
        p.learn(name, x, q, outcome(name, topic, rng), cost_of(name, q))
        chosen.append(name)
    return chosen


def greedy_picks(p: BanditPolicy, lam: float, n: int = 40) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(99)
    topics = ["X" if i % 2 == 0 else "Y" for i in range(n)]
    alpha, p.alpha = p.alpha, 0.0
    try:
        picks = []
        for t in topics:
            q = query(t, rng)
            picks.append(p.choose(p.featurize(q, None), q, lam=lam)[0] or "")
    finally:
        p.alpha = alpha
    return picks, topics


def view(q: str, usd: float | None = 1.0, meta: dict[str, Any] | None = None,
         run_id: str = "r1") -> RunView:
    return RunView(query=q, history=(), rounds=(), notes=(), pool=pool(), round=0,
                   budget_left=BudgetLeft(usd=usd, tokens=None, calls=None, rounds=None,
                                          seconds=None, spent_usd=0.0, spent_tokens=0,
                                          spent_calls=0, rounds_done=0),
                   meta=meta or {}, run_id=run_id)


# ---------------------------------------------------------------------- learning


@pytest.fixture(scope="module")
def trained() -> BanditPolicy:
    p = bandit(lam=10.0)
    train(p, 400, lam=[10.0, 10.0, 10.0, 0.0])  # a quarter of the users care for quality only
    return p


def test_learns_which_model_is_right_per_region_from_bandit_feedback(
        trained: BanditPolicy) -> None:
    # λ = 10: a call of C (~$6e-4, 1/20 of its nominal 400+200-token price) costs ~0.5 point.
    picks, topics = greedy_picks(trained, 10.0)
    right = ["A" if t == "X" else "B" for t in topics]
    assert np.mean([p == r for p, r in zip(picks, right, strict=True)]) >= 0.85
    # It learned from its own choices only, one outcome per query.
    n = trained.state_summary()["n"]
    assert n["A"] > 50 and n["B"] > 50 and n["C"] > 20 and sum(n.values()) == 400


def test_lambda_dial_moves_choices_without_retraining(trained: BanditPolicy) -> None:
    before = trained.state_summary()
    at0, _ = greedy_picks(trained, 0.0)
    at_huge, _ = greedy_picks(trained, 1e4)
    # Quality only: the model right on both topics; cost dominates: the cheapest.
    assert np.mean([p == "C" for p in at0]) >= 0.9
    assert at_huge == ["A"] * len(at_huge)
    assert trained.state_summary() == before  # deciding learned nothing
    # The dial also turns per run, through the run's meta.
    rng = np.random.default_rng(3)
    trained.alpha, alpha = 0.0, trained.alpha
    try:
        act = trained.decide(view(query("Y", rng), meta={"lam": 1e4}))
    finally:
        trained.alpha = alpha
    assert isinstance(act, Route) and act.calls[0].model == "A" and act.scores["lam"] == 1e4


def test_untried_models_are_explored_then_exploited() -> None:
    # λ = 0: C, right on both topics, is the best model; alpha sets how much the others are
    # tried before it is settled on.
    bold = train(bandit(lam=0.0, alpha=2.0), 200, lam=0.0)
    assert set(bold[:12]) == {"A", "B", "C"}  # cold start: the bonus tries every model
    timid = train(bandit(lam=0.0, alpha=0.5), 200, lam=0.0)
    assert timid[-50:] == ["C"] * 50
    assert sum(c != "C" for c in bold) > sum(c != "C" for c in timid)


# ---------------------------------------------------------------------- budget


def test_never_explores_past_the_usd_left() -> None:
    p = bandit(lam=0.0, alpha=5.0)  # a large bonus: exploration wants every model
    rng = np.random.default_rng(4)
    q = query("X", rng)
    x = p.featurize(q, None)
    pred = p.predict(x, q)
    # Untried: the cautious cost is the worst case the budget would reserve (max_output_tokens).
    assert pred.cost_high[2] == pytest.approx((np.ceil(len(q) / 4) * 20 + 64 * 20) / 1e6)
    usd = 64 * 20 / 1e6  # below C's worst case on any query (output alone); A and B fit
    for i in range(200):
        q = query("XY"[i % 2], rng)
        x = p.featurize(q, None)
        name, scores = p.choose(x, q, usd_left=usd)
        assert name in ("A", "B") and scores["models"]["C"]["fits"] is False
        assert scores["models"][name]["cost_high"] <= usd
        p.learn(name, x, q, outcome(name, "XY"[i % 2], rng), cost_of(name, q))
    assert p.state_summary()["n"]["C"] == 0
    # Nothing fits: the policy answers instead of routing.
    act = p.decide(view(q, usd=1e-12))
    assert not isinstance(act, Route) and "cautious cost" in act.reason


def test_learned_cost_bound_replaces_the_price_prior() -> None:
    lb = LinearBandit(["a"], 3, min_cost_obs=3)
    x = np.array([1.0, 0.5, 0.0])
    prior, worst = np.array([1e-3]), np.array([5e-3])
    assert lb.predict(x, prior, worst).cost_high[0] == pytest.approx(5e-3)
    for _ in range(40):
        lb.update(0, x, 1.0, 1e-4, 1e-3)  # the model is 10x cheaper than its list price says
    pred = lb.predict(x, prior, worst)
    assert pred.cost[0] == pytest.approx(1e-4, rel=0.1)
    assert 1e-4 < pred.cost_high[0] < 5e-3


# ---------------------------------------------------------------------- persistence


def test_state_round_trip_and_periodic_saves(tmp_path: Path) -> None:
    f = tmp_path / "state" / "bandit.npz"
    p = bandit(lam=10.0, path=str(f), save_every=50)
    train(p, 120, lam=10.0)
    assert f.exists()  # saved after 50 and 100 updates
    p.save()
    q = bandit(lam=10.0, path=str(f))
    assert q.state_summary() == p.state_summary()
    rng = np.random.default_rng(11)
    for _ in range(5):
        text = query("Y", rng)
        x = p.featurize(text, None)
        a, b = p.predict(x, text), q.predict(x, text)
        np.testing.assert_allclose(a.quality, b.quality, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(a.cost_high, b.cost_high, rtol=1e-9)
    assert not list(f.parent.glob("*.tmp"))  # atomic writes leave no temporary file


def test_corrupt_or_mismatched_state_is_a_clear_error(tmp_path: Path) -> None:
    f = tmp_path / "bandit.npz"
    f.write_bytes(b"not a zip file at all")
    with pytest.raises(UserError, match=r"bandit\.npz.*not a readable bandit state.*delete"):
        bandit(path=str(f))
    p = bandit(path=str(tmp_path / "ok.npz"))
    p.save()
    with pytest.raises(UserError, match=r"ok\.npz.*features.*same embedder, dim"):
        bandit(path=str(tmp_path / "ok.npz"), dim=16)
    other = make_pool(prices=[(1.0, 1.0), (2.0, 2.0)], names=["A", "Z"])
    with pytest.raises(UserError, match=r"ok\.npz.*learned for models \['A', 'B', 'C'\]"):
        resolve_policy("bandit", other, {"embedder": HashingEmbedder(), "dim": 32,
                                         "path": str(tmp_path / "ok.npz")})
    with pytest.raises(UserError, match="no path"):
        bandit().save()
    with pytest.raises(UserError, match="alpha must be a number >= 0"):
        bandit(alpha=-1)
    with pytest.raises(UserError, match="embedder must be 'minilm' or 'hashing'"):
        bandit(embedder="bert")


# ---------------------------------------------------------------------- observe / runtime


def test_observe_learns_the_chosen_models_outcome_only() -> None:
    p = bandit(lam=10.0)
    rng = np.random.default_rng(5)
    q = query("X", rng)
    act = p.decide(view(q, run_id="run-7"))
    assert isinstance(act, Route)
    m = act.calls[0].model
    assert m is not None
    call = CallView(agent="assistant", model=m, prompt=q, output="4", cost_usd=3e-5,
                    input_tokens=10, output_tokens=2, latency_s=0.1, call_id="c1")
    dec = DecisionView(round=0, action="route", reason=act.reason, scores=act.scores,
                       calls=("c1",))
    p.observe(Feedback(run_id="run-7", query=q, score=1.0, calls=(call,), decisions=(dec,),
                       cost_usd=3e-5))
    n = p.state_summary()["n"]
    assert n[m] == 1 and sum(n.values()) == 1
    # No score and no reward, or no bandit decision: nothing to learn.
    p.observe(Feedback(run_id="run-8", query=q, calls=(call,), decisions=(dec,)))
    p.observe(Feedback(run_id="run-9", query=q, score=1.0))
    assert p.state_summary()["updates"] == 1


def test_runs_through_orchestra_learn_from_feedback(tmp_path: Path) -> None:
    be = FunctionBackend(lambda r: f"answer from {r.model.name}")
    f = tmp_path / "b.npz"
    orch = Orchestra(pool(), backend=be, policy="bandit", store=MemoryTraceStore(),
                     policy_params={"embedder": "hashing", "dim": 32, "lam": 10.0, "seed": 0,
                                    "path": str(f), "save_every": 10})
    policy = orch.policy
    assert isinstance(policy, BanditPolicy) and "bandit" in policy_names()
    rng = np.random.default_rng(6)
    for i in range(150):
        topic = "XY"[i % 2]
        r = orch.run(query(topic, rng))
        assert r.rounds == 1 and r.steps[0]["scores"]["router"] == "bandit"
        model = r.steps[0]["scores"]["chosen"][0]
        assert r.answer == f"answer from {model}"
        orch.feedback(r.trace_id, score=outcome(model, topic, rng))
    assert policy.state_summary()["updates"] == 150 and f.exists()
    picks, topics = greedy_picks(policy, 10.0)
    right = ["A" if t == "X" else "B" for t in topics]
    assert np.mean([p == r for p, r in zip(picks, right, strict=True)]) >= 0.8


def test_concurrent_observes_lose_no_update() -> None:
    p = bandit(lam=10.0)
    rng = np.random.default_rng(8)
    items = []
    for _ in range(200):
        q = query("X", rng)
        items.append((q, p.featurize(q, None)))

    def worker(chunk: list[tuple[str, Any]]) -> None:
        for q, x in chunk:
            p.learn("A", x, q, 1.0, cost_of("A", q))

    threads = [threading.Thread(target=worker, args=(items[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert p.state_summary() == {"updates": 200, "n": {"A": 200, "B": 0, "C": 0}}
    # The concurrent updates equal the sequential ones (the design is a sum).
    seq = bandit(lam=10.0)
    for q, x in items:
        seq.learn("A", x, q, 1.0, cost_of("A", q))
    np.testing.assert_allclose(p.learner.A, seq.learner.A, rtol=1e-9)
