"""Recording outcomes (orchestra.record.recorder, .files): runs, grades, files, budget, resume.

The models are in-process test backends (:class:`orchestra.testing.FunctionBackend`) whose
token counts match their usage, so costs are exact; every answer is a real run through
``Orchestra`` with a trace.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from orchestra.backends.base import CompletionRequest
from orchestra.errors import UserError
from orchestra.outcomes.loaders import load_outcomes
from orchestra.outcomes.table import OutcomeTable
from orchestra.prompts import build_messages
from orchestra.record.recorder import RecordProgress, arecord, choose_pairs, record
from orchestra.record.sets import LabelledItem
from orchestra.spec import Pool
from orchestra.testing import FunctionBackend, last_user_message, make_pool
from orchestra.trace.store import MemoryTraceStore

REPO = Path(__file__).resolve().parents[2]

ITEMS = [
    LabelledItem(id="q1", question="What is the capital of France ?", gold=("Paris",),
                 task="geo"),
    LabelledItem(id="q2", question="How many legs has a spider ?", gold=("8",), task="math",
                 grader="number"),
    LabelledItem(id="q3", question="Who wrote the play Hamlet ?",
                 gold=("Shakespeare", "William Shakespeare"), task="geo"),
]
RIGHT = {"q1": "Paris", "q2": "It has 8 legs", "q3": "William Shakespeare"}


def _pool() -> Pool:
    # m0 is cheap and always right; m1 is pricey and always wrong.
    return make_pool([(1.0, 2.0), (10.0, 30.0)], names=["m0", "m1"], max_output_tokens=16)


def _answer(req: CompletionRequest) -> str:
    q = last_user_message(req)
    qid = next(it.id for it in ITEMS if it.prompt == q)
    return RIGHT[qid] if req.model.name == "m0" else "I do not know"


def _pairs_called(backend: FunctionBackend) -> list[tuple[str, str]]:
    ids = {it.prompt: it.id for it in ITEMS}
    return [(ids[m["content"]], c.model) for c in backend.calls for m in c.messages[-1:]]


def _worst(pool: Pool, backend: FunctionBackend, item: LabelledItem, model: str) -> float:
    m = pool.model(model)
    msgs = build_messages(pool.answer_agent, m, item.prompt, query=item.prompt)
    return (backend.prompt_tokens_bound(m, msgs) * m.input_price
            + m.max_output_tokens * m.output_price) / 1e6  # type: ignore[operator]


def test_every_pair_answers_every_question_graded_into_a_loadable_table(tmp_path: Path) -> None:
    backend = FunctionBackend(_answer)
    store = MemoryTraceStore()
    seen: list[RecordProgress] = []
    out = tmp_path / "o.jsonl"
    s = record(_pool(), ITEMS, out, backend=backend, store=store, data=["mine"],
               progress=seen.append)
    assert (s.recorded, s.failed, s.skipped, s.stopped) == (6, 0, 0, None)
    assert sorted(_pairs_called(backend)) == sorted((it.id, m) for it in ITEMS
                                                    for m in ("m0", "m1"))
    table = load_outcomes(out)
    assert table.models == ["m0", "m1"] and table.queries == ["q1", "q2", "q3"]
    assert table.score_matrix().tolist() == [[1.0, 0.0]] * 3
    # Cost = the run's real usage × the pool's prices.
    m0 = _pool().model("m0")
    for r in OutcomeTable.read(out).to_records():
        if r["model"] == "m0":
            assert r["cost_usd"] == pytest.approx(m0.cost(r["input_tokens"], r["output_tokens"]))
            assert r["response"] == RIGHT[r["query_id"]]
            assert r["latency_s"] >= 0
    q = {qr.query_id: qr for qr in table.query_rows}
    assert (q["q3"].gold, q["q3"].task) == ("Shakespeare", "geo")
    assert table.models_info["m1"].output_price == 30.0
    assert table.meta["gold_aliases"] == {"q3": ["Shakespeare", "William Shakespeare"]}
    assert table.meta["graders"] == {"geo": "em", "math": "number"}
    assert s.per_model["m0"]["accuracy"] == 1.0 and s.per_model["m1"]["accuracy"] == 0.0
    assert s.per_task["math"]["m0"]["answers"] == 1
    assert s.total_usd == pytest.approx(sum(r["cost_usd"] for r in table.to_records()))
    # Progress after each answer, with the spend so far.
    assert [p.done for p in seen] == list(range(7))
    assert seen[-1].spent_usd == pytest.approx(s.total_usd)
    # Each answer is a traced run of single:<model> whose grade is in its trace.
    run_id = s.trace_ids[("q2", "m0")]
    events = store.events(run_id)
    started = next(e for e in events if e["kind"] == "run_started")
    assert started["policy"] == "single:m0" and started["meta"]["query_id"] == "q2"
    fb = next(e for e in events if e["kind"] == "feedback")
    assert fb["score"] == 1.0 and fb["meta"]["grader"] == "number"


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_csv_and_parquet_hold_the_same_table(tmp_path: Path, suffix: str) -> None:
    ref = tmp_path / "ref.jsonl"
    record(_pool(), ITEMS, ref, backend=FunctionBackend(_answer))
    out = tmp_path / f"o{suffix}"
    record(_pool(), ITEMS, out, backend=FunctionBackend(_answer))
    a, b = load_outcomes(ref), load_outcomes(out)
    assert b.queries == a.queries and b.models == a.models
    assert b.score_matrix().tolist() == a.score_matrix().tolist()
    assert b.cost_matrix().tolist() == a.cost_matrix().tolist()
    assert [q.gold for q in b.query_rows] == [q.gold for q in a.query_rows]
    assert not (tmp_path / f"o{suffix}.rows.jsonl").exists()  # parquet's rows file is folded in


def test_models_and_agents_to_record_are_chosen_and_checked() -> None:
    pool = _pool()
    assert [p.label for p in choose_pairs(pool)] == ["m0", "m1"]
    assert [p.label for p in choose_pairs(pool, ["m1"])] == ["m1"]
    both = choose_pairs(pool, ["m0,verifier@m1"])
    assert [(p.agent, p.model, p.label) for p in both] == [
        ("assistant", "m0", "assistant@m0"), ("verifier", "m1", "verifier@m1")]
    with pytest.raises(UserError, match="unknown model 'gpt'"):
        choose_pairs(pool, ["gpt"])
    with pytest.raises(UserError, match="names assistant@m0 twice"):
        choose_pairs(pool, ["m0", "m0"])


def test_an_existing_file_needs_resume_and_resume_pays_for_nothing_recorded(tmp_path: Path
                                                                            ) -> None:
    out = tmp_path / "o.jsonl"
    first = record(_pool(), ITEMS, out, backend=FunctionBackend(_answer))
    with pytest.raises(UserError, match=r"already exists; pass --resume"):
        record(_pool(), ITEMS, out, backend=FunctionBackend(_answer))
    again = FunctionBackend(_answer)
    s = record(_pool(), ITEMS, out, backend=again, resume=True)
    assert again.calls == []
    assert (s.skipped, s.recorded, s.session_usd) == (6, 0, 0.0)
    assert s.total_usd == pytest.approx(first.total_usd)
    assert len(load_outcomes(out)) == 6


def test_a_resumed_file_whose_questions_changed_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    record(_pool(), ITEMS[:1], out, backend=FunctionBackend(_answer))
    changed = [LabelledItem(id="q1", question="What is the capital of Spain ?", gold=("Madrid",),
                            task="geo")]
    with pytest.raises(UserError, match=r"question 'q1' was recorded as .*France.*Spain"):
        record(_pool(), changed, out, backend=FunctionBackend(_answer), resume=True)


def test_budget_stops_before_a_call_whose_worst_case_does_not_fit(tmp_path: Path) -> None:
    pool = _pool()
    backend = FunctionBackend(_answer)
    w = {(it.id, m): _worst(pool, backend, it, m) for it in ITEMS for m in ("m0", "m1")}
    budget = w[("q1", "m0")] + w[("q1", "m1")] + 0.5 * w[("q2", "m0")]
    out = tmp_path / "o.jsonl"
    s = record(pool, ITEMS, out, backend=backend, budget_usd=budget)
    assert s.stopped == "budget"
    assert "budget reached" in s.stop_detail and "--resume" in s.stop_detail
    assert s.total_usd <= budget
    # It stopped only when the next pair's worst case no longer fitted.
    order = [(it.id, m) for it in ITEMS for m in ("m0", "m1")]
    nxt = order[s.recorded]
    assert s.total_usd + w[nxt] > budget
    assert len(backend.calls) == s.recorded >= 2
    assert len(load_outcomes(out)) == s.recorded
    # Resumed with the same total limit: what was spent counts, so nothing more fits.
    again = FunctionBackend(_answer)
    s2 = record(pool, ITEMS, out, backend=again, budget_usd=budget, resume=True)
    assert again.calls == [] and s2.stopped == "budget"
    # A larger total finishes the rest, each pair asked once over all attempts.
    more = FunctionBackend(_answer)
    s3 = record(pool, ITEMS, out, backend=more, budget_usd=sum(w.values()), resume=True)
    assert s3.stopped is None and s3.total_usd <= sum(w.values())
    assert sorted(_pairs_called(backend) + _pairs_called(more)) == sorted(order)


def test_concurrent_answers_never_reserve_past_the_budget(tmp_path: Path) -> None:
    pool = make_pool([(1.0, 2.0)], names=["m0"], max_output_tokens=16)
    flight = {"now": 0, "max": 0}

    async def slow(req: CompletionRequest) -> str:
        flight["now"] += 1
        flight["max"] = max(flight["max"], flight["now"])
        await asyncio.sleep(0.01)  # let the other answers start while this one is out
        flight["now"] -= 1
        return "x"

    backend = FunctionBackend(slow)
    items = [LabelledItem(id=f"q{i}", question=f"question number {i:03d} ?", gold=("y",),
                          task="t") for i in range(12)]
    w = _worst(pool, backend, items[0], "m0")
    s = record(pool, items, tmp_path / "o.jsonl", backend=backend, budget_usd=2.5 * w,
               concurrency=8)
    assert flight["max"] == 2  # two worst cases fit at once, never a third
    assert s.total_usd <= 2.5 * w
    assert s.stopped == "budget"


def test_failed_answers_are_kept_apart_counted_and_asked_again(tmp_path: Path) -> None:
    def flaky(req: CompletionRequest) -> Any:
        return RuntimeError("provider down") if req.model.name == "m1" else _answer(req)

    out = tmp_path / "o.jsonl"
    s = record(_pool(), ITEMS, out, backend=FunctionBackend(flaky))
    assert (s.recorded, s.failed) == (3, 3)
    assert "provider down" in s.failures[0]["error"]
    assert load_outcomes(out).models == ["m0"]
    fails = [json.loads(x) for x in (tmp_path / "o.jsonl.failures.jsonl").read_text().splitlines()]
    assert sorted((f["query_id"], f["model"]) for f in fails) == [("q1", "m1"), ("q2", "m1"),
                                                                   ("q3", "m1")]
    again = FunctionBackend(_answer)
    s2 = record(_pool(), ITEMS, out, backend=again, resume=True)
    assert sorted(_pairs_called(again)) == [("q1", "m1"), ("q2", "m1"), ("q3", "m1")]
    assert s2.recorded == 3 and len(load_outcomes(out)) == 6


def test_a_broken_grader_fails_before_any_call(tmp_path: Path) -> None:
    backend = FunctionBackend(_answer)
    with pytest.raises(UserError, match="unknown grader"):
        record(_pool(), ITEMS, tmp_path / "o.jsonl", backend=backend, grader="nope")
    (tmp_path / "g.py").write_text("def f(answer, gold):\n    return 'yes'\n")
    with pytest.raises(UserError, match="returned 'yes'"):
        record(_pool(), ITEMS, tmp_path / "o.jsonl", backend=backend,
               grader=f"{tmp_path / 'g.py'}:f")
    assert backend.calls == []


def test_interrupted_recording_resumes_without_asking_a_recorded_pair_again(tmp_path: Path
                                                                           ) -> None:
    out = tmp_path / "o.jsonl"
    hang = asyncio.Event()

    async def stalls_on_the_fourth(req: CompletionRequest) -> str:
        if len(backend.calls) == 4:
            await hang.wait()  # never set: this answer is in flight when the run is cancelled
        return _answer(req)

    backend = FunctionBackend(stalls_on_the_fourth)

    async def main() -> None:
        task = asyncio.create_task(arecord(_pool(), ITEMS, out, backend=backend, concurrency=1))
        while len(backend.calls) < 4:
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    kept = load_outcomes(out)
    assert len(kept) == 3
    done = {(r["query_id"], r["model"]) for r in kept.to_records()}
    again = FunctionBackend(_answer)
    s = record(_pool(), ITEMS, out, backend=again, resume=True)
    assert not done & set(_pairs_called(again))
    assert s.skipped == 3 and s.recorded == 3
    assert len(load_outcomes(out)) == 6


def test_a_row_cut_short_by_a_kill_is_dropped_and_asked_again(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    record(_pool(), ITEMS[:2], out, backend=FunctionBackend(_answer))
    with out.open("a") as f:
        f.write('{"query_id": "q3", "query": "Who wro')  # the kill came mid-write
    again = FunctionBackend(_answer)
    s = record(_pool(), ITEMS, out, backend=again, resume=True)
    assert s.dropped_tail and s.skipped == 4
    assert sorted(_pairs_called(again)) == [("q3", "m0"), ("q3", "m1")]
    assert len(load_outcomes(out)) == 6
    # A damaged row that is not the last is the user's to fix.
    lines = out.read_text().splitlines()
    out.write_text("\n".join([lines[0], "{not json", *lines[1:]]) + "\n")
    with pytest.raises(UserError, match=r"o.jsonl line 2: not an outcome row"):
        record(_pool(), ITEMS, out, backend=FunctionBackend(_answer), resume=True)


_KILLED_SCRIPT = textwrap.dedent("""
    import asyncio, json, sys
    from orchestra.record.recorder import record
    from orchestra.record.sets import LabelledItem
    from orchestra.testing import FunctionBackend, last_user_message, make_pool

    out, log = sys.argv[1], sys.argv[2]
    items = [LabelledItem(id=f"q{i}", question=f"question number {i} ?", gold=("a",), task="t")
             for i in range(40)]

    async def answer(req):
        with open(log, "a") as f:  # what was asked, before the answer comes
            f.write(json.dumps([last_user_message(req), req.model.name]) + "\\n")
        await asyncio.sleep(0.02)
        return "a"

    pool = make_pool([(1.0, 2.0), (3.0, 4.0)], names=["m0", "m1"])
    record(pool, items, out, backend=FunctionBackend(answer), resume=True)
""")


def test_sigkill_mid_recording_then_resume_pays_no_recorded_pair_twice(tmp_path: Path) -> None:
    out, log = tmp_path / "o.jsonl", tmp_path / "asked.jsonl"
    script = tmp_path / "rec.py"
    script.write_text(_KILLED_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(script), str(out), str(log)], env=env)
    try:
        for _ in range(3000):  # until a few rows are in the file (or the process ends)
            if out.exists() and len(out.read_text().splitlines()) >= 6 or proc.poll() is not None:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the recording ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    before = {(r["query_id"], r["model"]) for r in load_outcomes(out).to_records()}
    assert 6 <= len(before) < 80
    proc2 = subprocess.run([sys.executable, str(script), str(out), str(tmp_path / "asked2.jsonl")],
                           env=env, timeout=300, check=True)
    assert proc2.returncode == 0
    asked_after = [tuple(json.loads(x)) for x in (tmp_path / "asked2.jsonl").read_text()
                   .splitlines()]
    ids_after = {(f"q{q.split()[2]}", m) for q, m in asked_after}
    assert not ids_after & before  # no recorded pair was asked again
    assert len(asked_after) == len(ids_after) == 80 - len(before)
    table = load_outcomes(out)
    assert len(table) == 80 and table.n_queries == 40


def test_the_recorded_file_is_evaluated_by_orchestra_eval(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    record(_pool(), ITEMS, out, backend=FunctionBackend(_answer))
    p = subprocess.run([sys.executable, "-m", "orchestra.cli", "eval", "--data", str(out),
                        "--policy", "single:m0", "--policy", "single:m1", "--json",
                        str(tmp_path / "r.json")], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    report = json.loads((tmp_path / "r.json").read_text())
    scores = {pol["spec"]: pol["points"][0]["mean_score"] for pol in report["policies"]}
    assert scores == {"single:m0": 1.0, "single:m1": 0.0}


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestra.cli", "record", *args],
                          capture_output=True, text=True, timeout=300, cwd=cwd, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def test_cli_refuses_bad_input_before_any_model_loads(tmp_path: Path) -> None:
    qs = tmp_path / "qs.jsonl"
    qs.write_text('{"question": "Q?", "answer": "a"}\n')
    (tmp_path / "o.jsonl").write_text("")
    p = _cli("--data", str(qs), "--out", "o.jsonl", cwd=tmp_path)
    assert p.returncode == 2
    assert "'o.jsonl' already exists; pass --resume" in " ".join(p.stderr.split())
    p = _cli("--data", str(qs), "--out", "o.txt", cwd=tmp_path)
    assert p.returncode == 2 and "expected a suffix among" in p.stderr
    p = _cli("--data", str(qs), "--gold-col", "expected", "--out", "new.jsonl", cwd=tmp_path)
    assert p.returncode == 2 and "no column 'expected' for the gold" in p.stderr
    p = _cli("--data", str(qs), "--out", "new.jsonl", "--models", "gpt", cwd=tmp_path)
    assert p.returncode == 2 and "unknown model 'gpt' in pool 'local'" in p.stderr
    assert not (tmp_path / "new.jsonl").exists()


def test_redirected_progress_prints_plain_lines_with_spend_and_eta(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from rich.console import Console

    from orchestra.record import cli

    clock = iter([0.0, 4.0, 12.0, 13.0])  # the time of each update, as the CLI's clock reads it
    monkeypatch.setattr(cli.time, "monotonic", lambda: next(clock))
    buf = io.StringIO()
    console = Console(file=buf, width=200)  # not a terminal, as when output is redirected
    with cli._progress(console, quiet=False) as update:
        for done in range(4):
            update(RecordProgress(done=done, todo=3, skipped=0, failed=1 if done == 3 else 0,
                                  spent_usd=1e-6 * done, budget_usd=1e-4, elapsed_s=2.0 * done,
                                  eta_s=None if done == 0 else 2.0 * (3 - done)))
    # The first and the last line always; between them, one every PLAIN_INTERVAL_S (10 s).
    assert buf.getvalue().splitlines() == [
        "recording: 0/3 (0%), $0 of $0.0001 spent, 0s",
        "recording: 2/3 (67%), $2e-06 of $0.0001 spent, 4s, ETA 2s",
        "recording: 3/3 (100%), 1 failed, $3e-06 of $0.0001 spent, 6s",
    ]
