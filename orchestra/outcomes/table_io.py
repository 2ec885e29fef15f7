"""Outcome table files: JSONL, CSV and Parquet, read and written row by row.

Files: ``.jsonl`` (one row a line), ``.csv`` (one row a line, a header; empty cell = absent)
and ``.parquet``; the format is picked from the suffix. The rows are
:class:`~orchestra.outcomes.OutcomeRow` s (fields in :mod:`orchestra.outcomes.rows`).
Table-level metadata (the query table, the model infos, free-form notes) is optional and
stored where each format has room for it:

- JSONL: a first line ``{"_table": {...}}``;
- Parquet: the schema metadata key ``orchestra.outcomes``;
- CSV: a sidecar ``<file>.meta.json`` beside the CSV.

The metadata object is ``{"version": 1, "queries": [QueryRow...], "models": {name:
ModelInfo}, "meta": {...}}``. A file of bare rows is a valid table.

:meth:`OutcomeTable.write <orchestra.outcomes.OutcomeTable.write>` and
:meth:`OutcomeTable.read <orchestra.outcomes.OutcomeTable.read>` are the entry points; the
functions here deal in records and metadata only.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestra.errors import UserError
from orchestra.outcomes.repairs import Repairs, clip_score_records, dedupe_rows, record_repairs
from orchestra.outcomes.rows import _FIELDS, OutcomeRow, _validate_rows

__all__ = ["FORMAT_VERSION", "SUFFIXES"]

#: Version of the table-level metadata written beside the rows.
FORMAT_VERSION = 1
#: File suffixes :meth:`OutcomeTable.read` and :meth:`OutcomeTable.write` understand.
SUFFIXES = (".jsonl", ".csv", ".parquet")

_META_KEY = "orchestra.outcomes"
_JSONL_META = "_table"
# CSV cannot tell an empty string from "absent": empty optional cells mean absent.
_CSV_EMPTY_IS_NONE = frozenset(
    {"latency_s", "input_tokens", "output_tokens", "response", "cost_estimated"}
)


@dataclass(frozen=True)
class _TableFile:
    """What a table file holds: validated rows (with their row numbers) and the metadata."""

    name: str
    rows: list[OutcomeRow]
    row_numbers: list[int]
    queries: list[Any] | None = None
    models_info: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None


def _write_file(
    path: str | Path,
    records: Sequence[Mapping[str, Any]],
    *,
    queries: list[dict[str, Any]],
    models_info: dict[str, dict[str, Any]],
    meta: dict[str, Any],
) -> Path:
    """Write row records and the table metadata in the format of the path's suffix."""
    p = Path(path)
    fmt = _format_of(p)
    p.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"version": FORMAT_VERSION, "queries": queries, "models": models_info, "meta": meta}
    if fmt == ".jsonl":
        with p.open("w", encoding="utf-8") as f:
            f.write(json.dumps({_JSONL_META: metadata}, ensure_ascii=False) + "\n")
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    elif fmt == ".csv":
        with p.open("w", encoding="utf-8", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(_FIELDS))
            w.writeheader()
            for r in records:
                w.writerow({k: ("" if v is None else v) for k, v in r.items()})
        _sidecar(p).write_text(json.dumps(metadata, ensure_ascii=False), encoding="utf-8")
    else:
        pa, pq = _pyarrow()
        types = {
            "query_id": pa.string(),
            "query": pa.string(),
            "task": pa.string(),
            "model": pa.string(),
            "score": pa.float64(),
            "cost_usd": pa.float64(),
            "latency_s": pa.float64(),
            "input_tokens": pa.int64(),
            "output_tokens": pa.int64(),
            "response": pa.string(),
            "cost_estimated": pa.bool_(),
        }
        schema = pa.schema(
            [(name, types[name]) for name in _FIELDS],
            metadata={_META_KEY: json.dumps(metadata, ensure_ascii=False)},
        )
        cols = {name: [r[name] for r in records] for name in _FIELDS}
        pq.write_table(pa.Table.from_pydict(cols, schema=schema), p)
    return p


def _read_file(path: str | Path, repairs: Repairs | None = None) -> _TableFile:
    """Read and validate the rows and metadata of a table file, applying ``repairs``
    (:mod:`orchestra.outcomes.repairs`; their record goes in the metadata's ``repairs``).

    Raises:
        UserError: missing file, unknown suffix, malformed file, row or metadata.
    """
    p = Path(path)
    fmt = _format_of(p)
    if not p.is_file():
        raise UserError(
            f"outcome file {str(p)!r} does not exist; expected a path to a "
            f"{'/'.join(SUFFIXES)} file"
        )
    if fmt == ".jsonl":
        records, numbers, meta = _read_jsonl(p)
    elif fmt == ".csv":
        records, numbers, meta = _read_csv(p)
    else:
        records, numbers, meta = _read_parquet(p)
    repairs = repairs or Repairs()
    clipped, examples = 0, list[str]()
    if repairs.clip_scores:
        records, clipped, examples = clip_score_records(records)
    rows = _validate_rows(records, p.name, numbers)
    if meta is not None and not isinstance(meta, dict):
        raise UserError(f"{p.name}: table metadata must be a JSON object (got {meta!r})")
    meta = meta or {}
    version = meta.get("version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise UserError(
            f"{p.name}: table metadata version {version!r} is not supported; expected "
            f"{FORMAT_VERSION} — upgrade orchestra"
        )
    table_meta = meta.get("meta")
    if repairs.any:
        dup = conflict = 0
        if repairs.dedupe:
            rows, numbers, dup, conflict, more = dedupe_rows(rows, numbers, meta.get("queries"))
            examples += more
        record = record_repairs(p.name, repairs, clipped=clipped, duplicates=dup,
                                conflicts=conflict, examples=examples)
        table_meta = {**(table_meta if isinstance(table_meta, dict) else {}), "repairs": record}
    return _TableFile(
        name=p.name,
        rows=rows,
        row_numbers=numbers,
        queries=meta.get("queries"),
        models_info=meta.get("models"),
        meta=table_meta,
    )


# Each reader returns (records, their row numbers, the metadata or None).
_Read = tuple[list[Any], list[int], Any]


def _read_jsonl(p: Path) -> _Read:
    meta: Any = None
    records: list[Any] = []
    numbers: list[int] = []
    with p.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(
                    f"{p.name} row {lineno}: expected one JSON object a line (got "
                    f"{line.strip()[:60]!r}: {e.msg})"
                ) from None
            if isinstance(obj, dict) and _JSONL_META in obj and len(obj) == 1 and not records:
                meta = obj[_JSONL_META]
                continue
            records.append(obj)
            numbers.append(lineno)
    return records, numbers, meta


def _read_csv(p: Path) -> _Read:
    records: list[Any] = []
    numbers: list[int] = []
    with p.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        _check_columns(p.name, reader.fieldnames or [])
        for rownum, rec in enumerate(reader, 1):
            records.append(
                {k: v for k, v in rec.items() if not (v == "" and k in _CSV_EMPTY_IS_NONE)}
            )
            numbers.append(rownum)
    meta: Any = None
    side = _sidecar(p)
    if side.is_file():
        try:
            meta = json.loads(side.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise UserError(f"{side.name}: expected JSON metadata ({e.msg})") from None
    return records, numbers, meta


def _read_parquet(p: Path) -> _Read:
    _pa, pq = _pyarrow()
    try:
        tbl = pq.read_table(p)
    except Exception as e:  # noqa: BLE001 — pyarrow raises many types for a broken file
        raise UserError(f"{p.name}: expected a parquet file ({e})") from None
    raw_meta = (tbl.schema.metadata or {}).get(_META_KEY.encode())
    meta = json.loads(raw_meta) if raw_meta else None
    _check_columns(p.name, tbl.column_names)
    records = [{k: v for k, v in r.items() if v is not None} for r in tbl.to_pylist()]
    return records, list(range(1, len(records) + 1)), meta


def _check_columns(name: str, columns: Sequence[str]) -> None:
    unknown = [c for c in columns if c not in _FIELDS]
    if unknown:
        raise UserError(
            f"{name}: unknown column(s) {unknown!r}; expected columns among {list(_FIELDS)!r}"
        )


def _format_of(p: Path) -> str:
    suffix = p.suffix.lower()
    if suffix not in SUFFIXES:
        raise UserError(
            f"cannot tell the format of {str(p)!r}: expected a suffix among {list(SUFFIXES)!r} "
            f"(got {suffix!r})"
        )
    return suffix


def _sidecar(p: Path) -> Path:
    return p.with_name(p.name + ".meta.json")


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError(
            "reading or writing .parquet needs pyarrow, which is not installed; expected it "
            "from the 'learn' extra: pip install 'orchestra[learn]' (or pip install pyarrow), "
            "or use .jsonl / .csv"
        ) from None
    return pa, pq
