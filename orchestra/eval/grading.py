"""Grading: the score of a run's final answer, from the recorded outcomes.

When the run says which call the answer came from (``RunResult.answer_from``: a route call
whose output is the answer, outside a vote) that call's model is credited: the **recorded
score** of that (query, model) — so two models that gave the same text are told apart, and a
policy that answers with an earlier round's call (a cascade) is credited with the right one.
Otherwise the final answer is traced back to the round that produced it (the last
:class:`~orchestra.trace.events.Refined` event whose output is the answer):

- one answer in that round (a routed call): the **recorded score** of that (query, model);
- several answers merged by the vote (an ensemble): on a multiple-choice query with a gold
  letter, 1 if the voted letter (:func:`orchestra.refiners.extract_short_answer`, ``choice``)
  is the gold letter, else 0; on other queries, the recorded score of the model(s) whose output
  is the answer (the vote returns one of the outputs; the mean if several models gave that very
  text). A vote over pairs recorded without a response (LLMRouter) cannot be graded: the policy
  is reported with an error instead of a made-up score;
- no answer (no call succeeded, or the budget allowed none): 0.

An answer that no round produced (the policy answered with its own text) is graded as a letter
against the gold letter on a multiple-choice query, else by the recorded score of the calls
that returned that very text; otherwise it cannot be graded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from orchestra.errors import UserError
from orchestra.trace.events import CallFinished, Event, Refined

if TYPE_CHECKING:
    from orchestra.outcomes.table import OutcomeTable
    from orchestra.runtime import RunResult

__all__ = ["GRADING", "EvalQuery", "Grader", "grade_run"]

#: The grading rules in one line (written into every JSON report).
GRADING = (
    "final answer traced to its round: one answer → the recorded score of that (query, model); "
    "a vote over several answers → voted letter vs gold letter on multiple-choice queries, else "
    "the recorded score of the model(s) whose output won; no answer → 0"
)


class _Ungradable(UserError):
    pass


@dataclass(frozen=True)
class EvalQuery:
    """One query of the table as the runs see it.

    Attributes:
        qi: its row in the table's score matrix.
        gold: the gold letter (upper case) on a multiple-choice query with one, else None.
    """

    qi: int
    query_id: str
    text: str
    task: str
    gold: str | None


class Grader:
    """Grades run results against a table (score matrix, responses, gold letters).

    Attributes:
        queries: the table's queries, in table order.
    """

    def __init__(self, table: OutcomeTable) -> None:
        from orchestra.outcomes.table import OutcomeLookupError

        self._table = table
        self._score = np.nan_to_num(table.score_matrix(), nan=0.0)
        self._mindex = {m: j for j, m in enumerate(table.models)}
        self._lookup_error = OutcomeLookupError
        self.queries = [
            EvalQuery(qi=i, query_id=q.query_id, text=q.query, task=q.task,
                      gold=q.gold.strip().upper()
                      if (q.gold and q.choices and len(q.gold.strip()) == 1) else None)
            for i, q in enumerate(table.query_rows)
        ]

    def _has_response(self, qid: str, model: str) -> bool:
        try:
            return self._table.response(qid, model) is not None
        except self._lookup_error:
            return False

    def grade(self, q: EvalQuery, answer: str | None, events: Sequence[Event],
              answer_from: str | None = None) -> tuple[float, bool]:
        """(score, aggregated) of a run that answered ``answer`` and emitted ``events``;
        ``answer_from``: the call id the run says the answer came from.

        Raises:
            UserError: the answer cannot be graded from the recordings.
        """
        from orchestra.refiners import extract_short_answer

        if not answer:
            return 0.0, False
        credited = self._credited_call(answer, events, answer_from)
        if credited is not None:
            return self._mean_score(q, [credited]), False
        src = next((ev for ev in reversed(events)
                    if isinstance(ev, Refined) and ev.output == answer and ev.inputs), None)
        if src is None:
            # The policy answered with its own text: grade what can be graded.
            if q.gold is not None:
                return float(extract_short_answer(answer, "choice") == q.gold), False
            outs = [ev.model for ev in events if isinstance(ev, CallFinished)
                    and ev.error is None and ev.output == answer]
            if not outs:
                raise _Ungradable(f"the answer to query {q.query_id!r} is neither a round's "
                                  "output nor a graded letter; cannot grade it from recordings")
            return self._mean_score(q, outs), False
        inputs = src.inputs
        if len(inputs) == 1:
            return self._mean_score(q, [inputs[0]["model"]]), False
        missing = [i["model"] for i in inputs if not self._has_response(q.query_id, i["model"])]
        if missing:
            raise _Ungradable(
                f"a vote over {len(inputs)} outputs on query {q.query_id!r} includes models "
                f"recorded without a response ({missing}); a vote over recordings that hold no "
                "answer text cannot be graded (this table records scores only)"
            )
        if q.gold is not None:
            return float(extract_short_answer(answer, "choice") == q.gold), True
        winners = [i["model"] for i in inputs if i["output"] == answer]
        return self._mean_score(q, winners or [inputs[0]["model"]]), True

    @staticmethod
    def _credited_call(answer: str, events: Sequence[Event], answer_from: str | None
                       ) -> str | None:
        """The model of the route call ``answer_from`` names, when its output is the answer
        and no vote over several outputs chose it (a vote is graded by the vote's rule)."""
        if not answer_from:
            return None
        call = next((ev for ev in events if isinstance(ev, CallFinished)
                     and ev.call_id == answer_from), None)
        if call is None or call.role in ("refine", "policy") or call.error is not None \
                or call.output != answer:
            return None
        voted = any(isinstance(ev, Refined) and ev.round == call.round and len(ev.inputs) > 1
                    and ev.output == answer for ev in events)
        return None if voted else call.model

    def _mean_score(self, q: EvalQuery, models: Sequence[str]) -> float:
        vals = []
        for m in models:
            j = self._mindex.get(m)
            vals.append(self._score[q.qi, j] if j is not None else 0.0)
        return float(np.mean(vals)) if vals else 0.0


def grade_run(table: OutcomeTable, query_id: str, result: RunResult) -> float:
    """The score of one run's final answer (see the module docstring for the rules).

    Raises:
        UserError: the answer cannot be graded from the recordings.
    """
    g = Grader(table)
    qi = table.query_index(query_id)
    return g.grade(g.queries[qi], result.answer, result.events, result.answer_from)[0]
