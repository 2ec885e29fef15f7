"""The MasRouter-style team example (examples/team_policy.py) with a test backend: modes, roles
with their own system prompts and models, the policy's own call, and answer provenance."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from orchestra import Orchestra, RunResult
from orchestra.backends.base import CompletionRequest
from orchestra.testing import FunctionBackend, last_user_message, make_pool
from orchestra.trace.store import MemoryTraceStore

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "team_policy.py"


@pytest.fixture(scope="module")
def team() -> ModuleType:
    spec = importlib.util.spec_from_file_location("team_policy_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def reply(req: CompletionRequest) -> str:
    system = req.messages[0]["content"] if req.messages[0]["role"] == "system" else ""
    if "Reply with one word: single, debate or reflection" in last_user_message(req):
        return "debate, I think"
    return f"{req.model.name}:{system.split()[0] if system else '-'}"


def run(team: ModuleType, query: str, **params: object) -> tuple[RunResult, FunctionBackend]:
    pool = make_pool(qualities=[0.2, 0.9, 0.5])
    be = FunctionBackend(reply)
    orch = Orchestra(pool, backend=be, policy=team.TeamPolicy(pool, **params),
                     store=MemoryTraceStore())
    return orch.run(query), be


def test_reflection_gives_each_role_its_prompt_and_model(team: ModuleType) -> None:
    r, be = run(team, "How many legs do 3 spiders have?")
    roles = [c["role"] for s in r.steps for c in s["calls"]]
    assert roles == ["solver", "critic", "reviser"]
    # The strongest prior (m1) solves and revises; the critic is another model (the cheapest).
    assert [c.model for c in be.calls] == ["m1", "m0", "m1"]
    assert [c.messages[0]["content"] for c in be.calls] == [
        team.SYSTEM["solver"], team.SYSTEM["critic"], team.SYSTEM["reviser"]]
    assert "Critique: m0:Point" in be.calls[2].messages[-1]["content"]
    assert (r.answer_call() or {}).get("role") == "reviser" and r.answer == "m1:Give"


def test_debate_runs_two_voices_in_parallel_then_a_judge(team: ModuleType) -> None:
    r, be = run(team, "Is tea better than coffee?")
    first = next(s for s in r.steps if s["action"] == "route")
    assert sorted(c["role"] for c in first["calls"]) == ["proponent", "skeptic"]
    assert first["merge"] == "last"
    judge = be.calls[-1]
    assert "- proponent: m1:Give" in judge.messages[-1]["content"]
    assert "- skeptic: m0:Give" in judge.messages[-1]["content"]
    assert (r.answer_call() or {}).get("role") == "judge"


def test_no_cue_asks_a_model_on_the_budget(team: ModuleType) -> None:
    r, _be = run(team, "Who wrote Hamlet?")
    asked = next(s for s in r.steps if s["action"] == "policy_call")["calls"][0]
    assert asked["role"] == "policy" and asked["model"] == "m0" and asked["cost_usd"] > 0
    decided = next(s for s in r.steps if s["action"] == "route")
    assert decided["scores"]["mode"] == "debate" and decided["scores"]["by"] == "asked m0"
    assert r.cost_usd == pytest.approx(sum(c["cost_usd"] for s in r.steps for c in s["calls"]))


def test_without_asking_a_plain_question_gets_one_solver(team: ModuleType) -> None:
    r, be = run(team, "Who wrote Hamlet?", ask=False)
    assert [c.model for c in be.calls] == ["m1"]
    assert r.answer == "m1:Answer" and (r.answer_call() or {}).get("role") == "solver"
