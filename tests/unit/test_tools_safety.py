"""Tools: imports checked when the pool is validated, a failing tool never loses the paid call,
tools run off the event loop under the seconds limit, unsafe callables refused unless opted in."""

from __future__ import annotations

import asyncio
import functools
import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from orchestra import Budget, Orchestra
from orchestra.backends.base import Completion, CompletionRequest
from orchestra.errors import UserError
from orchestra.policies.base import Call, Route, RunView
from orchestra.spec import AgentSpec, ModelSpec, Pool, RefinerSpec, ToolSpec, UnsafeToolWarning
from orchestra.testing import FunctionBackend

M = ModelSpec(name="m", id="test/m", input_price=1, output_price=1, max_output_tokens=32)


def _pool(*tools: ToolSpec, **kw: Any) -> Pool:
    return Pool(models=(M,), agents=(AgentSpec(name="a", tools=tools),),
                refiner=RefinerSpec(kind="last"), **kw)


def _tool_then_answer(name: str, arguments: dict[str, Any] | None = None) -> FunctionBackend:
    """A model that calls ``name`` first, then answers with the tool's result."""

    def reply(req: CompletionRequest) -> Any:
        if req.messages[-1]["role"] == "tool":
            return f"tool said {req.messages[-1]['content']}"
        return Completion(text="", input_tokens=5, output_tokens=3, tool_calls=[
            {"id": "t1", "name": name, "arguments": arguments or {}}])

    return FunctionBackend(reply)


def _run(pool: Pool, backend: FunctionBackend, **kw: Any) -> Any:
    kw.setdefault("policy", "cheapest")
    return Orchestra(pool, backend=backend, store=False, **kw).run("q")


class _KeepRouting:
    """A policy that never answers: only a limit ends its run."""

    name = "keep-routing"

    def decide(self, view: RunView) -> Route:
        return Route([Call(agent="a")])


def _finished(result: Any) -> Any:
    return next(e for e in result.events if e.kind == "call_finished")


# --------------------------------------------------------------------- imports at validation
@pytest.mark.parametrize(("path", "words"), [
    ("no_such_module_xyz:fn", ["no_such_module_xyz", "PYTHONPATH"]),
    ("json:no_such_function", ["no_such_function", "fix the name"]),
    ("json", ["module:attr"]),
    ("json:__doc__", ["not a function"]),
])
def test_a_tool_that_does_not_import_fails_when_the_pool_is_validated(path: str,
                                                                      words: list[str]) -> None:
    be = FunctionBackend(lambda r: "x")
    with pytest.raises(UserError) as ei:
        _pool(ToolSpec(name="lookup", function=path))
    msg = str(ei.value)
    assert "'lookup'" in msg and all(w in msg for w in words), msg
    # The same from YAML data: an error before any call.
    data = {"models": [M.model_dump()], "refiner": {"kind": "last"},
            "agents": [{"name": "a", "tools": [{"name": "lookup", "function": path}]}]}
    with pytest.raises(UserError, match="lookup"):
        Pool.from_dict(data, source="p.yaml")
    assert be.calls == []


def test_duplicate_tool_names_are_refused() -> None:
    t = ToolSpec(name="same", function="json:dumps")
    with pytest.raises(UserError, match="duplicate tool names"):
        _pool(t, t)


# --------------------------------------------------------------------- a failing tool
def test_a_tool_that_stops_resolving_after_validation_keeps_the_paid_call(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "vanishing_tools_mod.py").write_text("def look(): return 'ok'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    pool = _pool(ToolSpec(name="look", function="vanishing_tools_mod:look"))
    import vanishing_tools_mod  # type: ignore[import-not-found]

    monkeypatch.delattr(vanishing_tools_mod, "look")
    be = _tool_then_answer("look")
    r = _run(pool, be)
    done = _finished(r)
    assert len(be.calls) == 2 and done.cost_usd > 0 and r.cost_usd == done.cost_usd
    assert "no 'look'" in done.tool_calls[0]["error"]
    assert done.tool_calls[0]["result"].startswith("error:")


@pytest.mark.parametrize("kind", ["raises", "exits", "unserialisable"])
def test_a_failing_tool_is_recorded_on_the_call_and_the_run_goes_on(kind: str) -> None:
    def bad() -> Any:
        if kind == "raises":
            raise RuntimeError("boom")
        if kind == "exits":
            sys.exit(3)
        loop: list[Any] = []
        loop.append(loop)
        return loop

    be = _tool_then_answer("bad")
    r = _run(_pool(ToolSpec(name="bad", function=bad)), be)
    done = _finished(r)
    assert r.answer and r.answer.startswith("tool said error:")
    assert done.cost_usd > 0 and len(be.calls) == 2
    assert done.tool_calls[0]["error"], done.tool_calls


def test_an_unknown_tool_name_is_recorded_as_a_tool_error() -> None:
    be = _tool_then_answer("nope")
    r = _run(_pool(ToolSpec(name="add", function="operator:add")), be)
    assert "unknown tool 'nope'" in _finished(r).tool_calls[0]["error"]


# --------------------------------------------------------------------- off the loop, on time
def test_a_sync_tool_runs_off_the_event_loop() -> None:
    where: list[int] = []

    def tool() -> str:
        where.append(threading.get_ident())
        return "ok"

    r = _run(_pool(ToolSpec(name="t", function=tool)), _tool_then_answer("t"))
    assert r.answer == "tool said ok" and where and where[0] != threading.get_ident()


def test_a_stuck_sync_tool_stops_at_the_seconds_limit() -> None:
    release = threading.Event()

    def stuck() -> str:
        release.wait(20)
        return "late"

    be = _tool_then_answer("stuck")
    t0 = time.monotonic()
    try:
        r = _run(_pool(ToolSpec(name="stuck", function=stuck)), be, budget=Budget(seconds=0.5),
                 policy=_KeepRouting())
        took = time.monotonic() - t0
    finally:
        release.set()
    assert took < 3, took  # the run does not wait for the thread
    assert r.stop_reason == "budget:seconds"
    done = _finished(r)
    assert done.cost_usd > 0 and r.cost_usd == done.cost_usd and len(be.calls) == 1
    assert "seconds limit" in done.tool_calls[0]["error"]
    assert "background" in done.tool_calls[0]["error"]
    assert done.error and "seconds" in done.error


def test_a_stuck_async_tool_is_cancelled_at_the_seconds_limit() -> None:
    cancelled: list[bool] = []

    async def stuck() -> str:
        try:
            await asyncio.sleep(20)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return "late"

    t0 = time.monotonic()
    r = _run(_pool(ToolSpec(name="stuck", function=stuck)), _tool_then_answer("stuck"),
             budget=Budget(seconds=0.5), policy=_KeepRouting())
    assert time.monotonic() - t0 < 3 and r.stop_reason == "budget:seconds"
    assert cancelled == [True] and _finished(r).cost_usd > 0


def test_the_event_loop_keeps_going_while_a_tool_runs() -> None:
    """Other branches (here a ticker) make progress while a sync tool blocks its thread."""
    ticks: list[float] = []

    def slow() -> str:
        time.sleep(0.4)
        return "done"

    async def main() -> Any:
        async def ticker() -> None:
            while True:
                ticks.append(time.monotonic())
                await asyncio.sleep(0.02)

        task = asyncio.create_task(ticker())
        try:
            return await Orchestra(_pool(ToolSpec(name="slow", function=slow)), policy="cheapest",
                                   backend=_tool_then_answer("slow"), store=False).arun("q")
        finally:
            task.cancel()

    r = asyncio.run(main())
    assert r.answer == "tool said done" and len(ticks) >= 8


# --------------------------------------------------------------------- unsafe callables
def _write_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, text: str) -> None:
    (tmp_path / f"{name}.py").write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))


UNSAFE_PATHS = ["os:system", "subprocess:getoutput", "builtins:eval", "builtins:exec",
                "builtins:compile", "builtins:__import__", "builtins:open", "shutil:rmtree",
                "sys:exit", "importlib:import_module", "pty:spawn", "os.path:exists",
                "posixpath:exists", "io:open", "runpy:run_path", "pickle:loads"]


@pytest.mark.parametrize("path", UNSAFE_PATHS)
def test_an_unsafe_tool_is_refused_without_opt_in(path: str) -> None:
    with pytest.raises(UserError) as ei:
        _pool(ToolSpec(name="sh", function=path))
    msg = str(ei.value)
    assert "'sh'" in msg and "unsafe" in msg and "allow_unsafe_tools" in msg, msg


@pytest.mark.parametrize("fn", [os.system, subprocess.getoutput, eval, exec, compile,
                                __import__, functools.partial(os.system, "true"),
                                functools.wraps(os.system)(lambda *a: 0)])
def test_an_unsafe_callable_is_refused_by_identity(fn: Any) -> None:
    with pytest.raises(UserError, match="unsafe"):
        _pool(ToolSpec(name="sh", function=fn))


def test_an_alias_of_an_unsafe_callable_is_refused(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    _write_module(tmp_path, monkeypatch, "innocent_tools_mod",
                  "from os import system as run_it\nfrom subprocess import getoutput as ask\n"
                  "ev = eval\n")
    for attr in ("run_it", "ask", "ev"):
        with pytest.raises(UserError, match="unsafe"):
            _pool(ToolSpec(name="t", function=f"innocent_tools_mod:{attr}"))


@pytest.mark.parametrize("where", ["pool", "tool"])
def test_an_opted_in_unsafe_tool_is_allowed_with_a_one_line_warning(where: str) -> None:
    tool = ToolSpec(name="sh", function="subprocess:getoutput", allow_unsafe=where == "tool")
    with pytest.warns(UnsafeToolWarning) as rec:
        pool = _pool(tool, allow_unsafe_tools=where == "pool")
    msg = str(rec[0].message)
    assert "\n" not in msg and "'sh'" in msg and "subprocess" in msg
    assert pool.agents[0].tools[0].name == "sh"


def test_an_opted_in_unsafe_tool_from_yaml(tmp_path: Path) -> None:
    p = tmp_path / "p.yaml"
    p.write_text("models: [{name: m, id: test/m, input_price: 1, output_price: 1}]\n"
                 "refiner: {kind: last}\n"
                 "agents: [{name: a, tools: [{name: sh, function: 'os:system'}]}]\n")
    with pytest.raises(UserError, match="allow_unsafe_tools"):
        Pool.load(p)
    p.write_text(p.read_text() + "allow_unsafe_tools: true\n")
    with pytest.warns(UnsafeToolWarning):
        Pool.load(p)


@pytest.mark.parametrize("path", ["json:dumps", "math:sqrt", "operator:add", "time:sleep"])
def test_ordinary_tools_pass_without_a_warning(path: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _pool(ToolSpec(name="t", function=path))
