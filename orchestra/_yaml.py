"""The one YAML loader for files a user hands orchestra (pools, policy recipes).

``yaml.safe_load`` is safe from code execution but not from hostile or mistaken files: an alias
bomb (a few lines whose aliases expand to billions of values) hangs whatever walks the result,
and a duplicate key silently keeps the last value. :func:`load_yaml` refuses both, and every
problem is one line naming the file, the line and the fix. It imports only PyYAML, so
``orchestra pools list`` stays light.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from orchestra.errors import UserError

__all__ = ["MAX_ALIAS_VALUES", "MAX_YAML_BYTES", "load_yaml", "read_yaml_file", "shorten"]

MAX_ALIAS_VALUES = 10_000
"""The most values aliases (``*name``) may add to a document once expanded."""
MAX_YAML_BYTES = 4 << 20
"""The largest pool or recipe file read (4 MiB); real ones are a few KiB."""


def shorten(text: str, limit: int = 200) -> str:
    """``text`` on one line, cut to ``limit`` characters (error messages never carry a whole
    hostile input)."""
    one = " ".join(str(text).split())
    return one if len(one) <= limit else one[: limit - 1] + "…"


class _Refused(Exception):
    def __init__(self, message: str, node: yaml.Node) -> None:
        super().__init__(message)
        self.line = node.start_mark.line + 1


class _Loader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys (merge keys ``<<`` may still be overridden)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: SafeLoader's own error names it
                continue
            if first is not None:
                raise _Refused(f"duplicate key {shorten(repr(key), 60)} (first given on line "
                               f"{first}); keep one of them", key_node)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a document whose aliases would add more than :data:`MAX_ALIAS_VALUES` values, or
    that contains itself (a recursive alias)."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    distinct = 0

    def size(node: yaml.Node) -> int:
        nonlocal distinct
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in on_path:
            raise _Refused("a recursive alias (a value that contains itself); write the value "
                           "out instead", node)
        distinct += 1
        total = 1
        if isinstance(node, yaml.SequenceNode | yaml.MappingNode):
            on_path.add(key)
            children = (node.value if isinstance(node, yaml.SequenceNode)
                        else [n for pair in node.value for n in pair])
            for child in children:
                total += size(child)
                if total - distinct > MAX_ALIAS_VALUES:
                    raise _Refused(f"aliases (*name) expand this file beyond "
                                   f"{MAX_ALIAS_VALUES:,} values (an alias bomb?); write the "
                                   "values out or use fewer aliases", child)
            on_path.discard(key)
        sizes[key] = total
        return total

    size(root)


def load_yaml(text: str, source: str) -> Any:
    """Parse one YAML document safely; a problem raises a one-line :class:`UserError` naming
    ``source`` and the line."""
    loader = _Loader(text)
    try:
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _check_expansion(node)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except _Refused as e:
        raise UserError(f"{source} line {e.line}: {e}") from None
    except RecursionError:
        raise UserError(f"{source}: nested too deeply to read; flatten the YAML") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" line {mark.line + 1}" if mark is not None else ""
        what = shorten(" ".join(x for x in (e.context, e.problem) if x), 160)
        raise UserError(f"{source}{where}: not valid YAML ({what}); fix the YAML syntax") from None
    except yaml.YAMLError as e:
        raise UserError(f"{source}: not valid YAML ({shorten(str(e), 160)}); fix the YAML "
                        "syntax") from None


def read_yaml_file(path: str | Path, what: str = "YAML file") -> Any:
    """Read and parse ``path`` with :func:`load_yaml`: a missing file, a directory, a binary or
    non-UTF-8 file, or one over :data:`MAX_YAML_BYTES` is a one-line :class:`UserError`."""
    p = Path(path)
    shown = shorten(repr(str(p)), 160)
    try:
        if p.is_dir():
            raise UserError(f"{what} {shown} is a directory; give a .yaml file inside it")
        with p.open("rb") as f:
            raw = f.read(MAX_YAML_BYTES + 1)
    except FileNotFoundError:
        raise UserError(f"{what} {shown} does not exist") from None
    except OSError as e:
        raise UserError(f"cannot read {what} {shown}: {e.strerror or e}") from None
    if len(raw) > MAX_YAML_BYTES:
        raise UserError(f"{what} {shown} is larger than {MAX_YAML_BYTES >> 20} MiB; expected a "
                        "small YAML file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{what} {shown} is not UTF-8 text (byte {e.start}); give a YAML "
                        "file") from None
    if "\x00" in text:
        raise UserError(f"{what} {shown} is a binary file, not YAML; give a YAML file")
    return load_yaml(text, str(p))
