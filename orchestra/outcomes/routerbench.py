"""Loaders for RouterBench (11 LLMs, real recorded costs): a local folder or file, a pandas
frame, or the Hugging Face hub.

The layout is parsed by :mod:`orchestra.outcomes.routerbench_wide`; the folder is found by
:func:`~orchestra.outcomes.data_dirs` when none is given.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

from orchestra.errors import UserError
from orchestra.outcomes.datadirs import _check_split, find_data_dir
from orchestra.outcomes.routerbench_wide import (
    _frame_columns,
    _pandas,
    _read_wide_csv,
    _read_wide_file,
    _routerbench_table,
)
from orchestra.outcomes.table import OutcomeTable

__all__ = [
    "HUB_TEST_FRACTION",
    "ROUTERBENCH_HUB_FILE",
    "ROUTERBENCH_HUB_REPO",
    "SplitName",
    "load_routerbench",
    "load_routerbench_hub",
    "routerbench_from_frame",
]


#: RouterBench's public home on the Hugging Face hub (a dataset repository).
ROUTERBENCH_HUB_REPO = "withmartian/routerbench"

#: The 0-shot file there: a pickled pandas DataFrame in the wide layout.
ROUTERBENCH_HUB_FILE = "routerbench_0shot.pkl"

#: Share of queries a hub split puts in "test" (hash of the sample id; see load_routerbench_hub).
HUB_TEST_FRACTION = 0.3

#: The splits of a RouterBench folder ("all": both, each query labelled with its own).
SplitName = Literal["train", "test", "all"]


def _split_files(folder: Path, split: str) -> list[Path]:
    """A folder's RouterBench files of one split (``*_{split}.csv``)."""
    return sorted(folder.glob(f"*_{split}.csv"))


def _hash_split(sample_id: str) -> str:
    h = int(hashlib.sha256(sample_id.encode("utf-8")).hexdigest()[:8], 16)
    return "test" if h / 0xFFFFFFFF < HUB_TEST_FRACTION else "train"


def load_routerbench(
    path_or_dir: str | Path | None = None,
    *,
    split: SplitName = "train",
    missing_score: float | None = 0.0,
    derive_gold: bool = True,
) -> OutcomeTable:
    """Load RouterBench (11 LLMs, real recorded costs) as an outcome table.

    The wide layout, one row per query: ``sample_id``, ``prompt`` (the repr of a list of
    turns, parsed with ``ast.literal_eval``, which never runs code), ``eval_name`` (the task),
    then per model M: ``M`` (score; 0/1 on these tasks), ``M|model_response`` (repr of a list
    of turns) and ``M|total_cost`` (USD), and ``oracle_model_to_route_to`` (ignored: the oracle
    is recomputed). Query id = ``sample_id``; a repeated id (RouterBench records a few ARC
    questions twice, splitting the models between the two rows) gets ``#2``, ``#3``, ... and is
    listed in ``table.meta["repeated_sample_ids"]``.

    Multiple-choice queries (a last paragraph with ``A) ... B) ...`` lines: ARC-Challenge,
    Winogrande) get their options as ``choices`` and, with ``derive_gold``, a gold letter
    derived from the recorded correctness (see ``table.meta["gold"]`` for the counts).

    Args:
        path_or_dir: a folder with ``*_train.csv`` / ``*_test.csv`` files (the RouterDC
            split, as in the shared data) or with the hub's ``routerbench_0shot.pkl``; or one
            wide ``.csv`` / ``.pkl`` / ``.parquet`` file. None: the ``routerbench`` folder of
            the data dirs (:func:`data_dirs`), else the Hugging Face hub.
        split: which split of a folder of split files: "train", "test" or "all" (both,
            with ``QueryRow.split`` set). Ignored for a single file of split files' layout;
            for the hub file see :func:`load_routerbench_hub`.
        missing_score: the score of an empty score cell (a few exist; RouterBench's own
            reference numbers count them as 0). None drops those pairs (NaN in the matrices).
        derive_gold: derive gold letters for multiple-choice queries.

    Raises:
        UserError: no such path, a file not in the wide layout, a bad cell (named by file,
            row and column), or the hub is unreachable.
    """
    _check_split(split, ("train", "test", "all"), "RouterBench")
    if path_or_dir is None:
        folder = find_data_dir("routerbench")
        if folder is None:
            return load_routerbench_hub(
                split=split, missing_score=missing_score, derive_gold=derive_gold
            )
        path_or_dir = folder
    p = Path(path_or_dir)
    meta: dict[str, Any] = {"source": f"routerbench ({p})", "cost_note": "recorded per query (USD)"}
    if p.is_dir():
        if (p / ROUTERBENCH_HUB_FILE).is_file() and not _split_files(p, "train"):
            return _routerbench_hub_file(
                p / ROUTERBENCH_HUB_FILE,
                split=split,
                missing_score=missing_score,
                derive_gold=derive_gold,
            )
        splits = ["train", "test"] if split == "all" else [split]
        files = [(s, f) for s in splits for f in _split_files(p, s)]
        if not files:
            raise UserError(
                f"no RouterBench files for split {split!r} in {str(p)!r}: expected files named "
                f"'*_{splits[0]}.csv' (or {ROUTERBENCH_HUB_FILE!r})"
            )
        merged: dict[str, list[Any]] = {}
        labels: list[str | None] = []
        for s, f in files:
            cols = _read_wide_csv(f)
            n = len(cols.get("sample_id", []))
            if merged and set(cols) != set(merged):
                raise UserError(
                    f"{f.name}: columns differ from {files[0][1].name}; expected every split file "
                    "to have the same models"
                )
            for k, v in cols.items():
                merged.setdefault(k, []).extend(v)
            labels += [s] * n
        meta["files"] = [f.name for _, f in files]
        meta["split"] = split
        return _routerbench_table(
            merged,
            source=p.name if len(files) > 1 else files[0][1].name,
            split_labels=labels,
            missing_score=missing_score,
            derive_gold=derive_gold,
            meta=meta,
        )
    if not p.is_file():
        raise UserError(
            f"RouterBench path {str(p)!r} does not exist; expected a folder of '*_test.csv' "
            "files, a wide .csv/.pkl/.parquet file, or None for the shared data or the hub"
        )
    cols = _read_wide_file(p)
    n = len(cols.get("sample_id", []))
    return _routerbench_table(
        cols,
        source=p.name,
        split_labels=[None] * n,
        missing_score=missing_score,
        derive_gold=derive_gold,
        meta=meta,
    )


def routerbench_from_frame(
    df: Any,
    *,
    split: Literal["train", "test", "all"] | None = None,
    missing_score: float | None = 0.0,
    derive_gold: bool = True,
    source: str = ROUTERBENCH_HUB_FILE,
) -> OutcomeTable:
    """Parse a pandas DataFrame in RouterBench's wide layout (the hub file's content).

    The hub file has no split; ``split="train"``/``"test"`` keeps the queries whose
    ``sha256(sample_id)`` falls in the train (70%) or test (30%) share — a reproducible split
    of orchestra's, *not* the RouterDC split of the shared CSVs. None or "all" keeps every row.
    """
    cols = _frame_columns(df)
    ids = [str(x) for x in cols.get("sample_id", [])]
    meta: dict[str, Any] = {
        "source": f"routerbench ({source})",
        "cost_note": "recorded per query (USD)",
    }
    if split in ("train", "test"):
        keep = [i for i, s in enumerate(ids) if _hash_split(s) == split]
        cols = {k: [v[i] for i in keep] for k, v in cols.items()}
        labels: list[str | None] = [split] * len(keep)
        meta["split"] = split
        meta["split_note"] = (
            f"hash split of the hub file: sha256(sample_id) puts {HUB_TEST_FRACTION:.0%} of "
            "queries in test; not the RouterDC split"
        )
    else:
        _check_split(split or "all", ("train", "test", "all"), "RouterBench")
        labels = [_hash_split(s) for s in ids]
        meta["split"] = "all"
    return _routerbench_table(
        cols,
        source=source,
        split_labels=labels,
        missing_score=missing_score,
        derive_gold=derive_gold,
        meta=meta,
    )


def _routerbench_hub_file(
    path: Path,
    *,
    split: Literal["train", "test", "all"] | None,
    missing_score: float | None,
    derive_gold: bool,
) -> OutcomeTable:
    pd = _pandas()
    df = pd.read_pickle(path)  # the hub's own file; a pickle is only safe from a trusted source
    return routerbench_from_frame(
        df,
        split=split,
        missing_score=missing_score,
        derive_gold=derive_gold,
        source=path.name,
    )


def load_routerbench_hub(
    *,
    split: Literal["train", "test", "all"] | None = None,
    filename: str = ROUTERBENCH_HUB_FILE,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    missing_score: float | None = 0.0,
    derive_gold: bool = True,
) -> OutcomeTable:
    """Download RouterBench from the Hugging Face hub and load it.

    The dataset ``withmartian/routerbench`` holds ``routerbench_0shot.pkl`` (and
    ``routerbench_5shot.pkl``): a pickled pandas DataFrame with the same wide columns as the
    shared CSVs, over all RouterBench tasks (~36k prompts, 11 models). The file is fetched with
    ``huggingface_hub.hf_hub_download`` (cached) and parsed by :func:`routerbench_from_frame`.

    Not exercised by the test suite (no network there): the tests run the same parser on a
    small DataFrame of this layout that they write themselves.

    Args:
        split: None or "all" for every row, or "train"/"test" for orchestra's hash split
            (see :func:`routerbench_from_frame`).
        filename: which file of the dataset.
        revision: a commit of the dataset repository, to pin the data.
        cache_dir: where to cache the download (the hub's default cache otherwise).
        missing_score: score of empty score cells (None drops them).
        derive_gold: derive gold letters for multiple-choice queries.

    Raises:
        UserError: huggingface_hub or pandas is missing, or the download fails (offline, no
            such file or revision).
    """
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise UserError(
            "loading RouterBench from the Hugging Face hub needs huggingface_hub, which is not "
            "installed; expected it installed (pip install huggingface_hub), or pass a local "
            "folder/file to load_routerbench"
        ) from None
    try:
        local = hf_hub_download(
            repo_id=ROUTERBENCH_HUB_REPO,
            filename=filename,
            repo_type="dataset",
            revision=revision,
            cache_dir=str(cache_dir) if cache_dir is not None else None,
        )
    except Exception as e:  # noqa: BLE001 — offline, missing file, auth: "cannot get the data"
        raise UserError(
            f"could not download {filename!r} from the Hugging Face dataset "
            f"{ROUTERBENCH_HUB_REPO!r} ({type(e).__name__}: {e}); expected network access to "
            "huggingface.co — or put the RouterBench files in a folder and pass it (or set "
            "ORCHESTRA_DATA_DIR to a folder holding routerbench/)"
        ) from None
    return _routerbench_hub_file(
        Path(local), split=split, missing_score=missing_score, derive_gold=derive_gold
    )
