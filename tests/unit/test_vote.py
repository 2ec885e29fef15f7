"""The vote refiner: agreeing answers count together; ties go to the agreed core, then to an
answer on the question's topic, then to the quality prior (orchestra/refiners.py)."""

from __future__ import annotations

from orchestra import Orchestra
from orchestra.refiners import vote
from orchestra.spec import Pool
from orchestra.testing import ScriptedBackend
from orchestra.trace.store import MemoryTraceStore

HAMLET = "Who wrote Hamlet?"
# What the embedded models answered in the bug report (greedy, the pool's old prompts).
GEMMA_SAID, SMOLLM2_SAID = "King Lear", "Hamlet by William Shakespeare"


def local_priors() -> dict[str, float]:
    return {m.name: m.quality or 0.0 for m in Pool.load("local").models}


def test_hamlet_tie_goes_to_the_answer_on_the_question_not_to_the_higher_prior() -> None:
    prio = local_priors()
    assert prio["gemma3"] > prio["smollm2"]  # the prior alone would pick King Lear
    idx, votes = vote([GEMMA_SAID, SMOLLM2_SAID], priority=[prio["gemma3"], prio["smollm2"]],
                      query=HAMLET)
    assert idx == 1 and votes == {"king lear": 1, "hamlet by william shakespeare": 1}
    # The order of the outputs does not matter.
    idx, _ = vote([SMOLLM2_SAID, GEMMA_SAID], priority=[prio["smollm2"], prio["gemma3"]],
                  query=HAMLET)
    assert idx == 0


def test_hamlet_through_the_runtime_on_the_local_pool() -> None:
    # The refine node hands the question to the vote; the ensemble asks both models.
    backend = ScriptedBackend({"gemma3": GEMMA_SAID, "smollm2": SMOLLM2_SAID})
    o = Orchestra("local", policy="ensemble", backend=backend, store=MemoryTraceStore())
    r = o.run(HAMLET)
    assert r.answer is not None and "Shakespeare" in r.answer
    refined = next(e for e in r.events if e.kind == "refined")
    assert refined.refiner == "vote" and len(refined.inputs) == 2  # type: ignore[attr-defined]


def test_without_the_question_ties_still_go_to_the_prior() -> None:
    idx, _ = vote([GEMMA_SAID, SMOLLM2_SAID], priority=[0.35, 0.25])
    assert idx == 0


def test_an_answer_contained_in_another_agrees_with_it_and_the_shorter_form_wins() -> None:
    idx, votes = vote(["Hamlet by William Shakespeare.", "William Shakespeare", "Marlowe"],
                      priority=[0.9, 0.1, 0.5], query=HAMLET)
    assert votes == {"hamlet by william shakespeare": 2, "william shakespeare": 2, "marlowe": 1}
    assert idx == 1
    # Whole words only: "paris" is not inside "parisian".
    _, votes = vote(["Paris", "Parisian cafe"])
    assert votes == {"paris": 1, "parisian cafe": 1}


def test_the_majority_beats_an_on_topic_answer() -> None:
    idx, votes = vote(["Berlin", "The capital of France is Lyon", "Berlin"],
                      query="What is the capital of France?")
    assert votes["berlin"] == 2 and idx == 0


def test_an_echo_of_the_question_is_not_on_topic() -> None:
    # "Hamlet" only repeats the question: the prior decides between it and King Lear.
    idx, _ = vote(["Hamlet", GEMMA_SAID], priority=[0.1, 0.9], query=HAMLET)
    assert idx == 1


def test_letters_and_numbers_agree_only_when_equal() -> None:
    idx, votes = vote(["The answer is (B).", "B", "A"])
    assert votes == {"B": 2, "A": 1} and idx in (0, 1)
    _, votes = vote(["18", "118", "18.5"], kind="number")
    assert votes == {"18": 1, "118": 1, "18.5": 1}
    # A number is never "on topic", even when the question holds it: the prior decides.
    idx, _ = vote(["12", "7"], priority=[0.1, 0.9], query="What is 5 + 7? Not 12.")
    assert idx == 1


def test_outputs_with_no_answer_are_left_out() -> None:
    assert vote(["", "  "]) == (0, {})
    assert vote(["", "Paris"]) == (1, {"paris": 1})
