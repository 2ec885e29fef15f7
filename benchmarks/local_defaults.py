"""Defaults of the embedded ``local`` pool, chosen by measurement on real QA questions.

Run from the repository root (the ``local`` extra installed; ``make`` sets OMP_WAIT_POLICY)::

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/local_defaults.py     # 30-40 min on 2 CPUs
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/local_defaults.py --limit 12 --first-pass 0
    .venv/bin/python benchmarks/local_defaults.py --list                        # the candidates

Every candidate configuration of the pool (``agents/local.yaml``: SmolLM2-135M-Instruct, chat,
and Gemma-3-270M, base, few-shot) answers the same fixed, seeded sample of real questions through
the real runtime (``Orchestra(pool, policy=...).arun``, the SQLite trace store on, as the SDK
runs by default), one question at a time as a user asks them; the candidates take turns
question by question so that the machine's load drifts over all of them alike.

Sample: ``--limit`` questions (default 300), two thirds Natural Questions (``qa/nq_test.json``),
one third GSM8K (``qa/gsm8k_test.jsonl``), drawn with ``--seed`` and interleaved so that every
prefix of the sample has the same mix. Data come from ``$ORCHESTRA_SHARED_DATA/qa`` or
``<repo>/../shared/data/qa``.

Grading:
    NQ, strict: the answer's short form (:func:`orchestra.refiners.extract_short_answer`,
        ``text``: the first line, or what follows "answer is"/"answer:", normalised: lowercase,
        no punctuation or articles) equals a normalised gold alias.
    NQ, lenient: a normalised gold alias occurs (as whole words) in the normalised answer.
    GSM8K, strict: the last number of the answer equals the gold number (after ``####``).
    GSM8K, lenient: the gold number is among the answer's numbers.

Reported per candidate: accuracy (NQ, GSM8K, overall; strict, then lenient), mean seconds per
question (wall clock around ``arun``: what a user waits for), accuracy per second (overall strict
accuracy / mean seconds), nominal cost (the pool's nominal local prices), calls per question.

Budget: every candidate over 300 questions takes ~8 s a question on a busy 2-CPU machine, over
an hour. So ``--first-pass N`` (default 90) runs every candidate on the first N questions only,
keeps the ``--finalists`` (default 3) best by accuracy per second, the most accurate one and the
one agents/local.yaml ships, and runs just those over the rest: ~35 min in all. A candidate's row
says over how many questions it was measured; a second table puts every candidate side by side on
the first N questions, which have the same mix.

Derived rows (no extra model calls): each ensemble's outputs of every question are kept, and
other merges are replayed on them (``ensemble+vote v1 [RULE]``): the vote as it shipped before
(the higher quality prior breaks ties), ties to SmolLM2, today's vote without its on-topic rule
and with it at any length. Same calls, same latency and cost; only the merge differs. The same
outputs give each model's own accuracy (``votes.model_accuracy``), which the pool's quality
priors are set from.

Results: ``benchmarks/results/local_defaults.json`` (config, sample, metrics per candidate, every
answer); the tables are printed, also as Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, astuple, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from orchestra import Orchestra
from orchestra.refiners import extract_short_answer, normalize_answer, vote
from orchestra.spec import Example, Pool

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
RESULTS = ROOT / "results" / "local_defaults.json"
NQ_FILE, GSM_FILE = "nq_test.json", "gsm8k_test.jsonl"


# ------------------------------------------------------------------------------------ data
def qa_dir() -> Path:
    """The QA data folder; exits with a clear message when it is missing."""
    env = os.environ.get("ORCHESTRA_SHARED_DATA")
    base = Path(env) if env else REPO.parent / "shared" / "data"
    qa = base / "qa"
    missing = [f for f in (NQ_FILE, GSM_FILE) if not (qa / f).is_file()]
    if missing:
        where = "$ORCHESTRA_SHARED_DATA" if env else "<repo>/../shared/data"
        sys.exit(f"local_defaults: QA data not found: {', '.join(str(qa / f) for f in missing)} "
                 f"is missing (looked in {where}/qa). Set ORCHESTRA_SHARED_DATA to the folder "
                 f"that holds qa/{NQ_FILE} and qa/{GSM_FILE}.")
    return qa


@dataclass(frozen=True)
class Question:
    qid: str
    dataset: str  # "nq" | "gsm8k"
    question: str
    gold: tuple[str, ...]  # NQ: aliases; GSM8K: the number


def gsm8k_gold(answer: str) -> str:
    """The number after ``####`` in a GSM8K solution, without thousands separators."""
    return answer.rsplit("####", 1)[1].strip().replace(",", "")


def load_sample(qa: Path, n: int, seed: int) -> list[Question]:
    """``n`` questions, 2/3 NQ and 1/3 GSM8K, drawn with ``seed``; every prefix has the same mix."""
    nq = json.loads((qa / NQ_FILE).read_text(encoding="utf-8"))
    gsm = [json.loads(line) for line in (qa / GSM_FILE).read_text(encoding="utf-8").splitlines()
           if line.strip()]
    n_nq = round(n * 2 / 3)
    n_gsm = n - n_nq
    rng = random.Random(seed)
    nq_idx = rng.sample(range(len(nq)), n_nq)
    gsm_idx = rng.sample(range(len(gsm)), n_gsm)
    a = [Question(f"nq:{i}", "nq", nq[i]["question"], tuple(nq[i]["answer"])) for i in nq_idx]
    b = [Question(f"gsm8k:{i}", "gsm8k", gsm[i]["question"], (gsm8k_gold(gsm[i]["answer"]),))
         for i in gsm_idx]
    # Interleave by position (i / len) so that any prefix keeps the 2:1 mix.
    keyed = [((i + 0.5) / len(a), 0, q) for i, q in enumerate(a)]
    keyed += [((i + 0.5) / len(b), 1, q) for i, q in enumerate(b)]
    return [q for _, _, q in sorted(keyed, key=lambda t: (t[0], t[1]))]


# ------------------------------------------------------------------------------------ grading
_NUM = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def _numbers(text: str) -> list[float]:
    out = []
    for s in _NUM.findall(text):
        try:
            out.append(float(s.replace(",", "")))
        except ValueError:
            pass
    return out


def grade(q: Question, answer: str | None) -> tuple[bool, bool]:
    """(strict, lenient) correctness of ``answer`` (see the module docstring)."""
    text = answer or ""
    if q.dataset == "gsm8k":
        gold = float(q.gold[0])
        nums = _numbers(text)
        return (bool(nums) and nums[-1] == gold, gold in nums)
    golds = [g for g in (normalize_answer(a) for a in q.gold) if g]
    short = extract_short_answer(text, "text")
    whole = f" {normalize_answer(text)} "
    return (short in golds, any(f" {g} " in whole for g in golds))


# ------------------------------------------------------------------------------------ candidates
@dataclass(frozen=True)
class Setup:
    """How the pool is prompted: the answer agent's system prompt and few-shot examples (shared
    by both models: SmolLM2 gets the examples as earlier chat turns, Gemma as ``Question:/Answer:``
    pairs), and per-model overrides (``max_output_tokens``, litellm ``params`` such as ``stop``)."""

    system: str
    examples: tuple[tuple[str, str], ...]
    models: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()


SETUPS: dict[str, Setup] = {
    # What agents/local.yaml shipped before this benchmark.
    "v0": Setup(
        system="You are a concise assistant. Answer the question with the answer only, in a few "
               "words.",
        examples=(("What is the capital of Germany?", "Berlin"),
                  ("How many legs does a spider have?", "Eight")),
    ),
    # Open-domain questions as users (and NQ) ask them, who / what / when / how many, each
    # answered by the bare name, place, date or number. SmolLM2 ignores "answer only" and goes on
    # in sentences, often repeating a line until max_tokens: it stops at the end of its first
    # line, and 32 tokens is plenty for a short answer.
    "v1": Setup(
        system="Answer the question with the answer only: a name, a place, a date or a number.",
        examples=(("Who discovered penicillin?", "Alexander Fleming"),
                  ("What is the capital of Germany?", "Berlin"),
                  ("In what year did the Berlin Wall fall?", "1989"),
                  ("How many legs does a spider have?", "8")),
        models=(("smollm2", (("max_output_tokens", 32), ("params", {"stop": ["\n"]}))),),
    ),
}


@dataclass(frozen=True)
class Candidate:
    """A configuration of the local pool: a setup, quality priors and a policy."""

    name: str
    policy: str
    setup: str
    priors: tuple[tuple[str, float], ...] = ()  # model name -> quality prior; () keeps the file's
    note: str = ""

    def config(self) -> dict[str, Any]:
        return {"policy": self.policy, "setup": self.setup, **asdict(SETUPS[self.setup]),
                "priors": dict(self.priors) or "as in agents/local.yaml", "note": self.note}


OLD_PRIORS = (("smollm2", 0.25), ("gemma3", 0.35))

CANDIDATES: list[Candidate] = [
    Candidate("single:smollm2 v0", "single:smollm2", "v0", OLD_PRIORS),
    Candidate("single:gemma3 v0", "single:gemma3", "v0", OLD_PRIORS),
    Candidate("ensemble+vote v0", "ensemble", "v0", OLD_PRIORS,
              note="the shipped default before this benchmark (merged by today's vote)"),
    Candidate("cascade v0", "cascade", "v0", OLD_PRIORS,
              note="smollm2 first, smollm2 verifies, gemma3 when unsure"),
    Candidate("single:smollm2 v1", "single:smollm2", "v1", OLD_PRIORS),
    Candidate("single:gemma3 v1", "single:gemma3", "v1", OLD_PRIORS),
    Candidate("ensemble+vote v1", "ensemble", "v1", OLD_PRIORS),
    Candidate("cascade v1", "cascade", "v1", OLD_PRIORS),
]


def candidate_pool(base: Pool, c: Candidate) -> Pool:
    """``base`` with the candidate's answer-agent prompts, model overrides and quality priors."""
    setup = SETUPS[c.setup]
    answer = base.answer_agent
    agent = answer.model_copy(update={
        "system_prompt": setup.system,
        "examples": tuple(Example(input=i, output=o) for i, o in setup.examples)})
    agents = tuple(agent if a.name == answer.name else a for a in base.agents)
    overrides = {name: dict(kv) for name, kv in setup.models}
    priors = dict(c.priors)
    models = []
    for m in base.models:
        update = dict(overrides.get(m.name, {}))
        if m.name in priors:
            update["quality"] = priors[m.name]
        models.append(m.model_copy(update=update))
    return base.model_copy(update={"agents": agents, "models": tuple(models)})


# ------------------------------------------------------------------------------------ running
@dataclass
class Record:
    candidate: str
    qid: str
    dataset: str
    answer: str | None
    strict: bool
    lenient: bool
    seconds: float
    cost_usd: float
    calls: int
    stop_reason: str
    # The last refined round's inputs: [(model, output)], for re-voting offline.
    voted: list[tuple[str, str]] = field(default_factory=list)


async def ask(orch: Orchestra, name: str, q: Question) -> Record:
    t0 = time.perf_counter()
    r = await orch.arun(q.question, meta={"query_id": q.qid, "task": q.dataset})
    secs = time.perf_counter() - t0
    strict, lenient = grade(q, r.answer)
    refined = [e for e in r.events if e.kind == "refined"]
    voted = ([(i["model"], i["output"]) for i in refined[-1].inputs]  # type: ignore[attr-defined]
             if refined else [])
    return Record(name, q.qid, q.dataset, r.answer, strict, lenient, secs, r.cost_usd, r.calls,
                  r.stop_reason, voted)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson interval of a proportion."""
    if n == 0:
        return (0.0, 0.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def metrics(recs: Sequence[Record]) -> dict[str, Any]:
    def acc(ds: str | None, strict: bool = True) -> float | None:
        rs = [r for r in recs if ds is None or r.dataset == ds]
        if not rs:
            return None
        return sum(r.strict if strict else r.lenient for r in rs) / len(rs)

    n = len(recs)
    secs = [r.seconds for r in recs]
    mean_s = statistics.fmean(secs) if secs else float("nan")
    overall = acc(None) or 0.0
    k = sum(r.strict for r in recs)
    return {
        "n": n, "n_nq": sum(r.dataset == "nq" for r in recs),
        "n_gsm8k": sum(r.dataset == "gsm8k" for r in recs),
        "nq_em": acc("nq"), "nq_contains": acc("nq", False),
        "gsm8k_acc": acc("gsm8k"), "gsm8k_contains": acc("gsm8k", False),
        "overall": overall, "overall_lenient": acc(None, False), "overall_ci95": wilson(k, n),
        "mean_s": mean_s, "median_s": statistics.median(secs) if secs else None,
        "p90_s": sorted(secs)[int(0.9 * (n - 1))] if secs else None,
        "acc_per_s": overall / mean_s if mean_s else None,
        "lenient_per_s": (acc(None, False) or 0.0) / mean_s if mean_s else None,
        "cost_usd_total": sum(r.cost_usd for r in recs),
        "cost_usd_per_q": statistics.fmean(r.cost_usd for r in recs) if recs else None,
        "calls_per_q": statistics.fmean(r.calls for r in recs) if recs else None,
        "stop_reasons": {s: sum(r.stop_reason == s for r in recs)
                         for s in sorted({r.stop_reason for r in recs})},
    }


# ------------------------------------------------------------------------------------ re-voting
# A merge rule: (the round's [(model, output)], the models' priors, the question) -> the index of
# the output it answers with.
TieRule = Callable[[list[tuple[str, str]], dict[str, float], str], int]


def vote_before(outputs: Sequence[str], priority: Sequence[float]) -> int:
    """The vote as it shipped before this benchmark: the most frequent exact short answer, ties
    to the higher priority, then the earliest output."""
    keys = [extract_short_answer(o) for o in outputs]
    counts = Counter(k for k in keys if k)
    if not counts:
        return 0
    top = max(counts.values())
    return max((i for i, k in enumerate(keys) if counts.get(k) == top),
               key=lambda i: (priority[i], -i))


def revote_rules() -> dict[str, TieRule]:
    """Merges replayed on an ensemble's recorded outputs. ``refiners.vote`` with the question is
    what the runtime ran; its row is the candidate's own."""

    def before(order: Sequence[str] | None) -> TieRule:
        def rule(outs: list[tuple[str, str]], priors: dict[str, float], query: str) -> int:
            prio = [(len(order) - order.index(m) if m in order else 0) if order
                    else priors.get(m, 0.0) for m, _ in outs]
            return vote_before([o for _, o in outs], prio)
        return rule

    def now(use_query: bool, max_words: int | None) -> TieRule:
        def rule(outs: list[tuple[str, str]], priors: dict[str, float], query: str) -> int:
            return vote([o for _, o in outs], priority=[priors.get(m, 0.0) for m, _ in outs],
                        query=query if use_query else None, topic_max_words=max_words)[0]
        return rule

    return {"old vote: prior tie-break": before(None),
            "old vote, ties to smollm2": before(["smollm2", "gemma3"]),
            "vote without the on-topic rule": now(False, None),
            "vote, on-topic rule at any length": now(True, None)}


def revoted(recs: Sequence[Record], questions: dict[str, Question], rule: TieRule,
            priors: dict[str, float], name: str) -> list[Record]:
    out = []
    for r in recs:
        q = questions[r.qid]
        answer = r.voted[rule(r.voted, priors, q.question)][1] if len(r.voted) > 1 else r.answer
        strict, lenient = grade(q, answer)
        out.append(replace(r, candidate=name, answer=answer, strict=strict, lenient=lenient))
    return out


def vote_stats(recs: Sequence[Record], questions: dict[str, Question]) -> dict[str, Any]:
    """For a candidate whose rounds merge several outputs: how often the short answers differed
    (a tie for two voters), and each model's own accuracy on those outputs (one answer from each
    model to every question: what the quality priors are set from)."""
    merged = [r for r in recs if len(r.voted) > 1]
    per_model: dict[str, list[tuple[bool, bool]]] = {}
    for r in merged:
        for model, out in r.voted:
            per_model.setdefault(model, []).append(grade(questions[r.qid], out))
    return {"rounds_merged": len(merged),
            "short_answers_all_different": sum(
                len({extract_short_answer(o) for _, o in r.voted}) == len(r.voted)
                for r in merged),
            "model_accuracy": {m: {"n": len(g), "strict": sum(a for a, _ in g) / len(g),
                                   "lenient": sum(b for _, b in g) / len(g)}
                               for m, g in per_model.items()}}


# ------------------------------------------------------------------------------------ report
def fmt(x: float | None, pct: bool = True) -> str:
    if x is None:
        return "–"
    return f"{100 * x:.1f}%" if pct else f"{x:.2f}"


COLUMNS = ["candidate", "n", "NQ EM", "NQ contains", "GSM8K", "overall", "overall lenient",
           "s / question", "overall acc / s", "µ$ / question", "calls / q"]


def row(name: str, m: dict[str, Any]) -> list[str]:
    return [name, str(m["n"]), fmt(m["nq_em"]), fmt(m["nq_contains"]), fmt(m["gsm8k_acc"]),
            f"{fmt(m['overall'])} [{100 * m['overall_ci95'][0]:.1f}–{100 * m['overall_ci95'][1]:.1f}]",
            fmt(m["overall_lenient"]), f"{m['mean_s']:.2f}",
            f"{100 * m['acc_per_s']:.2f} %/s" if m["acc_per_s"] is not None else "–",
            f"{1e6 * m['cost_usd_per_q']:.3f}", f"{m['calls_per_q']:.2f}"]


def print_table(console: Console, title: str, rows: list[tuple[str, dict[str, Any]]]) -> None:
    t = Table(title=title)
    for col in COLUMNS:
        t.add_column(col, justify="left" if col == "candidate" else "right",
                     no_wrap=col == "candidate")
    for n, m in rows:
        t.add_row(*row(n, m))
    console.print(t)


def markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(COLUMNS))) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    return {"python": sys.version.split()[0], "platform": platform.platform(),
            "cpus": os.cpu_count(), "loadavg": os.getloadavg(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "orchestra_local_threads": os.environ.get("ORCHESTRA_LOCAL_THREADS")}


# ------------------------------------------------------------------------------------ main
def rank_key(m: dict[str, Any]) -> tuple[float, float]:
    """Best accuracy per second first; lenient accuracy per second breaks ties (tiny models
    often tie on strict accuracy)."""
    return (m["acc_per_s"] or 0.0, m["lenient_per_s"] or 0.0)


async def run_phase(orchs: dict[str, Orchestra], names: list[str], questions: list[Question],
                    lo: int, hi: int, recs: dict[str, list[Record]], prog: Progress) -> None:
    """Questions ``lo..hi-1``, one at a time; every named candidate answers each in turn."""
    task = prog.add_task("", total=(hi - lo) * len(names))
    for qi in range(lo, hi):
        q = questions[qi]
        # Rotate who goes first, so that no candidate always runs right after the same other one.
        order = names[qi % len(names):] + names[:qi % len(names)]
        for name in order:
            so_far = f"acc {fmt(metrics(recs[name])['overall'])}" if recs[name] else ""
            prog.update(task, description=f"q {qi + 1}/{len(questions)} {q.dataset:<5} "
                                          f"{name:<20} {so_far}")
            recs[name].append(await ask(orchs[name], name, q))
            prog.advance(task)
        if not prog.console.is_terminal and (qi + 1 - lo) % 10 == 0:  # a log file: a line now and then
            prog.console.print(f"{qi + 1}/{len(questions)} questions; "
                               + ", ".join(f"{n} {fmt(metrics(recs[n])['overall'])} "
                                           f"{metrics(recs[n])['mean_s']:.1f}s" for n in names))


def choose_finalists(recs: dict[str, list[Record]], k: int, shipped: str | None) -> list[str]:
    """The ``k`` best by accuracy per second, the most accurate, and what agents/local.yaml ships
    (a handful of right answers in the first pass rank candidates by luck as much as by merit:
    the incumbent is always measured on the whole sample, so a challenger is compared with it
    on the same questions)."""
    m = {n: metrics(rs) for n, rs in recs.items()}
    keep = sorted(m, key=lambda n: rank_key(m[n]), reverse=True)[:k]
    most = max(m, key=lambda n: (m[n]["overall"], m[n]["overall_lenient"]))
    return [n for n in recs if n in keep or n in (most, shipped)]


def shipped_setup(base: Pool) -> str | None:
    """The setup (and policy) that agents/local.yaml ships, if it is one of the candidates'."""
    for c in CANDIDATES:
        pool = candidate_pool(base, c)
        if c.policy == base.policy and pool.agents == base.agents and all(
                m.model_copy(update={"quality": b.quality}) == b
                for m, b in zip(pool.models, base.models, strict=True)):
            return c.name
    return None


async def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="local_defaults-") as tmp:  # the trace store
        return await _run(args, console, Path(tmp))


async def _run(args: argparse.Namespace, console: Console, tmp: Path) -> dict[str, Any]:
    qa = qa_dir()
    questions = load_sample(qa, args.limit, args.seed)
    by_id = {q.qid: q for q in questions}
    cands = [c for c in CANDIDATES if not args.candidates or c.name in args.candidates]
    if not cands:
        sys.exit(f"local_defaults: no candidate matches {args.candidates}; known: "
                 f"{[c.name for c in CANDIDATES]}")
    shots = {normalize_answer(i) for p in SETUPS.values() for i, _ in p.examples}
    leaked = [q.qid for q in questions if normalize_answer(q.question) in shots]
    if leaked:
        sys.exit(f"local_defaults: few-shot examples appear in the sample: {leaked}")

    base = Pool.load(REPO / "agents" / "local.yaml")
    shipped = shipped_setup(base)
    orchs = {c.name: Orchestra(candidate_pool(base, c), policy=c.policy,
                               store=tmp / "traces.sqlite") for c in cands}
    with console.status("warm-up (not timed): loading the models, one question per candidate"):
        for o in orchs.values():
            await o.arun("What is the capital of France?")

    first = min(args.first_pass or len(questions), len(questions))
    recs: dict[str, list[Record]] = {c.name: [] for c in cands}
    finalists = list(recs)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as prog:
        await run_phase(orchs, finalists, questions, 0, first, recs, prog)
        if first < len(questions):
            finalists = choose_finalists(recs, args.finalists, shipped)
            prog.console.print(f"first pass ({first} questions, every candidate) done; "
                               f"finalists for the other {len(questions) - first}: {finalists}")
            await run_phase(orchs, finalists, questions, first, len(questions), recs, prog)
    wall = time.perf_counter() - t0

    # Derived rows: other merges of each ensemble's recorded outputs (same calls, same cost).
    derived: dict[str, dict[str, Any]] = {}
    derived_recs: dict[str, list[Record]] = {}
    for c in cands:
        if c.policy != "ensemble":
            continue
        priors = {m.name: m.quality or 0.0 for m in candidate_pool(base, c).models}
        for rule_name, rule in revote_rules().items():
            name = f"{c.name} [{rule_name}]"
            rv = derived_recs[name] = revoted(recs[c.name], by_id, rule, priors, name)
            derived[name] = {
                "from": c.name, "rule": rule_name, "metrics": metrics(rv),
                # Only where the merge answered otherwise than the candidate itself did.
                "changed": [[r.qid, r.answer, r.strict, r.lenient]
                            for r, own in zip(rv, recs[c.name], strict=True)
                            if r.answer != own.answer]}

    rows = [(n, metrics(rs)) for n, rs in {**recs, **derived_recs}.items()]
    rows.sort(key=lambda nm: rank_key(nm[1]), reverse=True)
    # Everyone on the same questions: the first pass (the whole sample when there is one pass).
    first_rows = [(n, metrics(rs[:first])) for n, rs in {**recs, **derived_recs}.items()]
    first_rows.sort(key=lambda nm: rank_key(nm[1]), reverse=True)
    full = [nm for nm in rows if nm[1]["n"] == len(questions)] or rows
    best = max(full, key=lambda nm: rank_key(nm[1]))[0]
    most_acc = max(full, key=lambda nm: (nm[1]["overall"], nm[1]["overall_lenient"]))[0]
    n_nq = sum(q.dataset == "nq" for q in questions)
    out: dict[str, Any] = {
        "benchmark": "local_defaults",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {**machine(), "loadavg_before": load_before},
        "wall_s": wall,
        "sample": {"n": len(questions), "seed": args.seed, "qa_dir": str(qa),
                   "nq": {"file": NQ_FILE, "n": n_nq},
                   "gsm8k": {"file": GSM_FILE, "n": len(questions) - n_nq},
                   "order": "interleaved 2 NQ : 1 GSM8K, so that every prefix keeps the mix",
                   "first_pass": first, "finalists": finalists,
                   "qids": [q.qid for q in questions]},
        "grading": {"nq_em": "extract_short_answer(answer, 'text') == a normalised gold alias",
                    "nq_contains": "a normalised gold alias occurs as whole words in the "
                                   "normalised answer",
                    "gsm8k_acc": "last number of the answer == the number after ####",
                    "gsm8k_contains": "the gold number is among the answer's numbers",
                    "acc_per_s": "overall strict accuracy / mean seconds per question"},
        "setups": {k: asdict(v) for k, v in SETUPS.items()},
        "shipped": {"policy": base.policy, "matches": shipped,
                    "priors": {m.name: m.quality for m in base.models}},
        "candidates": {c.name: {"config": c.config(), "metrics": metrics(recs[c.name]),
                                "finalist": c.name in finalists,
                                "votes": vote_stats(recs[c.name], by_id),
                                "records": [list(astuple(r))[1:] for r in recs[c.name]]}
                       for c in cands},
        "record_columns": [f.name for f in fields(Record)][1:],
        "derived": derived,
        "best_acc_per_s": best,
        "most_accurate": most_acc,
        "first_pass_metrics": dict(first_rows),
        "markdown": markdown([row(n, m) for n, m in rows]),
        "markdown_first_pass": markdown([row(n, m) for n, m in first_rows]),
    }

    if first < len(questions):
        print_table(console, f"first pass: every candidate on the same first {first} questions",
                    first_rows)
    print_table(console, f"local pool candidates: {len(questions)} questions ({n_nq} NQ + "
                         f"{len(questions) - n_nq} GSM8K, seed {args.seed}; n < {len(questions)}: "
                         f"dropped after the first pass); load avg {load_before[0]:.1f} → "
                         f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", rows)
    console.print(f"best accuracy per second: [bold]{best}[/]; most accurate: [bold]{most_acc}[/]; "
                  f"agents/local.yaml ships: {shipped or 'none of these'}; "
                  f"{wall / 60:.1f} min")
    if first < len(questions):
        print(f"\nFirst pass, {first} questions:\n{out['markdown_first_pass']}\n")
    print(out["markdown"])
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, default=300, help="questions (2/3 NQ, 1/3 GSM8K)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--first-pass", type=int, default=90,
                    help="run every candidate on the first N questions only, then the finalists "
                         "on the rest (0: every candidate on every question)")
    ap.add_argument("--finalists", type=int, default=3)
    ap.add_argument("--candidates", nargs="*", help="only these candidates (names as listed)")
    ap.add_argument("--list", action="store_true", help="list the candidates and exit")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    console = Console() if sys.stdout.isatty() else Console(width=220)
    if args.list:
        for c in CANDIDATES:
            console.print(f"{c.name:<24} {json.dumps(c.config())}")
        return
    if args.limit < 3:
        sys.exit("local_defaults: --limit must be >= 3 (the sample is 2/3 NQ, 1/3 GSM8K)")
    out = asyncio.run(run(args, console))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1), encoding="utf-8")
    console.print(f"results: {args.out}")


if __name__ == "__main__":
    main()
