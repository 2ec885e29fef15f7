"""The file a recording writes: outcome rows appended and flushed as each answer is graded.

The file is an outcome table (:mod:`orchestra.outcomes.table_io`) at every moment, so a kill
leaves a table that loads, and ``--resume`` continues it:

- ``.jsonl`` and ``.csv``: rows are appended to the file itself (a CSV gets its header first);
- ``.parquet`` cannot be appended to: rows go to ``<file>.rows.jsonl`` beside it, and the
  Parquet file is written from all rows when the recording ends (or is interrupted).

Answers that could not be recorded (a provider error, a prompt too long for the model) go to
``<file>.failures.jsonl`` with what they cost, so a resumed recording counts that spend against
its budget; ``--resume`` asks again for those pairs.

When a recording ends, the table is rewritten once, atomically, with its metadata: the query
table (gold answer, options), the models' prices and what was recorded how (pool, sets, grader,
all aliases of each gold answer). A row cut short by a kill (the last line only) is dropped
when the file is read again.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError

from orchestra.errors import UserError
from orchestra.outcomes.rows import OutcomeRow
from orchestra.outcomes.table import OutcomeTable
from orchestra.outcomes.table_io import SUFFIXES

__all__ = ["OutcomeFile", "Prior"]

_FIELDS = list(OutcomeRow.model_fields)
_JSONL_META = "_table"
# As table_io reads CSV: an empty optional cell is absent.
_CSV_OPTIONAL = {"latency_s", "input_tokens", "output_tokens", "response", "cost_estimated"}


@dataclass
class Prior:
    """What an earlier recording left in the file.

    Attributes:
        rows: its outcome rows (first of any repeated pair).
        queries: its query table entries by id (from the file's metadata), if any.
        models: its model infos by name (from the file's metadata), if any.
        meta: its table metadata's ``meta``, if any.
        failures: its failed answers (``query_id, model, cost_usd, error``).
        dropped_tail: whether a row cut short by a kill was dropped.
    """

    rows: list[OutcomeRow] = field(default_factory=list)
    queries: dict[str, dict[str, Any]] = field(default_factory=dict)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    dropped_tail: bool = False

    @property
    def spent_usd(self) -> float:
        """USD the earlier attempts spent: rows and failures."""
        return sum(r.cost_usd for r in self.rows) + sum(float(f.get("cost_usd") or 0.0)
                                                         for f in self.failures)


class OutcomeFile:
    """An outcome table file being recorded.

    Args:
        path: the ``.jsonl``, ``.csv`` or ``.parquet`` file.
        resume: continue an existing file; without it an existing file is an error.

    Raises:
        UserError: an unknown suffix, or an existing file without ``resume``.
    """

    def __init__(self, path: str | Path, *, resume: bool) -> None:
        self.path = Path(path)
        self.format = self.path.suffix.lower()
        if self.format not in SUFFIXES:
            raise UserError(f"--out {str(self.path)!r}: expected a suffix among "
                            f"{list(SUFFIXES)!r} (got {self.format!r})")
        self.rows_path = (self.path.with_name(self.path.name + ".rows.jsonl")
                          if self.format == ".parquet" else self.path)
        self.failures_path = self.path.with_name(self.path.name + ".failures.jsonl")
        existing = [p for p in (self.path, self.rows_path, self.failures_path) if p.exists()]
        if existing and not resume:
            raise UserError(f"--out {str(self.path)!r} already exists; pass --resume to continue "
                            "that recording (recorded pairs are skipped, their cost counts "
                            "toward --budget-usd), or choose another --out")
        self.resume = resume
        self._out: IO[str] | None = None
        self._fail: IO[str] | None = None

    # ------------------------------------------------------------------ reading
    def read_prior(self) -> Prior:
        """What earlier attempts recorded (empty for a new file).

        Raises:
            UserError: a damaged row other than the last one, or a Parquet file that is not
                an outcome table.
        """
        prior = Prior()
        if self.format == ".parquet" and self.path.is_file():
            table = OutcomeTable.read(self.path)
            prior.rows = [OutcomeRow.model_validate(r) for r in table.to_records()]
            prior.queries = {q.query_id: q.model_dump() for q in table.query_rows}
            prior.models = {n: m.model_dump(exclude={"name"})
                            for n, m in table.models_info.items()}
            prior.meta = dict(table.meta)
        if self.rows_path.is_file():
            if self.format == ".csv":
                rows, dropped = self._read_csv()
            else:
                rows, dropped, head = self._read_jsonl(self.rows_path)
                prior.queries.update({q["query_id"]: q for q in head.get("queries") or []})
                prior.models.update(head.get("models") or {})
                prior.meta = prior.meta or dict(head.get("meta") or {})
            prior.rows += rows
            prior.dropped_tail = dropped
        if self.format == ".csv":
            side = self.path.with_name(self.path.name + ".meta.json")
            if side.is_file():
                with contextlib.suppress(json.JSONDecodeError, KeyError, TypeError,
                                         AttributeError):  # rewritten at the end anyway
                    data = json.loads(side.read_text(encoding="utf-8"))
                    prior.queries = {q["query_id"]: q for q in data.get("queries") or []}
                    prior.models = dict(data.get("models") or {})
                    prior.meta = dict(data.get("meta") or {})
        if self.failures_path.is_file():
            prior.failures = self._read_failures()
        seen: set[tuple[str, str]] = set()
        unique = []
        for r in prior.rows:
            if (r.query_id, r.model) not in seen:
                seen.add((r.query_id, r.model))
                unique.append(r)
        prior.rows = unique
        return prior

    def _read_jsonl(self, path: Path) -> tuple[list[OutcomeRow], bool, dict[str, Any]]:
        """The rows, whether a cut-short last row was dropped, and the metadata line's
        object (``{}`` when there is none)."""
        rows: list[OutcomeRow] = []
        head: dict[str, Any] = {}
        data = path.read_bytes()
        lines = data.split(b"\n")  # the last piece is what follows the last newline
        good_end = 0
        dropped = False
        for i, raw in enumerate(lines):
            if raw.strip():
                try:
                    obj = json.loads(raw)
                    if isinstance(obj, dict) and _JSONL_META in obj and len(obj) == 1:
                        head = dict(obj[_JSONL_META] or {})
                    else:
                        rows.append(OutcomeRow.model_validate(obj))
                except (json.JSONDecodeError, UnicodeDecodeError, ValidationError, TypeError,
                        KeyError) as e:
                    if any(x.strip() for x in lines[i + 1:]):
                        raise UserError(f"{path.name} line {i + 1}: not an outcome row "
                                        f"({str(e).splitlines()[0][:120]}); expected one JSON "
                                        "row a line — fix or delete that line, then --resume"
                                        ) from None
                    dropped = True  # the last row, cut short by a kill
                    break
            good_end += len(raw) + (1 if i < len(lines) - 1 else 0)
        if dropped or not data.endswith(b"\n"):
            with path.open("r+b") as f:  # the next row must start on a line of its own
                f.truncate(good_end)
                if good_end and not dropped and not data.endswith(b"\n"):
                    f.seek(0, os.SEEK_END)
                    f.write(b"\n")
        return rows, dropped, head

    def _read_csv(self) -> tuple[list[OutcomeRow], bool]:
        text = self.path.read_text(encoding="utf-8")
        reader = csv.DictReader(io.StringIO(text, newline=""))
        records = list(reader)
        rows: list[OutcomeRow] = []
        dropped = False
        for n, rec in enumerate(records, 1):
            try:
                if None in rec or any(v is None for v in rec.values()):
                    raise ValueError("wrong number of cells")
                clean = {k: v for k, v in rec.items() if not (v == "" and k in _CSV_OPTIONAL)}
                rows.append(OutcomeRow.model_validate(clean))
            except (ValidationError, ValueError) as e:
                if n < len(records):
                    raise UserError(f"{self.path.name} row {n}: not an outcome row "
                                    f"({str(e).splitlines()[0][:120]}); fix or delete it, then "
                                    "--resume") from None
                dropped = True
        if dropped or not text.endswith("\n"):
            self._rewrite_csv(rows)
        return rows, dropped

    def _rewrite_csv(self, rows: Iterable[OutcomeRow]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with tmp.open("w", encoding="utf-8", newline="") as f:
            w = csv.DictWriter(f, fieldnames=_FIELDS)
            w.writeheader()
            for r in rows:
                w.writerow(_csv_cells(r))
        os.replace(tmp, self.path)

    def _read_failures(self) -> list[dict[str, Any]]:
        out = []
        for line in self.failures_path.read_text(encoding="utf-8").splitlines():
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill: its answer is asked again
            if isinstance(obj, dict):
                out.append(obj)
        return out

    # ------------------------------------------------------------------ writing
    def open(self) -> None:
        """Open the file for appending (a new CSV gets its header)."""
        self.rows_path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.rows_path.exists() or self.rows_path.stat().st_size == 0
        if self.format == ".csv":
            self._out = self.rows_path.open("a", encoding="utf-8", newline="")
            if new:
                csv.DictWriter(self._out, fieldnames=_FIELDS).writeheader()
                self._out.flush()
        else:
            self._out = self.rows_path.open("a", encoding="utf-8")

    def append(self, row: OutcomeRow) -> None:
        """Append one row and flush it to the OS (a kill after this keeps it)."""
        assert self._out is not None, "open() first"
        if self.format == ".csv":
            csv.DictWriter(self._out, fieldnames=_FIELDS).writerow(_csv_cells(row))
        else:
            self._out.write(json.dumps(row.model_dump(), ensure_ascii=False) + "\n")
        self._out.flush()

    def append_failure(self, record: Mapping[str, Any]) -> None:
        """Append a failed answer (``query_id, model, cost_usd, error, trace_id``) and flush."""
        if self._fail is None:
            self._fail = self.failures_path.open("a", encoding="utf-8")
        self._fail.write(json.dumps(dict(record), ensure_ascii=False) + "\n")
        self._fail.flush()

    def close(self) -> None:
        for f in (self._out, self._fail):
            if f is not None:
                f.close()
        self._out = self._fail = None

    def finalise(self, rows: list[OutcomeRow], *, queries: list[dict[str, Any]],
                 models_info: Mapping[str, Mapping[str, Any]], meta: Mapping[str, Any]) -> Path:
        """Write the whole table with its metadata, atomically; for Parquet, then drop the rows
        file. ``queries`` may list queries without rows: only those with rows are kept."""
        self.close()
        with_rows = {r.query_id for r in rows}
        table = OutcomeTable(rows, queries=[q for q in queries if q["query_id"] in with_rows],
                             models_info=dict(models_info), meta=dict(meta),
                             source=self.path.name)
        tmp = self.path.with_name(f".{self.path.stem}.tmp{self.path.suffix}")
        table.write(tmp)
        if self.format == ".csv":
            os.replace(tmp.with_name(tmp.name + ".meta.json"),
                       self.path.with_name(self.path.name + ".meta.json"))
        os.replace(tmp, self.path)
        if self.format == ".parquet" and self.rows_path.exists():
            self.rows_path.unlink()
        return self.path


def _csv_cells(row: OutcomeRow) -> dict[str, Any]:
    return {k: ("" if v is None else v) for k, v in row.model_dump().items()}

