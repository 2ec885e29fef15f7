"""A prefix-caching Hugging Face generator for the ``rl`` policy (serving and eval).

Each decision of the ``rl`` policy feeds the run's whole transcript to the model: the system
prompt (identical for every run of a pool), the question, then per decision the tokens the
model generated and an observation block. The transcript only grows, so decision t+1's prompt
starts with decision t's prompt and generated tokens. :class:`HFGenerator
<orchestra.policies.rl.hf.HFGenerator>` prefills all of it again each time; on a CPU that
prefill is most of the cost of a decision.

:class:`CachedHFGenerator` keeps the key/value caches of the token sequences it has seen (an LRU
of ``max_entries``). For a request it takes the entry sharing the longest prefix with the
prompt, copies it (entries are never changed) and lets ``model.generate`` prefill only the rest
of the prompt; the cache that generation leaves (prompt and generated tokens) becomes a new
entry, so the next decision of the same run prefills only its observation. :meth:`warm
<CachedHFGenerator.warm>` prefills a shared prefix (the system prompt) once, so every run
starts from it. Greedy output is the same as :class:`HFGenerator`'s (the same model on the
same tokens; only the order of the floating-point work differs).

When to use it: serving and evaluation, where decisions are sequential per run and share long
prefixes. Requests run one at a time (no batching): on a CPU, where torch already uses every
core, that costs little; on a GPU serving many concurrent runs, :class:`HFGenerator`'s batching
may win. Training keeps :class:`HFGenerator`'s batched sampling.

Memory: an entry holds the keys and values of its tokens for every layer (SmolLM2-135M in
fp32: about 46 KB per token, so about 45 MB for a 1,000-token transcript); an entry whose
tokens start a newer entry is dropped (the newer one covers it). Models whose cache has
sliding-window or linear-attention layers are served without re-use (such a cache cannot be cut
back to a shared prefix).
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orchestra.policies.rl.hf import HFGenerator, cut_at_stop

__all__ = ["CachedHFGenerator"]


def _cache_arg(model: Any) -> str:
    """The name under which the model takes its key/value cache: ``cache`` in recent transformers
    (5.x, where ``past_key_values`` is deprecated), ``past_key_values`` before."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _returned_cache(out: Any) -> Any:
    """The cache in a model or ``generate`` output (``cache``, or ``past_key_values`` in older
    transformers)."""
    past = getattr(out, "cache", None)
    return past if past is not None else getattr(out, "past_key_values", None)


def _reusable(past: Any) -> bool:
    """Whether ``past`` can serve a longer prompt: a ``DynamicCache`` of full-attention layers
    only (sliding-window and linear-attention layers cannot be cut back to a prefix)."""
    from transformers import DynamicCache

    return (isinstance(past, DynamicCache) and past.get_seq_length() > 0
            and not any(getattr(past, "is_sliding", ())) and not any(getattr(past, "is_linear", ())))


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class CachedHFGenerator:
    """Sequential generation with a causal LM that re-uses the key/value caches of prefixes.

    Args:
        model: a ``transformers`` causal LM (eval mode is set here).
        tokenizer: its tokenizer.
        temperature: 0 for greedy; > 0 samples.
        top_p: nucleus sampling when sampling.
        seed: seeds torch's generator before each request when sampling.
        max_entries: most caches kept (least recently used dropped first).

    ``prefilled`` (tokens the model prefilled per request) and ``hits`` (requests that re-used a
    cache) are for benchmarks.
    """

    def __init__(self, model: Any, tokenizer: Any, *, temperature: float = 0.0,
                 top_p: float = 1.0, seed: int | None = None, max_entries: int = 32) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1 (got {max_entries!r})")
        self.model = model.eval()
        self.tokenizer = tokenizer
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.temperature = temperature
        self.top_p = top_p
        self.seed = seed
        self.max_entries = max_entries
        self._cache_arg = _cache_arg(model)
        self._cache: OrderedDict[tuple[int, ...], Any] = OrderedDict()  # tokens -> DynamicCache
        self._lock: asyncio.Lock | None = None  # one request at a time (made in the loop)
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self._model_lock = threading.Lock()  # the model and the cache table (warm() too)
        self.prefilled: list[int] = []
        self.hits = 0

    @classmethod
    def load(cls, path: str | Path, **kwargs: Any) -> CachedHFGenerator:
        """Load a model directory, hub id or ``.gguf`` file (as :meth:`HFGenerator.load`)."""
        base = HFGenerator.load(path)
        return cls(base.model, base.tokenizer, **kwargs)

    async def generate(self, prompt_ids: Sequence[int], *, max_new_tokens: int,
                       stop: Sequence[str]) -> list[int]:
        ids = [int(t) for t in prompt_ids]
        if not ids:
            raise ValueError("generate needs at least one prompt token")
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:  # an asyncio.Lock serves one loop
            self._lock, self._lock_loop = asyncio.Lock(), loop
        async with self._lock:
            return await asyncio.to_thread(self._generate, ids, max_new_tokens, tuple(stop))

    def warm(self, prefix_ids: Sequence[int]) -> None:
        """Prefill ``prefix_ids`` (a prefix many prompts share: the system prompt) and keep its
        cache, unless a kept entry already covers it."""
        import torch

        ids = tuple(int(t) for t in prefix_ids)
        if not ids:
            return
        with self._model_lock:
            if any(common_prefix(k, ids) == len(ids) for k in self._cache):
                return
            dev = self.model.device
            with torch.no_grad():
                out = self.model(input_ids=torch.tensor([ids], device=dev),
                                 attention_mask=torch.ones(1, len(ids), dtype=torch.long,
                                                           device=dev),
                                 use_cache=True)  # the model makes the right cache for itself
            past = _returned_cache(out)
            if _reusable(past):
                self._store(ids, past)

    # ------------------------------------------------------------------ in the worker thread
    def _lookup(self, ids: list[int]) -> tuple[int, Any]:
        """The longest kept prefix of ``ids`` (at most all but the last token) and a private
        copy of its cache cut to that length; ``(0, None)`` when nothing is shared."""
        best, best_key = 0, None
        for key in self._cache:
            n = min(common_prefix(key, ids), len(ids) - 1)
            if n > best:
                best, best_key = n, key
        if best_key is None:
            return 0, None
        self._cache.move_to_end(best_key)
        past = copy.deepcopy(self._cache[best_key])
        extra = past.get_seq_length() - best
        if extra > 0:
            past.crop(-extra)  # a negative count removes that many tokens (every version)
        return best, past

    def _store(self, key: tuple[int, ...], past: Any) -> None:
        for k in [k for k in self._cache if len(k) <= len(key) and key[:len(k)] == k]:
            del self._cache[k]  # covered by the new entry
        self._cache[key] = past
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)

    def _generate(self, ids: list[int], max_new_tokens: int, stop: tuple[str, ...]) -> list[int]:
        import torch

        tok = self.tokenizer
        pad = tok.pad_token_id
        dev = self.model.device
        sample = self.temperature > 0
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_new_tokens, "do_sample": sample, "pad_token_id": pad,
            "return_dict_in_generate": True, "use_cache": True,
        }
        if sample:
            kwargs.update(temperature=self.temperature, top_p=self.top_p)
        if stop:
            kwargs.update(stop_strings=list(stop), tokenizer=tok)
        with self._model_lock, torch.no_grad():
            cached, past = self._lookup(ids)
            if past is not None:  # generate prefills only the tokens past the cache's length
                kwargs[self._cache_arg] = past
            if sample and self.seed is not None:
                torch.manual_seed(self.seed + len(self.prefilled))
            out = self.model.generate(
                input_ids=torch.tensor([ids], device=dev),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=dev), **kwargs)
            self.prefilled.append(len(ids) - cached)
            if cached:
                self.hits += 1
            seq = [int(t) for t in out.sequences[0].tolist()]
            kept = _returned_cache(out)
            if _reusable(kept):  # it holds the prompt and all but the last generated token
                self._store(tuple(seq[:kept.get_seq_length()]), kept)
        eos = [t for t in (tok.eos_token_id,) if t is not None and t != pad] + [pad]
        return cut_at_stop(tok, seq[len(ids):], stop, eos)[:max_new_tokens]
