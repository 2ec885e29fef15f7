"""Tests for orchestra.eval.metrics: hand-computed values and hypothesis properties."""

from __future__ import annotations

import ast
import csv
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestra.errors import UserError
from orchestra.eval.metrics import (
    OracleResult,
    Point,
    aiq,
    apgr,
    choice_point,
    cost_to_match,
    oracle,
    pareto_hull,
    quality_at_cost,
    single_model_points,
    strong_share_to_recover,
)

# ------------------------------------------------------------------------------------------
# pareto_hull


def test_hull_keeps_only_non_decreasing_upper_vertices() -> None:
    pts = [
        (0.6, 0.9),
        (0.2, 0.5),
        (0.4, 0.6),  # under the chord (0.2, 0.5)-(0.6, 0.9), which is 0.7 at 0.4
        (0.8, 0.85),  # dominated by (0.6, 0.9)
        (0.3, 0.2),  # dominated by (0.2, 0.5)
        (1.0, 0.9),  # as good as (0.6, 0.9) but dearer
    ]
    np.testing.assert_allclose(pareto_hull(pts), [[0.2, 0.5], [0.6, 0.9]])


def test_hull_drops_collinear_middle_points_and_keeps_best_of_equal_cost() -> None:
    pts = [(0.0, 0.0), (0.5, 0.5), (1.0, 1.0), (0.0, 0.1), (0.0, 0.05)]
    # (0, 0.1) beats (0, 0) and (0, 0.05) at the same cost; the chord (0, 0.1)-(1, 1) is 0.55
    # at 0.5, so (0.5, 0.5) is below it.
    np.testing.assert_allclose(pareto_hull(pts), [[0.0, 0.1], [1.0, 1.0]])
    np.testing.assert_allclose(
        pareto_hull([(0.0, 0.0), (0.5, 0.5), (1.0, 1.0)]), [[0.0, 0.0], [1.0, 1.0]]
    )


def test_hull_keeps_concave_vertex() -> None:
    pts = [(0.0, 0.2), (0.3, 0.8), (1.0, 1.0)]
    np.testing.assert_allclose(pareto_hull(pts), pts)


def test_hull_of_nothing_is_empty_and_mapping_is_accepted() -> None:
    assert pareto_hull([]).shape == (0, 2)
    hull = pareto_hull({"a": Point(1.0, 0.5), "b": Point(2.0, 0.4)})
    np.testing.assert_allclose(hull, [[1.0, 0.5]])


@pytest.mark.parametrize(
    "bad",
    [
        (0.5, 0.8),  # a single point, not wrapped in a list
        [(0.5, 0.8, 1.0)],
        [(float("nan"), 0.5)],
        [(-1.0, 0.5)],
        [("cheap", 0.5)],
    ],
)
def test_hull_rejects_malformed_points(bad: object) -> None:
    with pytest.raises(UserError, match="expected"):
        pareto_hull(bad)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------
# aiq: hand-computed values


def test_aiq_single_point() -> None:
    # Zero on [0, 0.5), 0.8 on [0.5, 1].
    assert aiq([(0.5, 0.8)], max_cost=1.0) == pytest.approx(0.4)
    # Same point in dollars: cost 1 out of a max of 2.
    assert aiq([(1.0, 0.8)], max_cost=2.0) == pytest.approx(0.4)


def test_aiq_two_points() -> None:
    # 0 on [0, 0.2); trapezoid 0.4 * (0.5 + 0.9) / 2 = 0.28 on [0.2, 0.6]; 0.9 * 0.4 = 0.36.
    assert aiq([(0.2, 0.5), (0.6, 0.9)], max_cost=1.0) == pytest.approx(0.64)


def test_aiq_ignores_dominated_and_under_hull_points() -> None:
    base = [(0.2, 0.5), (0.6, 0.9)]
    extra = [(0.4, 0.6), (0.8, 0.85), (0.3, 0.2), (1.0, 0.9), (0.6, 0.1)]
    assert aiq(base + extra, max_cost=1.0) == pytest.approx(0.64)


def test_aiq_uses_the_hull_not_the_polyline() -> None:
    # (0.5, 0.4) is under the chord (0, 0.2)-(1, 1), so the curve is that chord: (0.2 + 1) / 2.
    assert aiq([(0.0, 0.2), (0.5, 0.4), (1.0, 1.0)], max_cost=1.0) == pytest.approx(0.6)


def test_aiq_flat_extension_after_best_point() -> None:
    # Best (and only) point at x = 0.25 held flat to 1: 0.6 * 0.75.
    assert aiq([(0.25, 0.6)], max_cost=1.0) == pytest.approx(0.45)
    # A free point counts over the whole interval.
    assert aiq([(0.0, 0.5)], max_cost=1.0) == pytest.approx(0.5)


def test_aiq_zero_left_of_cheapest_point() -> None:
    assert aiq([(1.0, 0.9)], max_cost=1.0) == pytest.approx(0.0)
    assert aiq([(0.9, 1.0)], max_cost=1.0) == pytest.approx(0.1)
    assert aiq([], max_cost=1.0) == 0.0


def test_aiq_clips_points_beyond_max_cost_at_one() -> None:
    # Segment (0.5, 0.6) -> (1.5, 1.0) is 0.8 at x = 1: trapezoid 0.5 * (0.6 + 0.8) / 2.
    assert aiq([(0.5, 0.6), (1.5, 1.0)], max_cost=1.0) == pytest.approx(0.35)
    assert aiq([(2.0, 1.0)], max_cost=1.0) == pytest.approx(0.0)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), "a lot"])
def test_aiq_rejects_bad_max_cost(bad: object) -> None:
    with pytest.raises(UserError, match="max_cost") as info:
        aiq([(0.5, 0.5)], max_cost=bad)  # type: ignore[arg-type]
    assert repr(bad) in str(info.value)


# ------------------------------------------------------------------------------------------
# cost_to_match, quality_at_cost


def test_cost_to_match_interpolates_on_the_hull() -> None:
    pts = [(0.2, 0.5), (0.6, 0.9), (0.4, 0.6)]
    assert cost_to_match(pts, 0.7, reference_cost=1.0) == pytest.approx(0.4)
    assert cost_to_match(pts, 0.7, reference_cost=0.8) == pytest.approx(0.5)
    assert cost_to_match(pts, 0.9, reference_cost=0.6) == pytest.approx(1.0)
    # Below the cheapest point's quality: the cheapest point's cost.
    assert cost_to_match(pts, 0.1, reference_cost=1.0) == pytest.approx(0.2)
    assert cost_to_match(pts, 0.95, reference_cost=1.0) is None
    assert cost_to_match([], 0.5, reference_cost=1.0) is None


def test_cost_to_match_rejects_bad_reference() -> None:
    with pytest.raises(UserError, match="reference_cost"):
        cost_to_match([(0.2, 0.5)], 0.5, reference_cost=0)


def test_quality_at_cost() -> None:
    pts = [(0.2, 0.5), (0.6, 0.9), (0.4, 0.6)]
    assert quality_at_cost(pts, 0.4) == pytest.approx(0.7)
    assert quality_at_cost(pts, 0.2) == pytest.approx(0.5)
    assert quality_at_cost(pts, 5.0) == pytest.approx(0.9)
    assert quality_at_cost(pts, 0.1) is None
    assert quality_at_cost([], 0.1) is None


# ------------------------------------------------------------------------------------------
# apgr, strong_share_to_recover


def test_apgr_hand_computed() -> None:
    # PGR at shares 0, 0.5, 1: 0, 0.75, 1 -> 0.5 * 0.375 + 0.5 * 0.875 = 0.625.
    pts = [(0.0, 0.5), (0.5, 0.8), (1.0, 0.9)]
    assert apgr(pts, weak_quality=0.5, strong_quality=0.9) == pytest.approx(0.625)


def test_apgr_random_router_is_one_half() -> None:
    shares = np.linspace(0, 1, 11)
    pts = np.column_stack([shares, 0.3 + shares * 0.4])
    assert apgr(pts, weak_quality=0.3, strong_quality=0.7) == pytest.approx(0.5)


def test_apgr_normalises_by_span_like_routellm_and_anchor_extends_it() -> None:
    pts = [(0.6, 0.8), (0.2, 0.6)]
    # PGR 0.25 and 0.75 over [0.2, 0.6]: mean 0.5.
    assert apgr(pts, 0.5, 0.9) == pytest.approx(0.5)
    # Anchored at (0, weak) and (1, strong): 0.2*0.125 + 0.4*0.5 + 0.4*0.875 = 0.575.
    assert apgr(pts, 0.5, 0.9, anchor=True) == pytest.approx(0.575)


def test_apgr_averages_points_at_the_same_share() -> None:
    pts = [(0.0, 0.5), (0.5, 0.7), (0.5, 0.9), (1.0, 0.9)]  # same as (0.5, 0.8)
    assert apgr(pts, 0.5, 0.9) == pytest.approx(0.625)


def test_apgr_errors() -> None:
    with pytest.raises(UserError, match=r"strong_quality > weak_quality.*0\.9.*swapped"):
        apgr([(0, 0.5), (1, 0.9)], weak_quality=0.9, strong_quality=0.5)
    with pytest.raises(UserError, match=r"\[0, 1\].*50\.0.*percentage"):
        apgr([(0, 0.5), (50, 0.9)], weak_quality=0.5, strong_quality=0.9)
    with pytest.raises(UserError, match="two or more distinct"):
        apgr([(0.5, 0.7)], weak_quality=0.5, strong_quality=0.9)


def test_strong_share_to_recover() -> None:
    pts = [(0.0, 0.5), (0.5, 0.8), (1.0, 0.9)]
    # PGR 0 -> 0.75 over [0, 0.5]: 0.5 of the gap at share 0.5 * 0.5 / 0.75.
    assert strong_share_to_recover(pts, 0.5, 0.9, 0.5) == pytest.approx(1 / 3)
    assert strong_share_to_recover(pts, 0.5, 0.9, 0.0) == pytest.approx(0.0)
    assert strong_share_to_recover(pts, 0.5, 0.9, 1.0) == pytest.approx(1.0)
    assert strong_share_to_recover(pts, 0.5, 0.9, 1.1) is None


# ------------------------------------------------------------------------------------------
# oracle, single_model_points, choice_point

SCORES = np.array(
    [
        [1.0, 0.0, 1.0],
        [0.0, 0.0, 0.0],
        [0.0, 1.0, 1.0],
        [np.nan, 1.0, 0.5],
    ]
)
COSTS = np.array(
    [
        [3.0, 1.0, 2.0],
        [3.0, 1.0, 2.0],
        [1.0, 5.0, 4.0],
        [1.0, 2.0, 1.0],
    ]
)


def test_oracle_picks_cheapest_among_best() -> None:
    result = oracle(SCORES, COSTS)
    assert isinstance(result, OracleResult)
    assert result.choice.tolist() == [2, 1, 2, 1]
    assert result.quality == pytest.approx(0.75)
    assert result.cost == pytest.approx(2 + 1 + 4 + 2)
    quality, cost, _choice = result  # also a plain tuple
    assert (quality, cost) == (result.quality, result.cost)


def test_oracle_unknown_cost_ranks_last_and_counts_zero() -> None:
    assert oracle([[1.0, 1.0]], [[np.nan, 5.0]]).choice.tolist() == [1]
    both_unknown = oracle([[1.0, 1.0]], [[np.nan, np.nan]])
    assert both_unknown.choice.tolist() == [0]
    assert both_unknown.cost == 0.0


def test_missing_scores_follow_missing_score() -> None:
    singles = single_model_points(SCORES, COSTS, ["a", "b", "c"])
    assert list(singles) == ["a", "b", "c"]
    # (cost, quality); model a's missing score counts 0.
    assert singles["a"] == pytest.approx((8.0, 0.25))
    assert singles["b"] == pytest.approx((9.0, 0.5))
    assert singles["c"] == pytest.approx((9.0, 0.625))
    half = single_model_points(SCORES, COSTS, ["a", "b", "c"], missing_score=0.5)
    assert half["a"].quality == pytest.approx(0.375)
    with pytest.raises(UserError, match=r"missing_score=None.*score_matrix\[3, 0\]"):
        single_model_points(SCORES, COSTS, ["a", "b", "c"], missing_score=None)
    with pytest.raises(UserError, match=r"missing_score=None"):
        oracle(SCORES, COSTS, missing_score=None)


def test_single_model_points_feed_aiq() -> None:
    singles = single_model_points(SCORES, COSTS, ["a", "b", "c"])
    max_cost = max(p.cost for p in singles.values())
    # Hull: (8/9, 0.25) -> (1, 0.625); area = (1/9) * (0.25 + 0.625) / 2.
    assert aiq(singles, max_cost) == pytest.approx((1 / 9) * 0.875 / 2)
    # The oracle costs 9 too (x = 1) but reaches 0.75: hull (8/9, 0.25) -> (1, 0.75).
    orc = oracle(SCORES, COSTS)
    with_oracle = [*singles.values(), Point(orc.cost, orc.quality)]
    assert aiq(with_oracle, max_cost) == pytest.approx((1 / 9) * 1.0 / 2)


def test_choice_point() -> None:
    point = choice_point(SCORES, COSTS, np.array([0, 0, 1, 2]))
    # Scores 1, 0, 1, 0.5.
    assert isinstance(point, Point)
    assert point == pytest.approx((3 + 3 + 5 + 1, 0.625))
    with pytest.raises(UserError, match=r"\[0, 3\).*7"):
        choice_point(SCORES, COSTS, np.array([0, 0, 7, 2]))
    with pytest.raises(UserError, match="integer model indices"):
        choice_point(SCORES, COSTS, np.array([0.0, 0.0, 1.0, 2.0]))


@pytest.mark.parametrize(
    ("scores", "costs", "names", "match"),
    [
        (SCORES, COSTS[:, :2], ["a", "b", "c"], "shape of score_matrix"),
        (SCORES[0], COSTS[0], ["a", "b", "c"], r"n_queries, n_models"),
        (SCORES, -COSTS, ["a", "b", "c"], r"costs >= 0.*-3\.0"),
        (SCORES, COSTS, ["a", "b"], r"expected 3 names.*\['a', 'b'\]"),
        (SCORES, COSTS, ["a", "b", "a"], r"unique.*\['a'\]"),
        (SCORES, COSTS, "abc", "sequence of model names"),
    ],
)
def test_matrix_validation(scores: object, costs: object, names: object, match: str) -> None:
    with pytest.raises(UserError, match=match):
        single_model_points(scores, costs, names)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------
# Real recorded data: RouterBench test split (953 queries, 11 models)

ROUTERBENCH = Path(__file__).resolve().parents[3] / "shared" / "data" / "routerbench"
RB_MODELS = [
    "gpt-4-1106-preview",
    "gpt-3.5-turbo-1106",
    "claude-v1",
    "claude-v2",
    "claude-instant-v1",
    "meta/llama-2-70b-chat",
    "meta/code-llama-instruct-34b-chat",
    "mistralai/mixtral-8x7b-chat",
    "mistralai/mistral-7b-chat",
    "zero-one-ai/Yi-34B-Chat",
    "WizardLM/WizardLM-13B-V1.2",
]


@pytest.mark.skipif(
    not ROUTERBENCH.is_dir(), reason=f"RouterBench shared data not found at {ROUTERBENCH}"
)
def test_routerbench_reference_points() -> None:
    csv.field_size_limit(1 << 30)
    rows: list[dict[str, str]] = []
    for split in ("arc_challenge_test", "mbpp_test", "winograde_test"):
        with open(ROUTERBENCH / f"{split}.csv", newline="") as f:
            rows.extend(csv.DictReader(f))
    assert len(rows) == 953
    assert isinstance(ast.literal_eval(rows[0]["prompt"]), list)

    def cell(text: str) -> float:
        return float(text) if text.strip() else math.nan

    scores = np.array([[cell(r[m]) for m in RB_MODELS] for r in rows])
    costs = np.array([[cell(r[f"{m}|total_cost"]) for m in RB_MODELS] for r in rows])
    assert np.isnan(scores).sum() > 0  # some empty cells, counted as 0 below

    singles = single_model_points(scores, costs, RB_MODELS)
    gpt4 = singles["gpt-4-1106-preview"]
    assert gpt4.quality == pytest.approx(0.874, abs=5e-4)
    assert gpt4.cost == pytest.approx(4.80, abs=5e-3)
    orc = oracle(scores, costs)
    assert orc.quality == pytest.approx(0.974, abs=5e-4)
    assert orc.cost == pytest.approx(0.20, abs=5e-3)
    cheapest = min(singles.values(), key=lambda p: p.cost)
    assert cheapest == singles["mistralai/mistral-7b-chat"]
    assert cheapest.cost == pytest.approx(0.08, abs=5e-3)

    max_cost = gpt4.cost  # the most expensive single model
    assert max(p.cost for p in singles.values()) == max_cost
    single_aiq = aiq(singles, max_cost)
    oracle_aiq = aiq([*singles.values(), Point(orc.cost, orc.quality)], max_cost)
    # The singles' hull climbs from mistral-7b (x ~ 0.016) to gpt-4 at x = 1; the oracle sits
    # at x ~ 0.04 with the top quality, so it lifts the AIQ close to its own quality.
    assert 0.75 < single_aiq < gpt4.quality < oracle_aiq < orc.quality
    assert cost_to_match(singles, gpt4.quality, gpt4.cost) == pytest.approx(1.0)
    assert cost_to_match([Point(orc.cost, orc.quality)], gpt4.quality, gpt4.cost) == (
        pytest.approx(orc.cost / gpt4.cost)
    )


# ------------------------------------------------------------------------------------------
# Properties

unit = st.floats(0.0, 1.0, allow_nan=False)
cost = st.floats(0.0, 2.0, allow_nan=False)
points_st = st.lists(st.tuples(cost, unit), min_size=1, max_size=8)
max_cost_st = st.floats(0.1, 2.0, allow_nan=False)
TOL = 1e-9
# The CI machines are small and shared: judge properties, not speed.
no_deadline = settings(deadline=None)


@no_deadline
@given(points_st, max_cost_st)
def test_aiq_in_unit_interval(pts: list[tuple[float, float]], max_cost: float) -> None:
    value = aiq(pts, max_cost)
    assert -TOL <= value <= 1.0 + TOL


@no_deadline
@given(points_st, max_cost_st, st.data())
def test_dominated_point_never_changes_aiq(
    pts: list[tuple[float, float]], max_cost: float, data: st.DataObject
) -> None:
    c, q = data.draw(st.sampled_from(pts))
    worse = (c + data.draw(cost), q - data.draw(unit))
    assert aiq(pts + [worse], max_cost) == pytest.approx(aiq(pts, max_cost), abs=TOL)


@no_deadline
@given(points_st, max_cost_st, st.data())
def test_aiq_is_monotone_when_a_point_improves(
    pts: list[tuple[float, float]], max_cost: float, data: st.DataObject
) -> None:
    i = data.draw(st.integers(0, len(pts) - 1))
    c, q = pts[i]
    better = (max(0.0, c - data.draw(cost)), min(1.0, q + data.draw(unit)))
    improved = pts[:i] + [better] + pts[i + 1 :]
    assert aiq(improved, max_cost) >= aiq(pts, max_cost) - TOL


@no_deadline
@given(points_st, max_cost_st, st.tuples(cost, unit))
def test_adding_a_point_never_lowers_aiq(
    pts: list[tuple[float, float]], max_cost: float, extra: tuple[float, float]
) -> None:
    assert aiq(pts + [extra], max_cost) >= aiq(pts, max_cost) - TOL


@settings(max_examples=50, deadline=None)
@given(points_st, max_cost_st)
def test_aiq_matches_a_riemann_sum_of_quality_at_cost(
    pts: list[tuple[float, float]], max_cost: float
) -> None:
    n = 2000
    xs = (np.arange(n) + 0.5) / n
    values = [quality_at_cost(pts, x * max_cost) for x in xs]
    riemann = float(np.mean([0.0 if v is None else v for v in values]))
    assert aiq(pts, max_cost) == pytest.approx(riemann, abs=2e-3)


# On a grid, so slopes stay well conditioned.
grid_cost = st.integers(0, 200).map(lambda k: k / 100)
grid_quality = st.integers(0, 100).map(lambda k: k / 100)
grid_points_st = st.lists(
    st.tuples(grid_cost, grid_quality),
    min_size=1,
    max_size=8,
)


@no_deadline
@given(grid_points_st)
def test_hull_is_increasing_and_concave(pts: list[tuple[float, float]]) -> None:
    hull = pareto_hull(pts)
    assert len(hull) >= 1
    assert np.all(np.diff(hull[:, 0]) > 0) and np.all(np.diff(hull[:, 1]) > 0)
    slopes = np.diff(hull[:, 1]) / np.diff(hull[:, 0])
    assert np.all(np.diff(slopes) <= 1e-9 * np.maximum(1.0, np.abs(slopes[1:])))
    # No input point lies above the hull curve.
    for c, q in pts:
        at = quality_at_cost(hull, c)
        assert at is not None and q <= at + TOL


@no_deadline
@given(points_st, unit)
def test_cost_to_match_inverts_quality_at_cost(
    pts: list[tuple[float, float]], target: float
) -> None:
    frac = cost_to_match(pts, target, reference_cost=1.0)
    best = max(q for _, q in pts)
    if target > best:
        assert frac is None
    else:
        assert frac is not None
        reached = quality_at_cost(pts, frac)
        assert reached is not None and reached >= target - 1e-7
        assert math.isfinite(frac)


@no_deadline
@given(st.floats(0.0, 0.5), st.floats(0.51, 1.0), st.lists(unit, min_size=2, max_size=10))
def test_apgr_of_the_straight_line_is_one_half(
    weak: float, strong: float, shares: list[float]
) -> None:
    shares = sorted(set(shares) | {0.0, 1.0})
    pts = [(s, weak + s * (strong - weak)) for s in shares]
    assert apgr(pts, weak, strong) == pytest.approx(0.5)
