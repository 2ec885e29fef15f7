"""The GNN router trains as a real Ray Train job on CPU, and a killed job resumes.

Each test runs ``training/gnn_job.py`` (the same command as ``orchestra train gnn``) in a
subprocess that starts its own local Ray, on a small synthetic outcome table with the hashing
embedder (no model download).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("torch_geometric")
pytest.importorskip("ray.train")

from orchestra.outcomes import OutcomeTable

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[2]
JOB = REPO / "training" / "gnn_job.py"
MODELS = [
    ("small-7b", "A small 7B chat model.", 0.2, 0.2, (0.55, 0.15, 0.6)),
    ("coder-13b", "A 13B code model.", 0.3, 0.3, (0.4, 0.8, 0.5)),
    ("big-api", "A large frontier model.", 10.0, 30.0, (0.9, 0.85, 0.9)),
]
TASKS = ("trivia", "code", "logic")


def write_table(path: Path, n: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        task = TASKS[i % 3]
        text = f"{task} question {i} " + "word " * int(rng.integers(2, 40))
        for name, _, pin, pout, skill in MODELS:
            rows.append({"query_id": f"q{i}", "query": text, "task": task, "model": name,
                         "score": float(rng.random() < skill[TASKS.index(task)]),
                         "cost_usd": (len(text) / 4 * pin + 40 * pout) / 1e6})
    infos = {n: {"name": n, "description": d, "input_price": a, "output_price": b}
             for n, d, a, b, _ in MODELS}
    return OutcomeTable(rows, models_info=infos).write(path)


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"ORCHESTRA_CACHE_DIR": str(tmp / "cache"), "OMP_NUM_THREADS": "1",
                "RAY_TRAIN_V2_ENABLED": "1", "PYTHONUNBUFFERED": "1",
                "RAY_DEDUP_LOGS": "0", "TOKENIZERS_PARALLELISM": "false"})
    return env


def _cmd(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(JOB), "--data", str(data), "--out", str(out),
            "--embedder", "hashing", "--hidden", "16", "--json", *extra]


def _run(cmd: list[str], tmp: Path, timeout: float = 300) -> dict:
    p = subprocess.Popen(cmd, env=_env(tmp), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, cwd=REPO, start_new_session=True)
    try:
        stdout, stderr = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_tree(_tree(p.pid))  # never leave a local Ray behind
        stdout, stderr = p.communicate()
        pytest.fail(f"timed out after {timeout}s\nstderr:\n{stderr[-3000:]}")
    assert p.returncode == 0, f"exit {p.returncode}\nstdout:\n{stdout[-3000:]}\nstderr:\n{stderr[-3000:]}"
    return json.loads(stdout[stdout.index("{"):])


def _history(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]


def test_trains_end_to_end_on_one_worker(tmp_path: Path) -> None:
    data = write_table(tmp_path / "t.jsonl", 150)
    out = tmp_path / "art"
    summary = _run(_cmd(data, out, "--epochs", "2", "--num-workers", "1"), tmp_path)
    assert summary["epochs_reported"] == [0, 1] and summary["finished"]
    for name in ("config.json", "model.pt", "graph.npz", "run.json", "history.jsonl"):
        assert (out / name).is_file(), name
    meta = json.loads((out / "config.json").read_text())
    assert meta["kind"] == "gnn" and meta["train"]["epochs"] == 2 and meta["lambdas"]
    run = json.loads((out / "run.json").read_text())
    ckpts = sorted(d for d in (Path(run["storage"]) / run["run_name"]).glob("checkpoint_*")
                   if d.is_dir())
    assert ckpts and all((c / "config.json").is_file() for c in ckpts)  # config in every checkpoint
    # The artifact serves.
    from orchestra.embed import HashingEmbedder
    from orchestra.policies.gnn.policy import GNNScorer

    s, c = GNNScorer(out, embedder=HashingEmbedder()).predict(["code question: sort"], ["code"])
    assert s.shape == (1, 3) and np.all(c > 0)


def _latest_checkpoint(out: Path) -> str | None:
    """The checkpoint Ray Train has recorded as the run's latest (what a restart restores)."""
    try:
        run = json.loads((out / "run.json").read_text())
        snap = Path(run["storage"]) / run["run_name"] / "checkpoint_manager_snapshot.json"
        latest = json.loads(snap.read_text()).get("latest_checkpoint_result")
    except (OSError, ValueError, KeyError):
        return None
    return latest.get("checkpoint_dir_name") if latest else None


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (Ray's raylet, agents and actors), read from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _kill_tree(pids: list[int]) -> None:
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            continue


def test_killed_job_resumes_from_its_last_checkpoint_with_two_workers(tmp_path: Path) -> None:
    """Kill a running job after its first checkpoint; --resume continues it (on two DDP
    workers) from that checkpoint to the last epoch instead of starting over."""
    data = write_table(tmp_path / "t.jsonl", 600)
    out = tmp_path / "art"
    epochs = 12
    cmd = _cmd(data, out, "--epochs", str(epochs), "--patience", "1000")
    proc = subprocess.Popen(cmd, env=_env(tmp_path), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        saved = None
        while time.monotonic() < deadline and proc.poll() is None:
            saved = _latest_checkpoint(out)
            if saved is not None:
                break
            time.sleep(0.05)
        assert saved is not None, "no checkpoint was recorded"
        assert proc.poll() is None, "the job finished before it could be killed; use more epochs"
    finally:
        # SIGKILL the driver and everything it started (the local Ray and its actors, some of
        # which run in process groups of their own), as an OOM killer or a lost node would.
        _kill_tree(_tree(proc.pid))
        proc.wait(timeout=30)
    before = _history(out)
    assert before and before[-1]["epoch"] < epochs - 1
    summary = _run(_cmd(data, out, "--resume", "--num-workers", "2"), tmp_path)
    resumed = [e["epoch"] for e in _history(out)[len(before):]]
    # It continued after a checkpointed epoch (not from 0) and reached the last epoch.
    assert 1 <= resumed[0] <= before[-1]["epoch"] + 1
    assert resumed == list(range(resumed[0], epochs))
    assert summary["finished"] and summary["last_epoch"] == epochs - 1
    assert (out / "model.pt").is_file()
