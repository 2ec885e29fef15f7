"""Which data a trained artifact was trained on, and finding an artifact by the data it fits.

Every ``orchestra train`` writes ``trained_on.json`` beside an artifact (:func:`write_trained_on`):
the training data's name (a benchmark name like ``routerbench:train`` or the table file's
absolute path), its models, tasks, number of queries, a fingerprint of its queries and a short
hash of each query text (to count evaluated queries that were trained on). Artifacts written
before that file existed are read from their own config (``data``, ``models``, ``tasks``) where
it has them (:func:`read_trained_on`).

:func:`find_artifact` picks the artifact an evaluation uses when no ``path=`` is given: one of
the right kind in :func:`~orchestra.policies.learned.locations.artifacts_home` trained on the
same data (the same benchmark or file, another split), else one trained on the same models and
tasks; none, or several equally fitting, is an error naming the fix. An artifact trained on
models the evaluated table lacks is refused with the names, ``path=`` or not; one that lacks
some evaluated models is only found by ``path=`` (a leave-one-out study, or the GNN serving new
models), and the report names those models.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestra.errors import UserError

if TYPE_CHECKING:
    from orchestra.outcomes.table import OutcomeTable

__all__ = [
    "ARTIFACT_KINDS",
    "TRAINED_ON_FILE",
    "ArtifactChoice",
    "data_base",
    "data_identity",
    "find_artifact",
    "find_artifact_for_pool",
    "is_routerbench_pool",
    "read_trained_on",
    "write_trained_on",
]

#: Policies that load a trained artifact (``path=``); the artifact kind is the policy name.
ARTIFACT_KINDS = ("knn", "mlp", "mf", "gnn", "escalate", "rl")

#: The file beside an artifact that records its training data.
TRAINED_ON_FILE = "trained_on.json"

_KNOWN = ("routerbench", "llmrouter")


def _hash(text: str, n: int = 12) -> str:
    return hashlib.sha256(text.strip().encode("utf-8")).hexdigest()[:n]


def data_base(source: str) -> str:
    """What identifies a table across its splits: a benchmark name (``routerbench`` for
    ``routerbench:test``), a file's absolute path (``data.jsonl:train`` → the file), else the
    text as given."""
    head, sep, tail = source.rpartition(":")
    name = head if sep and tail.isalpha() and head else source
    if name in _KNOWN:
        return name
    p = Path(name).expanduser()
    return str(p.resolve()) if p.exists() else name


def data_identity(table: OutcomeTable, source: str) -> dict[str, Any]:
    """The identity of an outcome table: ``data`` (as named), ``base`` (:func:`data_base`),
    ``models``, ``tasks``, ``n_queries``, ``fingerprint`` (of the sorted query texts, models and
    tasks) and ``query_hashes`` (12 hex digits of each query text's SHA-256)."""
    hashes = sorted(_hash(t) for t in table.query_texts)
    models = list(table.models)
    tasks = list(table.tasks)
    fp = hashlib.sha256(json.dumps([hashes, sorted(models), sorted(tasks)]).encode()).hexdigest()
    return {"data": source, "base": data_base(source), "models": models, "tasks": tasks,
            "n_queries": table.n_queries, "fingerprint": fp[:16], "query_hashes": hashes}


def write_trained_on(artifact: str | Path, kind: str, table: OutcomeTable, source: str) -> Path:
    """Record beside an artifact the data it was trained on (``trained_on.json``)."""
    p = Path(artifact) / TRAINED_ON_FILE
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps({"kind": kind, **data_identity(table, source)}), encoding="utf-8")
    return p


def read_trained_on(artifact: str | Path) -> dict[str, Any] | None:
    """What an artifact records of its training data (``recorded``: from ``trained_on.json``,
    else from the artifact's own config, with only the fields it has), or None."""
    d = Path(artifact)
    f = d / TRAINED_ON_FILE
    if f.is_file():
        try:
            out = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        return {**out, "recorded": True} if isinstance(out, dict) else None
    for name in ("config.json", "rl.json"):
        try:
            cfg = json.loads((d / name).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if not isinstance(cfg, dict):
            continue
        train = cfg.get("train")
        data = cfg.get("data") or (train.get("data") if isinstance(train, dict) else None)
        if data is None:
            continue
        tasks = cfg.get("tasks")
        if isinstance(tasks, dict):
            tasks = tasks.get("vocab")
        models = cfg.get("models")
        return {"kind": cfg.get("kind"), "data": str(data), "base": data_base(str(data)),
                "models": list(models) if isinstance(models, list) else None,
                "tasks": list(tasks) if isinstance(tasks, list) else None,
                "n_queries": cfg.get("n_train"), "fingerprint": None, "recorded": False}
    return None


@dataclass(frozen=True)
class ArtifactChoice:
    """The artifact a policy will load and why.

    Attributes:
        path: the artifact directory.
        kind: the policy / artifact kind.
        found_by: ``"path="`` (given), ``"same data"`` or ``"same models and tasks"``.
        trained_on: :func:`read_trained_on` of it (None: not recorded).
        overlap: evaluated queries found among its training queries (None: unknown).
    """

    path: Path
    kind: str
    found_by: str
    trained_on: dict[str, Any] | None
    overlap: int | None

    def to_dict(self, models: Sequence[str] = ()) -> dict[str, Any]:
        """For the JSON report (the training query hashes left out); ``untrained_models``: the
        given (evaluated) models it was not trained on (None: its models are not recorded)."""
        tr = {k: v for k, v in (self.trained_on or {}).items() if k != "query_hashes"}
        trained = tr.get("models")
        return {"path": str(self.path), "kind": self.kind, "found_by": self.found_by,
                "trained_on": tr or None, "overlap": self.overlap,
                "untrained_models": None if trained is None
                else [m for m in models if m not in trained]}


def _model_mismatch(trained: Sequence[str] | None, evaluated: Sequence[str]) -> str | None:
    if trained is None:
        return None
    missing = [m for m in evaluated if m not in trained]
    extra = [m for m in trained if m not in evaluated]
    if not missing and not extra:
        return None
    parts = []
    if missing:
        parts.append(f"evaluated models it was not trained on: {missing}")
    if extra:
        parts.append(f"trained models the evaluated table lacks: {extra}")
    return "; ".join(parts)


def _task_mismatch(trained: Sequence[str] | None, evaluated: Sequence[str]) -> str | None:
    if trained is None:
        return None
    missing = [t for t in evaluated if t not in trained]
    return f"evaluated tasks it was not trained on: {missing}" if missing else None


def _choice(path: Path, kind: str, found_by: str, tr: dict[str, Any] | None,
            data: dict[str, Any]) -> ArtifactChoice:
    overlap = None
    if tr is not None and tr.get("query_hashes") is not None and data.get("query_hashes"):
        overlap = len(set(tr["query_hashes"]) & set(data["query_hashes"]))
    return ArtifactChoice(path=path, kind=kind, found_by=found_by, trained_on=tr,
                          overlap=overlap)


def _kind_of(d: Path, tr: dict[str, Any] | None) -> str | None:
    if tr is not None and tr.get("kind"):
        return str(tr["kind"])
    for kind in ARTIFACT_KINDS:
        if d.name.endswith(f"-{kind}"):
            return kind
    return None


def _artifacts_of_kind(root: Path, kind: str) -> list[tuple[Path, dict[str, Any] | None]]:
    """The artifact folders of ``kind`` under ``root`` (name order), each with what it records
    of its training data (:func:`read_trained_on`)."""
    out = []
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        if d.is_dir():
            tr = read_trained_on(d)
            if _kind_of(d, tr) == kind:
                out.append((d, tr))
    return out


def find_artifact(kind: str, path: str | None, data: dict[str, Any],
                  home: Path | None = None) -> ArtifactChoice:
    """The artifact a ``kind`` policy evaluated on ``data`` (:func:`data_identity`) loads.

    Args:
        kind: the artifact kind (:data:`ARTIFACT_KINDS`).
        path: the policy's ``path=`` (used as given, found like
            :func:`~orchestra.policies.learned.locations.resolve_artifact`), or None to search.
        data: the evaluated table's identity.
        home: where to search (default: :func:`~orchestra.policies.learned.locations.artifacts_home`).

    Raises:
        UserError: no artifact fits (naming ``path=`` and the ``orchestra train`` command),
            several fit equally, or the artifact was trained on models the evaluated table
            lacks (naming both sides). Without ``path=`` the model sets must be equal.
    """
    from orchestra.policies.learned.locations import artifacts_home, resolve_artifact

    models, tasks = list(data["models"]), list(data["tasks"])
    name = data.get("data") or "<table>"
    if path is not None:
        p = resolve_artifact(path, kind)
        tr = read_trained_on(p)
        trained = tr.get("models") if tr else None
        # Trained on models the table lacks: made for another pool. Evaluated models it was not
        # trained on are allowed with path= (a leave-one-out study; the GNN serves new models)
        # and named in the report.
        if trained is not None and any(m not in models for m in trained):
            raise UserError(
                f"the {kind} artifact {str(p)!r} was trained on {tr['data'] if tr else '?'!r} "
                f"whose models differ from {name!r}'s: {_model_mismatch(trained, models)}; "
                f"train one on outcomes of these models (`orchestra train {kind} --data "
                "<train table>`) and pass its path=")
        return _choice(p, kind, "path=", tr, data)
    root = home if home is not None else artifacts_home()
    same_data: list[tuple[Path, dict[str, Any]]] = []
    same_models: list[tuple[Path, dict[str, Any]]] = []
    seen: list[str] = []
    for d, tr in _artifacts_of_kind(root, kind):
        if tr is None:
            seen.append(f"{d.name} (its training data is not recorded)")
            continue
        why = _model_mismatch(tr.get("models"), models) or _task_mismatch(tr.get("tasks"), tasks)
        if why:
            seen.append(f"{d.name} (trained on {tr['data']!r}: {why})")
        elif data.get("base") is not None and tr.get("base") == data["base"]:
            same_data.append((d, tr))
        elif tr.get("models") is not None and tr.get("tasks") is not None:
            same_models.append((d, tr))
        else:
            seen.append(f"{d.name} (trained on {tr['data']!r}; its models or tasks are not "
                        "recorded, so it only serves the same data)")
    for found, how in ((same_data, "same data"), (same_models, "same models and tasks")):
        if len(found) == 1:
            return _choice(found[0][0], kind, how, found[0][1], data)
        if len(found) > 1:
            listed = [f"{d} (trained on {tr['data']!r})" for d, tr in found]
            raise UserError(
                f"several {kind} artifacts fit {name!r} ({how}): {listed}; choose one with "
                f"path=<artifact dir>, e.g. '{kind},path={found[0][0]}'")
    raise UserError(
        f"no trained {kind} router fits {name!r} (models {models}, tasks {tasks}); looked in "
        f"{str(root)!r}" + (f" and found only: {seen}" if seen else "") + "; pass "
        f"path=<artifact dir> (e.g. '{kind},path=DIR') or train one on a train table of these "
        f"models: `orchestra train {kind} --data <train table>`")


def is_routerbench_pool(model_ids: Sequence[str]) -> bool:
    """Whether every model replays a RouterBench table (ids ``replay/routerbench[-split]/<m>``,
    as ``orchestra eval --data routerbench`` and ``orchestra serve --pool replay:routerbench``
    build them): such a pool keeps the default ``routerbench-<kind>`` artifact."""
    def _rb(mid: str) -> bool:
        provider, _, rest = mid.partition("/")
        table = rest.partition("/")[0]
        return provider == "replay" and (table == "routerbench" or table.startswith("routerbench-"))

    return bool(model_ids) and all(_rb(m) for m in model_ids)


def _built_at(d: Path) -> int:
    """When an artifact was written (ns): its ``trained_on.json``, else its config."""
    for name in (TRAINED_ON_FILE, "config.json", "rl.json"):
        try:
            return (d / name).stat().st_mtime_ns
        except OSError:
            continue
    return 0


def find_artifact_for_pool(kind: str, models: Sequence[tuple[str, str]],
                           home: Path | None = None) -> ArtifactChoice:
    """The artifact a ``kind`` policy without ``path=`` loads to route over ``models``.

    Args:
        kind: the artifact kind (:data:`ARTIFACT_KINDS`).
        models: the (name, litellm id) of each model the policy's agent may use.
        home: where to search (default: :func:`~orchestra.policies.learned.locations.artifacts_home`).

    Returns:
        For a RouterBench replay pool (:func:`is_routerbench_pool`), ``routerbench-<kind>``
        (``found_by="routerbench default"``); otherwise the newest artifact of ``kind`` whose
        training models are exactly these models, each named by its pool name or its id
        (``found_by="pool models"``).

    Raises:
        UserError: nothing matches (naming the artifacts seen and what they were trained on,
            ``path=`` and ``orchestra train KIND --data <your recorded table>``), or the newest
            matching ones were written at the same time (listing them).
    """
    from orchestra.policies.learned.locations import artifacts_home, resolve_artifact

    names = [n for n, _ in models]
    if is_routerbench_pool([i for _, i in models]):
        p = resolve_artifact(None, kind)
        return _choice(p, kind, "routerbench default", read_trained_on(p), {})
    root = home if home is not None else artifacts_home()
    found: list[tuple[int, Path, dict[str, Any]]] = []
    seen: list[str] = []
    for d, tr in _artifacts_of_kind(root, kind):
        trained = tr.get("models") if tr is not None else None
        if tr is None or not trained:
            seen.append(f"{d.name} (its training models are not recorded)")
            continue
        covered = {n for n, i in models for t in trained if t in (n, i)}
        unknown = [t for t in trained if not any(t in (n, i) for n, i in models)]
        if unknown or covered != set(names):
            seen.append(f"{d.name} (trained on {tr.get('data')!r} with models {trained})")
            continue
        found.append((_built_at(d), d, tr))
    if found:
        found.sort(key=lambda f: f[0], reverse=True)
        tied = [f for f in found if f[0] == found[0][0]]
        if len(tied) > 1:
            listed = [f"{d} (trained on {tr.get('data')!r})" for _, d, tr in tied]
            raise UserError(
                f"several {kind} artifacts were trained on this pool's models {names}, written "
                f"at the same time: {listed}; choose one with path=<artifact dir>, e.g. "
                f"--param path={tied[0][1]}")
        _, d, tr = found[0]
        how = "pool models" if len(found) == 1 else f"pool models (newest of {len(found)})"
        return _choice(d, kind, how, tr, {})
    raise UserError(
        f"no trained {kind} router was trained on this pool's models {names}; looked in "
        f"{str(root)!r}" + (f" and found only: {seen}" if seen else "") + "; record outcomes "
        f"of these models (`orchestra record --pool <pool> --data <labelled set> --out "
        f"outcomes.jsonl`), then train one: `orchestra train {kind} --data <your recorded "
        f"table>`, or pass path=<artifact dir> (e.g. --param path=DIR)")
