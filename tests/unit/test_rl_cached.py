"""The prefix-caching generator of the ``rl`` policy: greedy output equals the batched
:class:`HFGenerator`'s token for token while prefilling only the uncached tail of a prompt."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any

import pytest
from test_rl_policy import _tiny_hf  # a tiny random Llama and its BPE tokenizer (same folder)

NEW = 8  # tokens per decision


def _ids(n: int, seed: int, tok: Any) -> list[int]:
    """``n`` random ordinary token ids (no special tokens)."""
    rng = random.Random(seed)
    special = set(tok.all_special_ids)
    vocab = [i for i in range(len(tok)) if i not in special]
    return [rng.choice(vocab) for _ in range(n)]


def _gen(gen: Any, prompt: Sequence[int], stop: Sequence[str] = ()) -> list[int]:
    out: list[int] = asyncio.run(gen.generate(prompt, max_new_tokens=NEW, stop=stop))
    return out


def _setup(**kw: Any) -> tuple[Any, Any, Any]:
    from orchestra.policies.rl.cached import CachedHFGenerator
    from orchestra.policies.rl.hf import HFGenerator

    model, tok = _tiny_hf()
    return HFGenerator(model, tok), CachedHFGenerator(model, tok, **kw), tok


def _entries_intact(gen: Any) -> None:
    """Every kept cache holds exactly the tokens of its key."""
    assert gen._cache
    for key, past in gen._cache.items():
        assert past.get_seq_length() == len(key)


def test_greedy_equals_hf_and_an_extended_prompt_prefills_only_its_tail() -> None:
    ref, gen, tok = _setup()
    p1 = _ids(40, 1, tok)
    o1 = _gen(gen, p1)
    assert o1 and o1 == _gen(ref, p1)
    assert gen.hits == 0 and gen.prefilled == [len(p1)]
    _entries_intact(gen)

    p2 = p1 + o1 + _ids(20, 2, tok)  # the next decision: generated tokens + an observation
    o2 = _gen(gen, p2)
    assert o2 == _gen(ref, p2)
    assert gen.hits == 1
    # the cache covers p1 and all but the last generated token (never fed to the model)
    assert gen.prefilled[-1] <= 21 < len(p2)
    _entries_intact(gen)


def test_a_warmed_prefix_serves_every_prompt_that_starts_with_it() -> None:
    ref, gen, tok = _setup()
    prefix = _ids(60, 3, tok)
    gen.warm(prefix)
    gen.warm(prefix)  # already kept: nothing to do
    assert list(gen._cache) == [tuple(prefix)] and gen.prefilled == []
    q1, q2 = _ids(15, 4, tok), _ids(12, 5, tok)
    assert q1[0] != q2[0]
    for q in (q1, q2):
        assert _gen(gen, prefix + q) == _gen(ref, prefix + q)
    assert gen.hits == 2 and gen.prefilled == [len(q1), len(q2)]
    _entries_intact(gen)


def test_the_cache_table_is_bounded() -> None:
    ref, gen, tok = _setup(max_entries=2)
    prompts = [_ids(20, 10 + i, tok) for i in range(4)]
    assert len({p[0] for p in prompts}) == 4  # nothing shared
    for p in prompts:
        assert _gen(gen, p) == _gen(ref, p)
    assert len(gen._cache) == 2 and gen.hits == 0
    assert [k[:20] for k in gen._cache] == [tuple(p) for p in prompts[2:]]  # the newest kept
    _entries_intact(gen)


def test_a_kept_cache_is_never_changed_by_a_later_request() -> None:
    ref, gen, tok = _setup()
    p1 = _ids(40, 20, tok)
    o1 = _gen(gen, p1)
    assert o1 == _gen(ref, p1)
    # shares p1's first 25 tokens: served from p1's cache, cut to 25 tokens
    p3 = p1[:25] + _ids(10, 21, tok)
    o3 = _gen(gen, p3)
    assert o3 == _gen(ref, p3)
    assert gen.hits == 1 and gen.prefilled[-1] == 10
    _entries_intact(gen)
    # p1 again, then extended twice from the same point: each equals the model's own output
    assert _gen(gen, p1) == o1
    p2 = p1 + o1 + _ids(10, 22, tok)
    o2 = _gen(gen, p2)
    assert o2 == _gen(ref, p2)
    assert _gen(gen, p2) == o2
    assert _gen(gen, p3) == o3
    assert gen.hits == 5
    _entries_intact(gen)


def test_concurrent_requests_run_one_at_a_time() -> None:
    ref, gen, tok = _setup()
    prefix = _ids(30, 30, tok)
    prompts = [prefix + _ids(5, 31 + i, tok) for i in range(3)]

    async def all_at_once() -> list[list[int]]:
        return await asyncio.gather(*(gen.generate(p, max_new_tokens=NEW, stop=())
                                      for p in prompts))

    outs = asyncio.run(all_at_once())
    assert outs == [_gen(ref, p) for p in prompts]
    assert len(gen.prefilled) == 3 and gen.hits == 2  # the later two share the prefix


def test_stop_strings_cut_the_output_like_hf() -> None:
    ref, gen, tok = _setup()

    def stop_in(out: list[int]) -> str | None:
        """The text of a generated token in the middle of ``out``, when it is a word."""
        for t in out[2:-2]:
            text = tok.decode([t])
            if len(text) >= 2 and text.isascii() and text.isalpha():
                return text
        return None

    # a prompt whose free output has a word mid-way: that word is the stop string
    p, stop = next((p, s) for p in (_ids(30, 40 + i, tok) for i in range(50))
                   if (s := stop_in(_gen(ref, p))) is not None)
    want = _gen(ref, p, stop=(stop,))
    assert 0 < len(want) < NEW - 1 and tok.decode(want).endswith(stop)
    assert _gen(gen, p, stop=(stop,)) == want
    p2 = p + want + _ids(5, 99, tok)  # the next decision, from the cache
    assert _gen(gen, p2, stop=(stop,)) == _gen(ref, p2, stop=(stop,))
    assert gen.hits == 1


def test_load_takes_the_generator_settings(tmp_path: Any) -> None:
    from orchestra.policies.rl.cached import CachedHFGenerator

    model, tok = _tiny_hf()
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    gen = CachedHFGenerator.load(tmp_path, max_entries=3, temperature=0.5, seed=1)
    assert (gen.max_entries, gen.temperature, gen.seed) == (3, 0.5, 1)
    with pytest.raises(ValueError, match="max_entries"):
        CachedHFGenerator(model, tok, max_entries=0)
