"""Tests for orchestra.embed: the hashing embedder, the on-disk cache and the factory."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from orchestra.embed import (
    CACHE_DIR_ENV,
    CachedEmbedder,
    Embedder,
    HashingEmbedder,
    MiniLMEmbedder,
    default_cache_dir,
    get_embedder,
)
from orchestra.errors import UserError

TEXTS = [
    "What is the capital of France?",
    "Which city is France's capital?",
    "How do I bake bread?",
    "",
]


class CountingEmbedder:
    """A real embedder (hashing) that records every text it is asked to embed."""

    def __init__(self, dim: int = 32, name: str | None = None) -> None:
        self._inner = HashingEmbedder(dim)
        self.name = name or self._inner.name
        self.dim = dim
        self.seen: list[str] = []
        self.calls = 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        self.seen.extend(texts)
        return self._inner.embed(texts)


# ------------------------------------------------------------------------------------------
# HashingEmbedder


def test_hashing_shape_dtype_and_unit_norm() -> None:
    vecs = HashingEmbedder(64).embed(TEXTS[:3])
    assert vecs.shape == (3, 64)
    assert vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-6)


def test_hashing_empty_text_gives_zero_row_and_no_texts_gives_empty() -> None:
    e = HashingEmbedder(16)
    assert not e.embed([""]).any()
    assert e.embed([]).shape == (0, 16)


def test_hashing_is_deterministic_across_instances_and_processes() -> None:
    here = HashingEmbedder(128).embed(TEXTS)
    np.testing.assert_array_equal(here, HashingEmbedder(128).embed(TEXTS))
    # Another interpreter with a different str-hash seed computes the same vectors.
    code = (
        "import sys, numpy as np\n"
        "from orchestra.embed import HashingEmbedder\n"
        f"sys.stdout.buffer.write(HashingEmbedder(128).embed({TEXTS!r}).tobytes())\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, env=env, cwd=root, check=True
    )
    there = np.frombuffer(result.stdout, dtype=np.float32).reshape(here.shape)
    np.testing.assert_array_equal(here, there)


def test_hashing_ignores_case_and_spacing_and_ranks_overlap() -> None:
    e = HashingEmbedder(256)
    a, b, c, d = e.embed(
        ["The cat sat on the mat", "the  cat sat on the MAT", "The cat sat on a mat", "Quarks!"]
    )
    np.testing.assert_allclose(a, b)
    assert a @ c > a @ d


def test_hashing_name_reflects_settings() -> None:
    assert HashingEmbedder(64).name != HashingEmbedder(128).name
    assert HashingEmbedder(64, ngram_range=(2, 3)).name != HashingEmbedder(64).name
    assert isinstance(HashingEmbedder(), Embedder)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dim": 0}, r"dim.*\b0\b"),
        ({"dim": 8.0}, r"dim.*8\.0"),
        ({"dim": 8, "ngram_range": (3, 2)}, r"ngram_range.*\(3, 2\)"),
    ],
)
def test_hashing_rejects_bad_settings(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(UserError, match=match):
        HashingEmbedder(**kwargs)  # type: ignore[arg-type]


def test_embed_rejects_a_bare_string_and_non_strings() -> None:
    e = HashingEmbedder(8)
    with pytest.raises(UserError, match=r"single str 'hello'.*wrap it in a list"):
        e.embed("hello")
    with pytest.raises(UserError, match=r"int 3 at index 1"):
        e.embed(["a", 3])  # type: ignore[list-item]


# ------------------------------------------------------------------------------------------
# CachedEmbedder


def test_cache_returns_identical_vectors_without_calling_inner_again(tmp_path: Path) -> None:
    inner = CountingEmbedder()
    cached = CachedEmbedder(inner, tmp_path)
    first = cached.embed(TEXTS)
    np.testing.assert_array_equal(first, inner._inner.embed(TEXTS))
    assert inner.seen == TEXTS and (cached.misses, cached.hits) == (4, 0)

    again = cached.embed(TEXTS)
    np.testing.assert_array_equal(again, first)
    assert inner.calls == 1 and (cached.misses, cached.hits) == (4, 4)
    assert (tmp_path / "embeddings.sqlite").is_file()
    assert len(cached) == 4


def test_cache_computes_only_missing_texts_once_each(tmp_path: Path) -> None:
    inner = CountingEmbedder()
    cached = CachedEmbedder(inner, tmp_path)
    cached.embed(TEXTS[:2])
    inner.seen.clear()
    mixed = ["new one", TEXTS[0], "new one", TEXTS[1], "new two"]
    vecs = cached.embed(mixed)
    assert inner.seen == ["new one", "new two"]
    np.testing.assert_array_equal(vecs, inner._inner.embed(mixed))
    assert cached.embed([]).shape == (0, inner.dim)


def test_cache_persists_across_instances_and_separates_models(tmp_path: Path) -> None:
    CachedEmbedder(CountingEmbedder(), tmp_path).embed(TEXTS)
    later = CountingEmbedder()
    CachedEmbedder(later, tmp_path).embed(TEXTS)
    assert later.calls == 0

    other_model = CountingEmbedder(name="another-model")
    CachedEmbedder(other_model, tmp_path).embed(TEXTS)
    assert other_model.seen == TEXTS  # same texts, different model: not served from the cache


def test_cache_is_consistent_under_threads(tmp_path: Path) -> None:
    inner = CountingEmbedder()
    cached = CachedEmbedder(inner, tmp_path)
    texts = [f"query number {i}" for i in range(200)]
    expected = inner._inner.embed(texts)

    def work(offset: int) -> np.ndarray:
        got = cached.embed(texts[offset:] + texts[:offset])
        return np.roll(got, offset, axis=0)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(work, [0, 37, 74, 111]))  # re-raises a worker's exception
    for got in results:
        np.testing.assert_array_equal(got, expected)
    assert len(cached) == 200


def test_cache_rejects_inner_with_wrong_shape(tmp_path: Path) -> None:
    liar = CountingEmbedder(dim=32)
    liar.dim = 64  # claims 64, returns 32
    with pytest.raises(UserError, match=r"shape.*\(2, 64\).*\(2, 32\)"):
        CachedEmbedder(liar, tmp_path).embed(["a", "b"])


def test_cache_rejects_non_embedder(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="expected an Embedder"):
        CachedEmbedder("minilm", tmp_path)  # type: ignore[arg-type]


def test_cache_dir_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "from-env"))
    assert default_cache_dir() == tmp_path / "from-env"
    cached = CachedEmbedder(CountingEmbedder())
    assert cached.path == tmp_path / "from-env" / "embeddings.sqlite"
    monkeypatch.delenv(CACHE_DIR_ENV)
    assert default_cache_dir().name == "orchestra"


def test_unwritable_cache_dir_is_a_user_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match=r"writable embedding cache.*ORCHESTRA_CACHE_DIR"):
        CachedEmbedder(CountingEmbedder(), blocker / "cache")


# ------------------------------------------------------------------------------------------
# get_embedder, lazy imports


def test_get_embedder(tmp_path: Path) -> None:
    hashing = get_embedder("hashing", cache_dir=tmp_path)
    assert isinstance(hashing, CachedEmbedder)
    assert isinstance(hashing.inner, HashingEmbedder)
    np.testing.assert_array_equal(hashing.embed(TEXTS), HashingEmbedder().embed(TEXTS))
    assert isinstance(get_embedder("hashing", cache=False), HashingEmbedder)
    minilm = get_embedder("minilm", cache=False)
    assert isinstance(minilm, MiniLMEmbedder) and minilm.dim == 384


def test_get_embedder_unknown_name_lists_known_ones() -> None:
    with pytest.raises(UserError, match=r"\['minilm', 'hashing'\].*'bert'"):
        get_embedder("bert", cache=False)  # type: ignore[arg-type]


def test_import_and_construction_stay_light() -> None:
    code = (
        "import sys\n"
        "from orchestra.embed import get_embedder\n"
        "get_embedder('minilm', cache=False)\n"
        "heavy = [m for m in ('torch', 'sentence_transformers', 'transformers') "
        "if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)
