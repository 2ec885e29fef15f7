"""Per-key budgets hold under load: threads of this process AND separate processes hammer
hold / settle on the same keys of one SQLite key store, with random wants and spends, while a
monitor reads the books again and again. At every moment and at the end, settled spend plus live
holds stays within every limit; every settled cent is counted; every refusal was true (what was
left was below the floor); and once all is settled, the rest of the budget can still be held."""

from __future__ import annotations

import multiprocessing as mp
import random
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pg_server import fresh_database, serve_or_skip

from orchestra.serve.keys import BudgetRefused, KeyStore, from_units, to_units

THREADS = 4
PROCESSES = 4
OPS = 40
MIN_USD = 1e-6
# "total" binds the first key, "per_day" the second; per_request caps every hold on both.
LIMITS = {"a": {"per_request_usd": 0.25, "per_day_usd": 5.0, "total_usd": 1.5},
          "b": {"per_request_usd": 0.25, "per_day_usd": 1.0, "total_usd": 50.0}}


def hammer(path: str, seed: int) -> dict[str, Any]:
    """Hold and settle ``OPS`` times on random keys; what was settled, per key, in units."""
    rng = random.Random(seed)
    store = KeyStore(path)
    keys = {k.name: k for k in store.list()}
    settled = {name: 0 for name in keys}
    holds = refusals = 0
    false_refusals: list[str] = []
    for i in range(OPS):
        name = rng.choice(sorted(keys))
        want = rng.choice([None, rng.uniform(MIN_USD, 0.4)])
        try:
            h = store.hold(keys[name], want, request_id=f"{seed}-{i}", ttl_s=600,
                           min_usd=MIN_USD)
        except BudgetRefused as e:
            refusals += 1
            left = e.limit_usd - e.spent_usd - e.held_usd
            if e.window != "per_request" and left >= MIN_USD:
                false_refusals.append(str(e))
            continue
        holds += 1
        assert h.amount_usd is not None and h.amount_usd <= 0.25
        spent = rng.choice([0.0, h.amount_usd, rng.uniform(0, h.amount_usd)])
        store.settle(h, spent)
        if rng.random() < 0.2:
            store.settle(h, spent)  # a retried settle must not count twice
        settled[name] += to_units(spent, up=True)
    store.close()
    return {"settled": settled, "holds": holds, "refusals": refusals,
            "false_refusals": false_refusals}


def _process_main(path: str, seed: int, results: Any) -> None:
    results.put(hammer(path, seed))


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    yield from serve_or_skip()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_concurrent_threads_and_processes_never_overspend(
        tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> None:
    path = (str(tmp_path / "keys.sqlite") if backend == "sqlite"
            else fresh_database(request.getfixturevalue("postgres")))
    store = KeyStore(path)
    for name, limits in LIMITS.items():
        store.create(name, **limits)

    violations: list[str] = []
    snapshots = [0]
    done = threading.Event()

    def monitor() -> None:
        watcher = KeyStore(path)
        while not done.is_set():
            for name, limits in LIMITS.items():
                u = watcher.usage(name)
                snapshots[0] += 1
                for w in ("per_day", "total"):
                    books = to_units(u[w]["spent"], up=True) + to_units(u[w]["held"], up=True)
                    if books > to_units(limits[f"{w}_usd"], up=False):
                        violations.append(f"{name} {w}: {u[w]}")
                if u["per_request"]["held"] > limits["per_request_usd"]:
                    violations.append(f"{name} per_request: {u['per_request']}")
        watcher.close()

    results: list[dict[str, Any]] = []
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_process_main, args=(path, 1000 + i, queue))
             for i in range(PROCESSES)]
    threads = [threading.Thread(target=lambda s=s: results.append(hammer(path, s)))
               for s in range(THREADS)]
    watch = threading.Thread(target=monitor)
    watch.start()
    for p in procs:
        p.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results += [queue.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    done.set()
    watch.join()

    assert len(results) == THREADS + PROCESSES
    assert violations == [] and snapshots[0] > 0
    assert [r for res in results for r in res["false_refusals"]] == []
    assert sum(r["refusals"] for r in results) > 0, "the limits were never reached: no proof"
    for name, limits in LIMITS.items():
        u = store.usage(name)
        assert u["live_holds"] == 0 and u["expired"]["count"] == 0
        settled = sum(r["settled"][name] for r in results)
        # every settled spend is counted, once
        assert to_units(u["total"]["spent"], up=True) == settled
        for w in ("per_day", "total"):
            assert u[w]["spent"] <= limits[f"{w}_usd"] and not u[w]["exceeded"]
            assert u[w]["overruns"] == 0
        # no false "budget exceeded": the rest can still be held and spent
        rest = min(to_units(limits[f"{w}_usd"], up=False) - to_units(u[w]["spent"], up=True)
                   for w in ("per_day", "total"))
        if rest >= to_units(MIN_USD, up=True):
            h = store.hold(store.get(name), None, request_id="rest", ttl_s=60, min_usd=MIN_USD)
            assert h.amount_usd is not None
            assert to_units(h.amount_usd, up=False) == min(
                rest, to_units(limits["per_request_usd"], up=False))
            store.settle(h, 0)
    # the running totals agree with the holds they were summed from
    if backend == "sqlite":
        db: Any = sqlite3.connect(path)
    else:
        import psycopg

        db = psycopg.connect(path)
    q = "?" if backend == "sqlite" else "%s"
    for kid, spent in db.execute("SELECT id, spent FROM keys").fetchall():
        (from_holds,) = db.execute(f"SELECT COALESCE(SUM(spent), 0) FROM holds WHERE key_id={q}",
                                   (kid,)).fetchone()
        (from_days,) = db.execute(f"SELECT COALESCE(SUM(spent), 0) FROM days WHERE key_id={q}",
                                  (kid,)).fetchone()
        assert spent == from_holds == from_days, from_units(spent)
    db.close()
