"""The ``rl`` policy shown a scorer's estimates, and the warm start that imitates the scorer's
cascade (``--hints``, ``--sft-plan teacher``), on the synthetic multiple-choice table of the
escalate tests: cheap A and B right 65% of the time, pricey C 97%.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import pytest
from test_escalate import run_view, synthetic  # same folder
from test_rl_policy import CharTokenizer, Scripted  # same folder

from orchestra import Orchestra
from orchestra.policies.base import Answer, Route
from orchestra.policies.escalate.artifact import save_escalator
from orchestra.policies.escalate.cascade import Escalator
from orchestra.policies.escalate.policy import EscalatePolicy
from orchestra.policies.rl.hints import ScorerHints
from orchestra.policies.rl.policy import RLPolicy
from orchestra.training.escalate_fit import prepare_escalate_data, train_escalate
from orchestra.training.rl_episodes import EpisodeRunner
from orchestra.training.rl_sft import sft_trajectories


@pytest.fixture(scope="module")
def esc() -> Escalator:
    data = prepare_escalate_data(synthetic(), source="synthetic")
    return train_escalate(data, params={"hidden": 0, "lookahead": True}, folds=2, pairs=3,
                          triples=1, seed=0, lambdas=(0.0, 0.1, 0.3, 1.0, 3.0, 10.0))


@pytest.fixture(scope="module")
def esc_dir(esc: Escalator, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("esc") / "synthetic-escalate"
    save_escalator(esc, path)
    return path


def hints_for(esc: Escalator) -> ScorerHints:
    return ScorerHints(run_view("q", []).pool, escalator=esc)


def test_estimates_show_the_cascade_and_suggest_its_decision(esc: Escalator) -> None:
    hints = hints_for(esc)
    q = "Question 7: which option is right?\nA) red 7\nB) green\nC) blue\nD) black\nAnswer:"
    cases = [([], 0.3), ([("A", "B")], 0.3), ([("A", "B"), ("B", "B")], 0.3),
             ([("A", "B"), ("B", "C")], 0.3), ([("A", "B")], 10.0)]
    seen: set[str] = set()
    for answers, lam in cases:
        view = run_view(q, answers)
        numbered = [c.call_id for r in view.rounds for c in r.calls]
        est = hints.estimate(view, lam, numbered)
        action = EscalatePolicy(view.pool, escalator=esc, lam=lam, max_calls=3).decide(view)
        # The suggestion is the escalate policy's own decision, as protocol text.
        if isinstance(action, Route):
            assert est.suggestion == f"<route>{action.calls[0].model}</route>"
        else:
            assert isinstance(action, Answer)
            assert est.suggestion == f"<answer>#{numbered.index(action.from_call) + 1}</answer>"
        seen.add(est.suggestion.split(">")[0])
        text = est.text
        assert text.startswith("<information>\n") and text.endswith("</information>\n")
        assert text.startswith("<information>\nestimates:\n")
        cands = [ln for ln in text.splitlines() if ln.startswith("- ")]
        nets = [float(ln.split("net ")[1].split(",")[0]) for ln in cands]
        assert nets == sorted(nets, reverse=True)  # best candidate first
        called = {m for m, _ in answers}
        assert not any(ln[2:].split(":")[0] in called for ln in cands)  # only uncalled models
        if answers:
            assert "outputs: [1] P(right)" in text
        else:
            assert "outputs:" not in text
    assert seen == {"<route", "<answer"}  # both kinds of decision occur


def test_the_policy_reads_estimates_before_each_decision(esc: Escalator) -> None:
    from orchestra.backends.replay import ReplayBackend, pool_from_outcomes

    table = synthetic(20, seed=3)
    pool = pool_from_outcomes(table, refiner="vote", table_name="rl-hints-synthetic")
    said = ["<route>A</route>", "<route>C</route>", "<answer>#2</answer>"]
    gen = Scripted(*said)
    policy = RLPolicy(pool, gen, lam=0.3, max_chars=40, max_query_chars=30,
                      hints=ScorerHints(pool, escalator=esc))
    q = table.query_rows[0]
    res = Orchestra(pool, policy=policy, backend=ReplayBackend(), store=False).run(
        q.query, meta={"task": "mc", "query_id": q.query_id})
    assert res.status == "ok"
    prompts = gen.prompts
    assert len(prompts) == 3
    first = prompts[0]
    assert "Estimates from a trained scorer" in first
    assert f"Question: {q.query[:29]}…\n" in first and q.query[29:] not in first  # 30 chars
    assert first.endswith("</information>\n") and first.count("estimates:") == 1
    # Each later prompt is the earlier one + the decision + the outputs + fresh estimates.
    for before, after, text in zip(prompts, prompts[1:], said, strict=False):
        assert after.startswith(before + text)
        assert after.count("estimates:") == before.count("estimates:") + 1
    assert "[1] A:" in prompts[1] and "outputs: [1] P(right)" in prompts[1]
    assert "outputs: [1] P(right)" in prompts[2] and "; [2] P(right)" in prompts[2]


def test_teacher_trajectories_are_the_cascades_runs(esc: Escalator, esc_dir: Path) -> None:
    """The warm start's teacher episodes call the models the escalate policy calls on the same
    replay pool and end on its answer; the generated tokens are exactly its decisions."""
    from orchestra.backends.replay import ReplayBackend

    table = synthetic(24, seed=5)
    tok = CharTokenizer()
    runner = EpisodeRunner(table, Scripted("<answer>x</answer>"), hints=str(esc_dir),
                           query_chars=60)
    lams = (0.0, 0.3, 10.0)
    pairs = asyncio.run(sft_trajectories(runner, runner.queries, tok, lams, random.Random(2),
                                         plan="teacher"))
    assert {k for k, _ in pairs} == {"teacher"}
    calls = set()
    for (_, ep), q in zip(pairs, runner.queries, strict=True):
        assert ep.reward.format_error is None
        ref = EscalatePolicy(runner.pool, escalator=esc, lam=ep.lam, max_calls=3)
        res = Orchestra(runner.pool, policy=ref, backend=ReplayBackend(), store=False).run(
            q.text, meta={"query_id": q.query_id, "task": q.task})
        ref_models = [c["model"] for s in res.steps for c in s.get("calls", [])
                      if c.get("role", "route") == "route"]
        assert [m for m in ep.models if m in {"A", "B", "C"}][: len(ref_models)] == ref_models
        assert ep.answer == res.answer
        generated = "".join(chr(t) for t, m in zip(ep.ids, ep.mask, strict=True) if m)
        assert generated == "".join(ep.texts)
        assert all(t.startswith(("<route>", "<answer>#")) for t in ep.texts)
        calls.add(len(ref_models))
    assert len(calls) > 1  # some runs stop at one call, others escalate


def test_teacher_needs_hints_and_an_artifact_keeps_them(esc_dir: Path, tmp_path: Path) -> None:
    from pydantic import ValidationError
    from test_rl_policy import _tiny_hf

    from orchestra import UserError
    from orchestra.policies.rl import make_rl_policy
    from orchestra.training.rl_config import RLTrainConfig

    with pytest.raises(ValidationError, match="give hints"):
        RLTrainConfig(sft_plan="teacher")
    assert RLTrainConfig(sft_plan="teacher", hints="auto").hints == "auto"
    model, tokenizer = _tiny_hf()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    settings: dict[str, Any] = {"default_lam": 0.3, "max_chars": 50, "query_chars": 100,
                                "hints": str(esc_dir), "lams": [0.0, 0.1, 1.0]}
    (tmp_path / "rl.json").write_text(json.dumps(settings))
    pool = run_view("q", []).pool
    p = make_rl_policy(pool, path=str(tmp_path))
    assert p.hints is not None and p.hints.path == str(esc_dir)
    assert (p.max_chars, p.max_query_chars) == (50, 100)
    assert p.default_lambdas() == [0.0, 0.1, 1.0]  # an evaluation sweeps the trained λ grid
    assert p.hints.max_calls == 3  # 4 turns: 3 calls and the answer
    assert make_rl_policy(pool, path=str(tmp_path), max_turns=2).hints.max_calls == 1  # type: ignore[union-attr]
    assert make_rl_policy(pool, path=str(tmp_path), hints="none").hints is None
    settings["hints"] = str(tmp_path / "gone")
    (tmp_path / "rl.json").write_text(json.dumps(settings))
    with pytest.raises(UserError, match="hints=PATH"):
        make_rl_policy(pool, path=str(tmp_path))
