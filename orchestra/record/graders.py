"""Answer graders: a model's text answer against an item's gold answers, a score in [0, 1].

Built in (:data:`GRADERS`):

``em``        normalised exact match with any alias: lowercase, punctuation and articles
              dropped, spaces squeezed (SQuAD's normalisation,
              :func:`orchestra.refiners.normalize_answer`).
``contains``  an alias, normalised, appears as whole words in the normalised answer (lenient:
              "It was Paris." is right for "Paris").
``f1``        token F1 between the normalised answer and the best alias.
``number``    the last number in the answer equals the gold number (GSM8K style): commas,
              ``$``, ``%`` and a trailing ``.0`` do not matter.
``letter``    the choice letter the answer picks (read by the one choice extractor,
              :func:`orchestra.outcomes.choices.extract_choice_letter`) equals the gold letter.

``auto`` (the default) grades each item by its set's grader (:attr:`LabelledItem.grader
<orchestra.record.sets.LabelledItem.grader>`: ``number`` for GSM8K, ``letter`` with choices,
``em`` otherwise). Anything else is a user's function, ``module:function`` or
``path/to/file.py:function``, called as ``fn(answer, gold)`` (``gold``: the list of aliases)
— or with ``item=`` too when it has a parameter named ``item`` — returning a bool or a number
in [0, 1].
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import re
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestra.errors import UserError
from orchestra.outcomes.choices import extract_choice_letter
from orchestra.record.sets import LabelledItem
from orchestra.refiners import normalize_answer

__all__ = [
    "GRADERS",
    "Grader",
    "contains_match",
    "exact_match",
    "last_number",
    "letter_match",
    "number_match",
    "parse_number",
    "resolve_grader",
    "token_f1",
]

# A number as written: -1,234.50 (thousands separators only in groups of three), 0.5, .5
_NUMBER = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?![\d])")


def exact_match(answer: str | None, gold: Sequence[str]) -> float:
    """1.0 when the normalised answer equals a normalised alias."""
    a = normalize_answer(answer or "")
    return float(any(a == normalize_answer(g) for g in gold))


def contains_match(answer: str | None, gold: Sequence[str]) -> float:
    """1.0 when a normalised alias appears as whole words in the normalised answer."""
    a = f" {normalize_answer(answer or '')} "
    return float(any((n := normalize_answer(g)) and f" {n} " in a for g in gold))


def token_f1(answer: str | None, gold: Sequence[str]) -> float:
    """SQuAD token F1 between the normalised answer and each alias; the best one."""
    pred = normalize_answer(answer or "").split()
    best = 0.0
    for g in gold:
        ref = normalize_answer(g).split()
        if not pred or not ref:
            best = max(best, float(pred == ref))
            continue
        common = sum((Counter(pred) & Counter(ref)).values())
        if common:
            p, r = common / len(pred), common / len(ref)
            best = max(best, 2 * p * r / (p + r))
    return best


def parse_number(text: str) -> float | None:
    """A number written alone (``$1,234.50``, ``18.0``, ``-3``, ``45%``), or None."""
    s = text.strip().strip("$").rstrip("%").replace(",", "").strip()
    s = s.lstrip("$").rstrip(".")
    try:
        x = float(s)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def last_number(text: str | None) -> float | None:
    """The last number in a text (GSM8K style), or None."""
    for m in reversed(list(_NUMBER.finditer(text or ""))):
        s = m.group(0)
        if any(ch.isdigit() for ch in s):
            return float(s.replace(",", ""))
    return None


def number_match(answer: str | None, gold: Sequence[str]) -> float:
    """1.0 when the last number in the answer equals a gold number (relative tolerance 1e-6)."""
    got = last_number(answer)
    if got is None:
        return 0.0
    for g in gold:
        want = parse_number(g)
        if want is None:
            want = last_number(g)
        if want is not None and abs(got - want) <= 1e-6 * max(1.0, abs(want)):
            return 1.0
    return 0.0


def letter_match(answer: str | None, gold: Sequence[str],
                 choices: Sequence[str] | None = None) -> float:
    """1.0 when the letter the answer picks is the gold letter."""
    n = len(choices) if choices else None
    letter = extract_choice_letter(answer, n, choices, anywhere=True)
    return float(letter is not None and any(letter == g.strip().upper() for g in gold))


#: Graders by name: ``fn(answer, item) -> score``.
GRADERS: dict[str, Callable[[str | None, LabelledItem], float]] = {
    "em": lambda a, it: exact_match(a, it.gold),
    "contains": lambda a, it: contains_match(a, it.gold),
    "f1": lambda a, it: token_f1(a, it.gold),
    "number": lambda a, it: number_match(a, it.gold),
    "letter": lambda a, it: letter_match(a, it.gold, it.choices),
}


@dataclass(frozen=True)
class Grader:
    """A chosen grader: its name and how it scores an answer.

    Attributes:
        spec: what was asked for (``auto``, ``em``, ``mymod:grade``...).
    """

    spec: str
    _fn: Callable[[str | None, LabelledItem], float]

    def name_for(self, item: LabelledItem) -> str:
        """The grader that scores ``item`` (``auto`` resolves per item)."""
        return item.grader if self.spec == "auto" else self.spec

    def __call__(self, answer: str | None, item: LabelledItem) -> float:
        """The score of ``answer`` for ``item``, in [0, 1].

        Raises:
            UserError: a user's function raised or returned something that is not a score.
        """
        try:
            value = self._fn(answer, item)
        except UserError:
            raise
        except Exception as e:
            raise UserError(f"grader {self.spec!r} raised {type(e).__name__}: {e} on question "
                            f"{item.id!r} (answer {answer!r:.60}); fix the function") from e
        return _score(value, self.spec, item)

    def check(self, item: LabelledItem) -> None:
        """Grade the item's own gold answer once, so a broken grader fails before any call.

        Raises:
            UserError: the grader raised or returned something that is not a score.
        """
        self(item.gold[0], item)


def _score(value: Any, spec: str, item: LabelledItem) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 1.0:
        return float(value)
    raise UserError(f"grader {spec!r} returned {value!r} for question {item.id!r}; expected a "
                    "bool or a number in [0, 1]")


def resolve_grader(spec: str | None) -> Grader:
    """The grader ``spec`` names: ``auto`` (None), a built-in name or ``module:function``.

    Raises:
        UserError: an unknown name, a module that does not import, or a missing or
            non-callable function.
    """
    spec = (spec or "auto").strip()
    if spec == "auto":
        return Grader("auto", lambda a, it: GRADERS[it.grader](a, it))
    if spec in GRADERS:
        return Grader(spec, GRADERS[spec])
    if ":" not in spec:
        raise UserError(f"unknown grader {spec!r}: expected auto, one of {sorted(GRADERS)!r}, "
                        "or a Python function as module:function (or path/to/file.py:function)")
    module_name, _, attr = spec.rpartition(":")
    module = _import(module_name, spec)
    fn = getattr(module, attr, None)
    if fn is None:
        found = sorted(n for n, v in vars(module).items()
                       if callable(v) and not n.startswith("_") and not inspect.isclass(v))
        raise UserError(f"grader {spec!r}: module {module_name!r} has no {attr!r}; expected a "
                        f"function, e.g. one of {found[:8]!r}")
    if not callable(fn):
        raise UserError(f"grader {spec!r}: {attr!r} is a {type(fn).__name__}, not a function")
    with_item = _takes_item(fn)

    def call(answer: str | None, item: LabelledItem) -> float:
        if with_item:
            return fn(answer, list(item.gold), item=item)  # type: ignore[no-any-return]
        return fn(answer, list(item.gold))  # type: ignore[no-any-return]

    return Grader(spec, call)


def _takes_item(fn: Callable[..., Any]) -> bool:
    try:
        return "item" in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False


def _import(module_name: str, spec: str) -> Any:
    """Import a module by name (the current folder is searched too) or from a ``.py`` path."""
    if module_name.endswith(".py") or "/" in module_name:
        path = Path(module_name)
        if not path.is_file():
            raise UserError(f"grader {spec!r}: file {module_name!r} does not exist; expected a "
                            "path to a .py file, or an importable module name")
        mod_spec = importlib.util.spec_from_file_location(f"_orchestra_grader_{path.stem}", path)
        if mod_spec is None or mod_spec.loader is None:
            raise UserError(f"grader {spec!r}: cannot load {module_name!r} as a Python module")
        module = importlib.util.module_from_spec(mod_spec)
        try:
            mod_spec.loader.exec_module(module)
        except Exception as e:
            raise UserError(f"grader {spec!r}: importing {module_name!r} failed: "
                            f"{type(e).__name__}: {e}") from e
        return module
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name.split(".")[0] or "" in sys.path or str(Path.cwd()) in sys.path:
            raise UserError(f"grader {spec!r}: cannot import {module_name!r} ({e}); expected a "
                            "module on the Python path or in the current folder") from e
    except Exception as e:
        raise UserError(f"grader {spec!r}: importing {module_name!r} failed: "
                        f"{type(e).__name__}: {e}") from e
    # The command line's script folder is on sys.path, not the current folder: try there too.
    sys.path.insert(0, str(Path.cwd()))
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise UserError(f"grader {spec!r}: cannot import {module_name!r} ({e}); expected a "
                        "module on the Python path or in the current folder") from e
    except Exception as e:
        raise UserError(f"grader {spec!r}: importing {module_name!r} failed: "
                        f"{type(e).__name__}: {e}") from e
    finally:
        sys.path.remove(str(Path.cwd()))
