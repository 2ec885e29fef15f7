"""A learned policy given no ``path=`` (``orchestra run|serve --policy mf``,
``Orchestra(pool, policy="knn")``) loads the newest artifact of its kind trained on exactly the
pool's models, keeps ``routerbench-<kind>`` on the RouterBench replay pool, and otherwise
refuses with the fix (``path=`` or ``orchestra train KIND --data <your recorded table>``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from orchestra import Orchestra, UserError
from orchestra.embed import HashingEmbedder
from orchestra.outcomes import OutcomeTable
from orchestra.policies.learned.locations import artifacts_home
from orchestra.policies.learned.provenance import (
    TRAINED_ON_FILE,
    find_artifact_for_pool,
    is_routerbench_pool,
    write_trained_on,
)
from orchestra.policies.resolve import resolve_policy as _resolve
from orchestra.testing import FunctionBackend, make_pool
from orchestra.training.router_data import prepare_data
from orchestra.training.router_fit import train_router

WORDS = {"X": ["add", "sum", "multiply", "divide", "integer", "fraction"],
         "Y": ["poem", "sonnet", "haiku", "verse", "rhyme", "ballad"]}
FAST: dict[str, dict[str, Any]] = {
    "knn": {"k": 10, "weighting": "distance", "task_weight": 0.0, "prior": 0.0},
    "mf": {"dim": 4, "weight_decay": 1e-4, "lr": 3e-2, "ensemble": 1, "max_epochs": 10,
           "patience": 5},
}


def table(models: tuple[str, ...], n: int = 30, seed: int = 0) -> OutcomeTable:
    """The first model solves topic X, the second topic Y, any others both."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for i in range(n):
        topic = "X" if i % 2 == 0 else "Y"
        q = f"please {' '.join(rng.choice(WORDS[topic], size=3, replace=False))} {i}"
        for j, m in enumerate(models):
            right = j >= 2 or (j == 0) == (topic == "X")
            rows.append({"query_id": f"q{i}", "query": q, "task": topic, "model": m,
                         "score": float(right), "cost_usd": 0.001 * (1 + 10 * j),
                         "response": "42" if right else "no idea"})
    return OutcomeTable(rows)


def train_to(models: tuple[str, ...], kind: str, name: str, *, mtime_ns: int | None = None
             ) -> Path:
    """A tiny ``kind`` artifact trained on ``models`` at ``<artifacts home>/<name>``, with its
    training record (as ``orchestra train`` writes it); ``mtime_ns`` dates the record."""
    t = table(models)
    router = train_router(kind, prepare_data(t, HashingEmbedder(), source=name),  # type: ignore[arg-type]
                          params=FAST[kind], folds=2, seed=0)
    path = router.save(artifacts_home() / name)
    rec = write_trained_on(path, kind, t, f"/data/{name}.jsonl")
    if mtime_ns is not None:
        os.utime(rec, ns=(mtime_ns, mtime_ns))
    return path


def resolve(spec: str, pool: Any, params: dict[str, Any] | None = None) -> Any:
    """``resolve_policy`` typed loosely: the tests read the policies' attributes."""
    return _resolve(spec, pool, params)


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty data home: artifacts are searched in ``<home>/artifacts``."""
    monkeypatch.setenv("ORCHESTRA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ORCHESTRA_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "home"


ABC = make_pool(prices=[(1.0, 1.0), (1.2, 1.2), (20.0, 20.0)], names=["A", "B", "C"])


@pytest.mark.parametrize("kind", ["knn", "mf"])
def test_without_path_the_artifact_trained_on_the_pools_models_is_served(
        home: Path, kind: str) -> None:
    mine = train_to(("A", "B", "C"), kind, f"mine-{kind}")
    # Not taken: another kind on the same models, and the same kind on other models (newer).
    train_to(("A", "B", "C"), "knn" if kind == "mf" else "mf", "other-kind")
    train_to(("A", "B", "D"), kind, f"other-models-{kind}", mtime_ns=4 * 10**18)
    pol = resolve(kind, ABC)
    assert pol.router.path == mine and pol.router.kind == kind
    assert pol.artifact is not None and pol.artifact.found_by == "pool models"
    assert pol.artifact.trained_on["models"] == ["A", "B", "C"]
    # Orchestra(pool, policy=KIND) routes with it to one of the pool's models.
    be = FunctionBackend(lambda r: f"answer from {r.model.name}")
    res = Orchestra(ABC, backend=be, policy=kind, store=False).run("please add sum 3")
    assert [c.model for c in be.calls] == res.steps[0]["scores"]["chosen"]
    assert be.calls[0].model in ("A", "B", "C")
    # path= still wins over the search.
    other = home / "artifacts" / f"other-models-{kind}"
    small = make_pool(prices=[(1.0, 1.0), (1.2, 1.2)], names=["A", "B"])
    assert resolve(kind, small, {"path": str(other)}).router.path == other


def test_models_are_matched_by_pool_name_or_litellm_id(home: Path) -> None:
    by_id = train_to(("test/A", "test/B", "test/C"), "knn", "by-id-knn")
    pol = resolve("knn", ABC)
    assert pol.router.path == by_id and pol.model_names == ["A", "B", "C"]


def test_the_newest_match_wins_and_a_tie_is_refused_with_the_list(home: Path) -> None:
    old = train_to(("A", "B", "C"), "knn", "old-knn", mtime_ns=10**18)
    new = train_to(("A", "B", "C"), "knn", "new-knn", mtime_ns=2 * 10**18)
    pol = resolve("knn", ABC)
    assert pol.router.path == new and pol.artifact.found_by == "pool models (newest of 2)"
    os.utime(old / TRAINED_ON_FILE, ns=(2 * 10**18, 2 * 10**18))
    with pytest.raises(UserError, match=r"several knn artifacts .*same time") as e:
        resolve("knn", ABC)
    msg = str(e.value)
    assert "old-knn" in msg and "new-knn" in msg and "path=" in msg


def test_no_matching_artifact_is_refused_with_the_fix(home: Path) -> None:
    with pytest.raises(UserError, match=r"orchestra train knn --data <your recorded table>"):
        resolve("knn", ABC)
    train_to(("A", "B", "D"), "knn", "abd-knn")
    train_to(("A", "B"), "knn", "ab-knn")  # fewer models than the pool: not served unasked
    with pytest.raises(UserError) as e:
        resolve("knn", ABC)
    msg = str(e.value)
    assert "['A', 'B', 'C']" in msg and "path=" in msg and "orchestra record --pool" in msg
    assert "abd-knn" in msg and "['A', 'B', 'D']" in msg and "ab-knn" in msg
    # An artifact whose training models are not recorded is named, not used.
    bare = home / "artifacts" / "bare-knn"
    bare.mkdir(parents=True)
    (bare / "config.json").write_text("{}")
    with pytest.raises(UserError, match=r"bare-knn \(its training models are not recorded\)"):
        resolve("knn", ABC)


def test_the_routerbench_replay_pool_keeps_the_routerbench_artifact(home: Path) -> None:
    rb = make_pool(prices=[(1.0, 1.0), (1.2, 1.2), (20.0, 20.0)], names=["A", "B", "C"],
                   provider="replay/routerbench-test")
    assert is_routerbench_pool([m.id for m in rb.models])
    assert not is_routerbench_pool([m.id for m in ABC.models])
    assert not is_routerbench_pool(["replay/mine/A"]) and not is_routerbench_pool([])
    with pytest.raises(UserError, match=r"orchestra train knn --data routerbench"):
        resolve("knn", rb)
    default = train_to(("A", "B", "C"), "knn", "routerbench-knn", mtime_ns=10**18)
    train_to(("A", "B", "C"), "knn", "newer-knn", mtime_ns=2 * 10**18)
    pol = resolve("knn", rb)
    assert pol.router.path == default and pol.artifact.found_by == "routerbench default"
    # On any other pool of those models the newest is taken.
    assert resolve("knn", ABC).router.path == home / "artifacts" / "newer-knn"


def test_find_artifact_for_pool_searches_the_given_folder(tmp_path: Path, home: Path) -> None:
    art = train_to(("A", "B"), "knn", "ab-knn")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with pytest.raises(UserError, match="no trained knn router"):
        find_artifact_for_pool("knn", [("A", "x/A"), ("B", "x/B")], home=elsewhere)
    assert find_artifact_for_pool("knn", [("A", "x/A"), ("B", "x/B")]).path == art


def test_escalate_without_path_uses_the_same_search(home: Path) -> None:
    from orchestra.policies.escalate.artifact import save_escalator
    from orchestra.training.escalate_fit import prepare_escalate_data, train_escalate

    t = table(("A", "B", "C"), n=40)
    esc = train_escalate(prepare_escalate_data(t, source="mine"),
                         params={"hidden": 0, "lookahead": False}, folds=2, pairs=1, triples=0,
                         seed=0, lambdas=(0.0, 1.0))
    path = save_escalator(esc, artifacts_home() / "mine-escalate")
    write_trained_on(path, "escalate", t, "/data/mine.jsonl")
    pol = resolve("escalate", ABC)
    assert pol.escalator.path == path and pol.artifact.found_by == "pool models"
    other = make_pool(prices=[(1.0, 1.0), (1.2, 1.2)], names=["x", "y"])
    with pytest.raises(UserError, match=r"orchestra train escalate --data <your recorded"):
        resolve("escalate", other)
