"""The ``rl`` training loop, Ray-agnostic: SFT warm start, then GRPO, on one worker's shard.

:func:`fit_rl` runs steps ``0 .. sft_steps + steps − 1``: the first ``sft_steps`` fit scripted
trajectories (:mod:`~orchestra.training.rl_sft`), the rest are GRPO updates
(:mod:`~orchestra.training.rl_grpo`) from groups of episodes run through the serving runtime
(:mod:`~orchestra.training.rl_episodes`) with a sampling
:class:`~orchestra.policies.rl.hf.HFGenerator` over the model being trained. The KL reference
is the model as GRPO starts (the warm-started one). Each worker trains on its own shard of the
training queries; ``prepare_model`` (Ray Train's, DDP with several workers) keeps the replicas
equal. After every step ``report(metrics, make_state)`` is called, with ``make_state`` (a
checkpoint) at the end of SFT, every ``checkpoint_every`` GRPO steps and at the last step.
"""

from __future__ import annotations

import asyncio
import copy
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from orchestra.errors import UserError
from orchestra.training.rl_config import RLTrainConfig
from orchestra.training.rl_episodes import Episode, EpisodeRunner
from orchestra.training.rl_grpo import grpo_update
from orchestra.training.rl_reward import sample_lam
from orchestra.training.rl_sft import sft_loss, sft_trajectories

if TYPE_CHECKING:
    from orchestra.outcomes.table import OutcomeTable

__all__ = ["fit_rl", "load_model"]

Report = Callable[[dict[str, Any], Callable[[], dict[str, Any]] | None], None]


def load_model(base: str, device: Any, model: Any = None) -> tuple[Any, Any]:
    """(model, tokenizer) from a model directory; ``model`` given: use it (tests)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    if model is None:
        model = AutoModelForCausalLM.from_pretrained(base, dtype="float32")
    return model.to(device), tok


def _mean_over_workers(values: list[float], world: int, device: Any) -> list[float]:
    if world <= 1:
        return values
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return (t / world).tolist()


def _episode_metrics(groups: list[list[Episode]]) -> dict[str, float]:
    eps = [e for g in groups for e in g]
    return {
        "reward": float(np.mean([e.reward.reward for e in eps])),
        "format_valid": float(np.mean([e.reward.format_error is None for e in eps])),
        "grade": float(np.mean([e.reward.grade for e in eps])),
        "cost_usd": float(np.mean([e.reward.cost_usd for e in eps])),
        "calls": float(np.mean([len(e.models) for e in eps])),
    }


def fit_rl(config: RLTrainConfig, table: OutcomeTable, base: str, *, rank: int = 0,
           world: int = 1, state: dict[str, Any] | None = None, report: Report,
           prepare_model: Callable[[Any], Any] = lambda m: m, device: Any = "cpu",
           max_steps: int | None = None, model: Any = None, tokenizer: Any = None) -> None:
    """Train (see the module docstring); resumes from ``state`` when given.

    Args:
        max_steps: stop this invocation after this many steps in all (the run stays resumable).
        model / tokenizer: use these instead of loading ``base`` (tests: a tiny model).
    """
    import torch

    from orchestra.policies.rl.hf import HFGenerator

    total = config.sft_steps + config.steps
    net, tok = load_model(base, device, model)
    if tokenizer is not None:
        tok = tokenizer
    ref = copy.deepcopy(net).eval().requires_grad_(False)
    step = 0
    history: list[dict[str, Any]] = []
    if state is not None:
        net.load_state_dict(state["model"])
        if state.get("ref") is not None:
            ref.load_state_dict(state["ref"])
        step, history = int(state["step"]), list(state.get("history", []))
    core = net
    trainable = _trainable(core, config.train_layers)
    net = prepare_model(net)
    opt = torch.optim.AdamW(trainable, lr=config.sft_lr, weight_decay=0.0)
    if state is not None and state.get("optimizer") is not None:
        opt.load_state_dict(state["optimizer"])
    gen = HFGenerator(core, tok, temperature=config.temperature, top_p=config.top_p,
                      batch_size=config.group * config.queries_per_step, max_wait_s=0.05,
                      seed=config.seed + 7919 * rank + 104729 * step)
    runner = EpisodeRunner(table, gen, max_turns=config.max_turns,
                           max_new_tokens=config.max_new_tokens, max_chars=config.max_chars,
                           models=config.models, hints=config.hints,
                           query_chars=config.query_chars)
    order = [i for i, q in enumerate(runner.queries)
             if config.max_query_chars is None or len(q.text) <= config.max_query_chars]
    if not order:
        raise UserError(f"no training query has at most {config.max_query_chars} characters; "
                        "raise --max-query-chars")
    random.Random(config.seed).shuffle(order)
    shard = [runner.queries[i] for i in order[rank::world]]
    stop_at = total if max_steps is None else min(total, max_steps)

    def make_state(done: bool) -> Callable[[], dict[str, Any]]:
        return lambda: {"model": core.state_dict(), "optimizer": opt.state_dict(),
                        "ref": ref.state_dict() if step > config.sft_steps else None,
                        "step": step, "history": history, "config": config.model_dump(),
                        "done": done}

    while step < stop_at:
        rng = random.Random(config.seed * 1_000_003 + step * 101 + rank)
        t0 = time.perf_counter()
        if step < config.sft_steps:
            metrics = _sft_step(config, runner, shard, tok, net, opt, rng, device)
        else:
            if step == config.sft_steps:  # GRPO starts: the reference is the warm start
                ref.load_state_dict(core.state_dict())
            for g in opt.param_groups:
                g["lr"] = config.lr
            metrics = _grpo_step(config, runner, shard, net, ref, opt, rng, device)
        keys = sorted(k for k, v in metrics.items() if isinstance(v, float))
        for k, v in zip(keys, _mean_over_workers([metrics[k] for k in keys], world, device),
                        strict=True):
            metrics[k] = v
        step += 1
        metrics.update(step=step, total_steps=total, step_s=time.perf_counter() - t0)
        history.append(metrics)
        grpo_step = step - config.sft_steps
        due = (step == config.sft_steps or step == stop_at
               or (grpo_step > 0 and grpo_step % config.checkpoint_every == 0))
        report(metrics, make_state(step >= total) if due else None)


def _trainable(model: Any, last_layers: int | None) -> list[Any]:
    """The parameters to train: all, or those of the last ``last_layers`` blocks and the final
    norm (the others frozen)."""
    params = list(model.parameters())
    blocks = getattr(getattr(model, "model", None), "layers", None)
    if last_layers is None or blocks is None:
        return params
    for p in params:
        p.requires_grad_(False)
    keep = [*blocks[-last_layers:], getattr(model.model, "norm", None)]
    for module in (m for m in keep if m is not None):
        for p in module.parameters():
            p.requires_grad_(True)
    return [p for p in params if p.requires_grad]


def _sft_step(config: RLTrainConfig, runner: EpisodeRunner, shard: list[Any], tok: Any,
              net: Any, opt: Any, rng: random.Random, device: Any) -> dict[str, Any]:
    import torch

    queries = [rng.choice(shard) for _ in range(config.sft_batch)]
    pairs = asyncio.run(sft_trajectories(runner, queries, tok, config.lams, rng,
                                         plan=config.sft_plan))
    eps = [e for _, e in pairs]
    net.train()
    opt.zero_grad(set_to_none=True)
    loss, tokens = sft_loss(net, eps, device)
    norm = torch.nn.utils.clip_grad_norm_(net.parameters(), config.clip_norm)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return {"phase": "sft", "loss": float(loss), "tokens": float(tokens),
            "grad_norm": float(norm), **{f"script_{k}": v for k, v in
                                          _episode_metrics([eps]).items()}}


def _grpo_step(config: RLTrainConfig, runner: EpisodeRunner, shard: list[Any], net: Any,
               ref: Any, opt: Any, rng: random.Random, device: Any) -> dict[str, Any]:
    queries = [rng.choice(shard) for _ in range(config.queries_per_step)]
    lams = [sample_lam(rng, config.lams) for _ in queries]
    runner.latencies_s.clear()

    async def rollouts() -> list[list[Episode]]:
        return list(await asyncio.gather(*(runner.group(q, lam, config.group)
                                           for q, lam in zip(queries, lams, strict=True))))

    t0 = time.perf_counter()
    groups = asyncio.run(rollouts())
    rollout_s = time.perf_counter() - t0
    lat = np.array(runner.latencies_s or [0.0])
    stats = grpo_update(net, ref, opt, groups, beta=config.beta, clip_norm=config.clip_norm,
                        device=device)
    return {"phase": "grpo", **_episode_metrics(groups), "loss": stats.loss, "kl": stats.kl,
            "kept_groups": float(stats.kept_groups), "tokens": float(stats.tokens),
            "grad_norm": stats.grad_norm, "rollout_s": rollout_s,
            "decision_p50_s": float(np.percentile(lat, 50)),
            "decision_p99_s": float(np.percentile(lat, 99)),
            "lam": float(np.mean(lams)),
            "sample": next((e.texts[0] for g in groups for e in g if e.texts), "")[:120]}
