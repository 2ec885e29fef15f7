"""Training the ``rl`` routing policy as a Ray Train job: the driver side.

:func:`run_rl_training` (``orchestra train rl``, ``training/rl_job.py``):

1. loads the table's ``train`` split and the base model directory
   (:func:`~orchestra.training.rl_base.base_model_dir`: the embedded SmolLM2 is converted
   once);
2. records the run in ``out/run.json`` (name, Ray storage, config) so ``--resume`` finds it;
3. runs :func:`~orchestra.training.rl_worker.train_loop_per_worker` on ``num_workers`` Ray Train
   workers (``TorchTrainer``; gloo on CPU, NCCL on GPUs), showing each step (reward,
   format-valid rate, cost, decision latency) from rank 0's queue and appending it to
   ``out/history.jsonl``;
4. writes the artifact from the last checkpoint: ``save_pretrained`` weights, the tokenizer and
   ``rl.json`` (read by :func:`~orchestra.policies.rl.make_rl_policy`), and the reward curve
   (``reward_curve.json`` and ``.png``).

A private local Ray is started by default (as for the GNN trainer), a cluster joined given an
address (``$RAY_ADDRESS`` inside ``ray job submit``). On a multi-node cluster ``--base`` and
``--storage`` must be paths every node sees.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orchestra.errors import UserError
from orchestra.training.ray_jobs import final_state, fit_in_thread, queue_events
from orchestra.training.rl_config import RLTrainConfig

__all__ = ["DEFAULT_LAM", "resolve_hints", "run_rl_training", "write_curve"]

#: The λ an artifact serves by default (``--param lam=`` chooses another point of the curve).
DEFAULT_LAM = 0.1


def _resumed(out: Path) -> tuple[RLTrainConfig, str, str]:
    run_file = out / "run.json"
    if not run_file.is_file():
        raise UserError(f"nothing to resume in {str(out)!r} (no run.json); start a run with the "
                        "same --out and without --resume")
    run = json.loads(run_file.read_text(encoding="utf-8"))
    return RLTrainConfig.model_validate(run["config"]), run["run_name"], run["storage"]


def _write_run(out: Path, name: str, storage: str, config: RLTrainConfig, status: str,
               **extra: Any) -> None:
    (out / "run.json").write_text(json.dumps({
        "run_name": name, "storage": storage, "config": config.model_dump(), "status": status,
        "updated": time.time(), **extra}, indent=2), encoding="utf-8")


def run_rl_training(config: RLTrainConfig, out: str | Path, *, num_workers: int = 1,
                    gpus_per_worker: float = 0.0, address: str | None = None,
                    resume: bool = False, storage: str | None = None, threads_per_worker: int = 1,
                    max_steps: int | None = None, console: Any = None) -> dict[str, Any]:
    """Train on Ray and write the ``rl`` artifact to ``out`` (see the module docstring).

    Args:
        config: the run (ignored on ``resume``: the saved run's config is used).
        out: artifact directory; also holds ``run.json``, ``history.jsonl`` and by default
            Ray's storage (``out/ray``).
        num_workers / gpus_per_worker / address / storage / threads_per_worker: as for
            ``orchestra train gnn``.
        resume: continue the run recorded in ``out/run.json`` from its last checkpoint.
        max_steps: stop this invocation after this many steps in all (resumable).

    Raises:
        UserError: bad options, nothing to resume, or a failed run.
    """
    import ray
    from ray.exceptions import RayError
    from ray.util.queue import Queue
    from rich.console import Console

    from orchestra.outcomes import load_outcomes
    from orchestra.training.gnn import _start_ray
    from orchestra.training.rl_base import base_model_dir
    from orchestra.training.rl_worker import load_state_dir

    con = console or Console()
    if num_workers < 1 or gpus_per_worker < 0:
        raise UserError(f"expected --num-workers >= 1 and --gpus-per-worker >= 0 (got "
                        f"{num_workers!r}, {gpus_per_worker!r})")
    out_dir = Path(out).expanduser().resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    if resume:
        config, run_name, storage_path = _resumed(out_dir)
    else:
        run_name = "rl-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")
        storage_path = storage or str(out_dir / "ray")
        (out_dir / "history.jsonl").unlink(missing_ok=True)
    if "://" not in storage_path:
        storage_path = str(Path(storage_path).expanduser().resolve())
    table = load_outcomes(config.data, split="train")
    if config.hints is not None and not resume:
        config = config.model_copy(update={"hints": resolve_hints(config.hints, table,
                                                                  config.models)})
    base = base_model_dir(config.base)
    con.print(f"[bold]rl router[/bold] data={config.data!r} ({table.n_queries} train queries) "
              f"base={base!r} out={str(out_dir)!r} run={run_name}{' (resume)' if resume else ''}")
    _write_run(out_dir, run_name, storage_path, config, "running")
    started = _start_ray(address, num_workers)
    try:
        queue = Queue(maxsize=10_000)
        trainer = _trainer(config, table, base, queue, run_name, storage_path,
                           num_workers=num_workers, gpus_per_worker=gpus_per_worker,
                           threads=threads_per_worker, max_steps=max_steps)
        thread, box = fit_in_thread(trainer, "rl-trainer")
        seen = _follow(thread, queue, out_dir / "history.jsonl", run_name,
                       config.sft_steps + config.steps, con)
        with contextlib.suppress(RayError):
            queue.shutdown()
        state = final_state(box, load_state_dir, "rl")
    finally:
        if started:
            ray.shutdown()
    done = bool(state.get("done"))
    _write_run(out_dir, run_name, storage_path, config, "finished" if done else "stopped",
               last_step=state["step"])
    _save_artifact(out_dir, base, config, state)
    write_curve(state.get("history", []), out_dir / "reward_curve.json")
    con.print(f"[green]saved[/green] {out_dir} (step {state['step']} of "
              f"{config.sft_steps + config.steps})")
    return {"out": str(out_dir), "step": state["step"], "finished": done,
            "steps_reported": [int(e["step"]) for e in seen]}


def resolve_hints(hints: str, table: Any, models: list[str] | None) -> str:
    """The absolute path of the ``escalate`` artifact ``hints`` names: a directory, a name under
    the artifacts folder, or ``auto`` (the newest one trained on exactly the pool's models).

    Raises:
        UserError: none found (the message says how to train one).
    """
    from orchestra.policies.learned.locations import resolve_artifact

    if hints == "auto":
        from orchestra.backends.replay import pool_from_outcomes
        from orchestra.policies.learned.policy import artifact_for_pool

        pool = pool_from_outcomes(table, models=models)
        return str(artifact_for_pool("escalate", pool.models_for(pool.answer_agent)).path)
    return str(resolve_artifact(hints, "escalate"))


def _trainer(config: RLTrainConfig, table: Any, base: str, queue: Any, run_name: str,
             storage_path: str, *, num_workers: int, gpus_per_worker: float, threads: int,
             max_steps: int | None) -> Any:
    import ray
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from orchestra.training.rl_worker import train_loop_per_worker

    use_gpu = gpus_per_worker > 0
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": config.model_dump(), "table": [ray.put(table)],
                           "base": base, "queue": queue, "threads": threads,
                           "max_steps": max_steps},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=num_workers, use_gpu=use_gpu,
            resources_per_worker={"GPU": gpus_per_worker, "CPU": 1} if use_gpu else {"CPU": 1}),
        run_config=ray.train.RunConfig(
            name=run_name, storage_path=storage_path,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            failure_config=ray.train.FailureConfig(max_failures=0)),
    )


def _follow(trainer: threading.Thread, queue: Any, history: Path, run_name: str, total: int,
            console: Any) -> list[dict[str, Any]]:
    """Show rank 0's steps until the trainer thread ends; each also goes to ``history``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    seen: list[dict[str, Any]] = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("steps", total=total)
        for ev in queue_events(trainer, queue):
            seen.append(ev)
            with history.open("a", encoding="utf-8") as f:
                f.write(json.dumps({**ev, "run": run_name, "time": time.time()}) + "\n")
            bar.update(task, completed=int(ev["step"]), description=f"{ev['phase']} {ev['step']}")
            if ev["phase"] == "sft":
                console.print(f"sft  {ev['step']:>4}  loss {ev['loss']:.4f}  "
                              f"tokens {int(ev['tokens'])}  script reward "
                              f"{ev['script_reward']:.3f}")
            else:
                console.print(
                    f"grpo {ev['step']:>4}  reward {ev['reward']:+.3f}  format-valid "
                    f"{ev['format_valid']:.2f}  grade {ev['grade']:.2f}  cost "
                    f"${ev['cost_usd']:.5f}  kept {ev['kept_groups']:.1f}  kl {ev['kl']:.2e}  "
                    f"decision p50 {ev['decision_p50_s']:.2f}s p99 {ev['decision_p99_s']:.2f}s")
    return seen


def _save_artifact(out: Path, base: str, config: RLTrainConfig, state: dict[str, Any]) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype="float32")
    model.load_state_dict(state["model"])
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    (out / "rl.json").write_text(json.dumps({
        "default_lam": DEFAULT_LAM, "max_turns": config.max_turns, "base": base,
        "steps": int(state["step"]), "sft_steps": config.sft_steps, "grpo_steps": config.steps,
        "group": config.group, "lams": config.lams, "data": config.data,
        "max_new_tokens": config.max_new_tokens, "max_chars": config.max_chars,
        "hints": config.hints, "query_chars": config.query_chars,
        "sft_plan": config.sft_plan}, indent=2), encoding="utf-8")


def write_curve(history: list[dict[str, Any]], path: Path) -> Path:
    """The GRPO steps' reward and format-valid rate as JSON at ``path`` and a PNG beside it."""
    rows = [{k: h.get(k) for k in ("step", "reward", "format_valid", "grade", "cost_usd",
                                   "kept_groups", "kl", "decision_p50_s", "decision_p99_s",
                                   "step_s")}
            for h in history if h.get("phase") == "grpo"]
    path.write_text(json.dumps({"steps": rows}, indent=2), encoding="utf-8")
    if rows:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        x = [float(r["step"] or 0) for r in rows]
        for key, label in (("reward", "mean reward"), ("format_valid", "format-valid rate")):
            ax.plot(x, [float(r[key] or 0.0) for r in rows], label=label, marker=".")
        ax.set_xlabel("step (SFT steps first)")
        ax.set_title("rl router: GRPO on RouterBench train")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path.with_suffix(".png"), dpi=120)
        plt.close(fig)
    return path
