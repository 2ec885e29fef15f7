"""The OpenAI-compatible ASGI app of ``orchestra serve`` (Starlette).

:func:`create_app` builds it; any ASGI server runs it (uvicorn in ``orchestra serve``, Ray Serve
through ``serve.ingress``). Each ``POST /v1/chat/completions`` is one run of an
:class:`~orchestra.runtime.Orchestra` over the server's pool, stored as a trace:

1. the API key is checked (when the server has a key store) and the body validated
   (:mod:`orchestra.serve.protocol`); any problem is an OpenAI-shaped 4xx before anything runs;
2. the model name picks the policy; the key's budget is held (reserved) for the request, and the
   run's budget is that hold, so the ledger never spends past it;
3. the run goes to the policy with the whole conversation: the last user message is the query,
   the earlier turns its ``history``;
4. the answer comes back with ``model`` = the model whose output became the answer, ``usage``
   summed over every call, an ``orchestra`` object and ``x-orchestra-*`` headers; the hold is
   settled with what was spent, whatever happened (error, timeout, disconnect).

A client that goes away cancels its run: the trace records it as interrupted (the runtime's
``error`` event) and the hold is settled with the spend so far.

``POST /v1/feedback`` grades a finished run (:meth:`Server.feedback`): the feedback goes through
:meth:`Orchestra.feedback <orchestra.runtime.Orchestra.feedback>`, so the trace store keeps it (a
``feedback`` event, the score ``orchestra traces export`` gives the run) and the policy that
routed the run (an online one such as ``bandit``) observes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import math
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from orchestra.backends.base import Backend
from orchestra.errors import RunError, UserError
from orchestra.policies.base import Policy
from orchestra.runtime import Orchestra, RunResult
from orchestra.serve.metrics import Metrics, MetricsMiddleware
from orchestra.serve.protocol import (
    SCHEMA_VERSION,
    ApiError,
    ChatRequest,
    FeedbackRequest,
    Knobs,
    conversation,
    feedback_error,
    knobs_from_headers,
    parse_model,
    validation_error,
)
from orchestra.spec import Budget, Pool
from orchestra.trace.events import INTERRUPTED, CallFinished, ErrorEvent, Event, event_to_dict
from orchestra.trace.store import TraceStore

__all__ = ["DEFAULT_MAX_BODY", "Server", "create_app"]

#: The largest request body accepted (bytes); a bigger one is refused with a 400.
DEFAULT_MAX_BODY = 4 * 1024 * 1024
#: Seconds the HTTP layer waits past the run's own ``seconds`` limit before it gives up.
_GRACE_S = 5.0
#: A streamed response sends a comment line at least this often while the run decides.
_KEEPALIVE_S = 10.0
#: Characters per content chunk of a streamed answer.
_CHUNK_CHARS = 200
#: Resolved policies kept per (name, params), so a learned policy loads its artifact once.
_POLICY_CACHE = 32
#: The policy that routed each of this many recent runs is remembered, so that their feedback
#: reaches that very object (older runs, and other replicas' runs, resolve it from the run's meta).
_ROUTED_RUNS = 4096
#: The run-meta key holding the routing knobs a request gave (to find its policy at feedback).
KNOBS_META = "orchestra_knobs"


def _open_keys(keys: Any) -> Any:
    """The key store: an object, or a path for :class:`orchestra.serve.keys.KeyStore` (imported
    here: the server runs without it when it has no keys)."""
    if keys is None:
        return None
    try:
        module = importlib.import_module("orchestra.serve.keys")
    except ImportError as e:
        raise UserError(f"API keys need orchestra.serve.keys, which failed to import ({e}); "
                        "run without --keys on loopback, or reinstall orchestra") from e
    return module.KeyStore(keys) if isinstance(keys, (str, Path)) else keys


class _Tally:
    """Listens to a run's events: spend so far (to settle a hold when the run ends early), the
    policy's name, an interruption, and, for a stream, a queue of events to send."""

    def __init__(self, queue: asyncio.Queue[Event | None] | None = None) -> None:
        self.queue = queue
        self.spent_usd = 0.0
        self.policy = ""
        self.interrupted = False

    def __call__(self, ev: Event) -> None:
        if isinstance(ev, CallFinished):
            self.spent_usd += ev.cost_usd
        elif isinstance(ev, ErrorEvent) and ev.error_type == INTERRUPTED:
            self.interrupted = True
        elif ev.kind == "run_started":
            self.policy = ev.policy
        if self.queue is not None:
            self.queue.put_nowait(ev)


#: What a streamed step event keeps of a trace event: routing facts, never prompts or outputs.
_STEP_FIELDS = ("kind", "round", "action", "reason", "call_id", "agent", "model", "role",
                "cost_usd", "input_tokens", "output_tokens", "latency_s", "error", "refiner",
                "stop_reason", "calls", "rounds", "policy", "models", "where", "error_type",
                "message")


def step_summary(ev: Event) -> dict[str, Any]:
    """The routing facts of a trace event, as a stream's ``: orchestra {...}`` line sends them."""
    data = event_to_dict(ev)
    out = {k: data[k] for k in _STEP_FIELDS if k in data}
    if isinstance(out.get("calls"), list):
        out["calls"] = [{"agent": c.get("agent"), "model": c.get("model")}
                        for c in out["calls"] if isinstance(c, dict)]
    return out


def _header(value: Any) -> str:
    """A header value: printable ASCII only (model names and reasons are data)."""
    text = str(value)
    return "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in text)[:200]


class _Prepared:
    """A validated request, ready to run."""

    def __init__(self, *, body: ChatRequest, query: str, history: list[dict[str, str]],
                 orch: Orchestra, run_id: str, hold: Any, key_name: str | None,
                 key_limited: bool = False) -> None:
        self.body = body
        self.query = query
        self.history = history
        self.orch = orch
        self.run_id = run_id
        self.hold = hold
        self.key_name = key_name
        #: the key's limits (not the request's) set the run's budget
        self.key_limited = key_limited


class Server:
    """The state behind the app: the pool, the server's policy, the backend, the trace store,
    the key store and the counters.

    Args:
        pool: a :class:`Pool`, a pool name (``"local"``) or a YAML path.
        policy: the policy ``auto`` routes with (a name, recipe or object; default: the pool's).
        backend: how models are called (default: litellm; tests pass a replay or function one).
        store: the trace store (an object, a SQLite path or a ``postgresql://`` URL; ``None``:
            the default, see :func:`~orchestra.trace.pg_store.trace_target`).
        keys: a key store, or the path of its SQLite file; ``None`` serves without keys.
        timeout_s: the most seconds a request may take (the run's ``seconds`` limit, then the
            HTTP layer's).
        max_body_bytes: the largest request body accepted.
        check_keys: check the hosted models' provider API keys at start.
        meta: metadata added to every run's ``meta`` (e.g. ``{"fault_plan": plan.id}`` for the
            fault-injecting provider); the server's own keys (``source``, ``api_key``, ...) win.
    """

    def __init__(self, pool: Pool | str | Path, *, policy: str | Path | Policy | None = None,
                 backend: Backend | None = None, store: TraceStore | str | Path | None = None,
                 keys: Any = None, timeout_s: float = 300.0,
                 max_body_bytes: int = DEFAULT_MAX_BODY, check_keys: bool = True,
                 meta: Mapping[str, Any] | None = None) -> None:
        if not (isinstance(timeout_s, (int, float)) and math.isfinite(timeout_s)
                and timeout_s > 0):
            raise UserError(f"timeout must be a positive number of seconds (got {timeout_s!r})")
        if max_body_bytes < 1024:
            raise UserError(f"max_body_bytes must be at least 1024 (got {max_body_bytes!r})")
        base = Orchestra(pool, policy=policy, backend=backend, store=store,
                         check_keys=check_keys)
        self.pool = base.pool
        self.backend = base.backend
        self.store = base.store
        self.policy = base.policy
        self.policy_spec = policy if isinstance(policy, (str, Path)) or policy is None else None
        self.timeout_s = float(timeout_s)
        self.budget = base.budget.merged(seconds=min(base.budget.seconds or math.inf,
                                                     self.timeout_s))
        self.max_body_bytes = max_body_bytes
        if meta is not None and not isinstance(meta, Mapping):
            raise UserError(f"meta must be a mapping of run metadata (got {type(meta).__name__}); "
                            "e.g. meta={'fault_plan': plan.id}")
        self.meta = dict(meta or {})
        self.keys = _open_keys(keys)
        # What the server opened itself it closes at shutdown; what it was given, the caller.
        self._owned: list[Any] = [o for o, given in ((self.store, store), (self.keys, keys))
                                  if o is not None and o is not given]
        self.metrics = Metrics()
        self._policies: dict[tuple[str, str], Policy] = {}
        self._routed: OrderedDict[str, Policy] = OrderedDict()
        self._feedback_lock = asyncio.Lock()
        self._runs: set[asyncio.Task[RunResult]] = set()
        self.pool_models = {m.name: m for m in self.pool.models}

    # ------------------------------------------------------------------ request → run
    def authenticate(self, request: Request) -> Any:
        """The caller's key (None without a key store). Raises a 401 ApiError."""
        if self.keys is None:
            return None
        auth = request.headers.get("authorization", "")
        scheme, _, raw = auth.partition(" ")
        if scheme.lower() != "bearer" or not raw.strip():
            raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>' (the "
                                "OpenAI client's api_key)", type="authentication_error",
                           code="missing_api_key")
        key = self.keys.authenticate(raw.strip())
        if key is None:
            raise ApiError(401, "invalid API key; ask the server's operator for one (orchestra "
                                "keys)", type="authentication_error", code="invalid_api_key")
        return key

    async def read_json(self, request: Request) -> dict[str, Any]:
        """The body as a JSON object, refusing a huge or malformed one with a 400."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise self._too_large()
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > self.max_body_bytes:
                    raise self._too_large()
                chunks.append(chunk)
        except ClientDisconnect:
            raise ApiError(400, "the client closed the connection before sending the whole "
                                "body") from None
        try:
            data = json.loads(b"".join(chunks))
        except (ValueError, RecursionError) as e:
            raise ApiError(400, f"the body is not valid JSON ({type(e).__name__}: "
                                f"{str(e)[:120]}); send a chat completion request object",
                           code="invalid_json") from None
        if not isinstance(data, dict):
            raise ApiError(400, f"expected a JSON object as the body (got a "
                                f"{type(data).__name__})", code="invalid_json")
        return data

    def _too_large(self) -> ApiError:
        return ApiError(400, f"the body is larger than {self.max_body_bytes} bytes; shorten the "
                             "conversation (or start the server with a larger limit)",
                        code="request_too_large")

    def parse(self, data: dict[str, Any], headers: Mapping[str, str]) -> ChatRequest:
        """The request, with ``x-orchestra-*`` headers filling knobs the body does not set."""
        from_headers = knobs_from_headers(headers)
        if from_headers:
            given = data.get("orchestra")
            if given is None:
                given = {}
            if isinstance(given, dict):
                data = {**data, "orchestra": {**from_headers, **given}}
        try:
            return ChatRequest.model_validate(data)
        except ValidationError as e:
            raise validation_error(e) from None

    async def policy_for(self, body: ChatRequest) -> Policy:
        """The policy the model name and knobs ask for (cached per name and parameters)."""
        return await self.policy_of(body.model, body.orchestra or Knobs())

    async def policy_of(self, model: str, knobs: Knobs) -> Policy:
        """The policy a model name and routing knobs ask for (cached per name and parameters)."""
        target = parse_model(model, self.pool_models)
        spec = target.policy
        if knobs.policy is not None:
            if spec is not None and spec != knobs.policy:
                raise ApiError(400, f"orchestra.policy {knobs.policy!r} conflicts with the model "
                                    f"{model!r}; give the policy with model 'auto'",
                               param="orchestra.policy")
            spec = knobs.policy
        params = {**target.params, **(knobs.params or {})}
        if knobs.lam is not None:
            params["lam"] = knobs.lam
        if spec is None and not params:
            return self.policy
        if spec is None:
            if self.policy_spec is None and not isinstance(self.pool.policy, str):
                raise ApiError(400, "the server's policy is an object: per-request parameters "
                                    "cannot be applied to it", param="orchestra.params")
            spec = str(self.policy_spec) if self.policy_spec is not None else self.pool.policy
        cache_key = (spec, json.dumps(params, sort_keys=True, default=repr))
        cached = self._policies.get(cache_key)
        if cached is not None:
            return cached
        from orchestra.policies.resolve import resolve_policy

        try:
            # A learned policy loads an artifact (and maybe an embedder): off the event loop.
            policy = await asyncio.to_thread(resolve_policy, spec, self.pool, params)
        except UserError as e:
            raise ApiError(400, f"model {model!r}: {e}", param="model",
                           code="invalid_policy") from None
        if len(self._policies) >= _POLICY_CACHE:
            self._policies.pop(next(iter(self._policies)))
        self._policies[cache_key] = policy
        return policy

    def _hold(self, key: Any, want: float | None, run_id: str) -> Any:
        """Reserve the request's budget on its key: a 429 when the key's budget is used up."""
        try:
            return self.keys.hold(key, want, request_id=run_id,
                                  ttl_s=self.timeout_s + 2 * _GRACE_S)
        except UserError as e:
            # BudgetRefused (429) and InvalidKey (401, revoked meanwhile) say their own status.
            status = int(getattr(e, "status", 400))
            body = getattr(e, "body", None)
            err = body()["error"] if callable(body) else {}
            raise ApiError(status, str(e), type=err.get("type", "invalid_request_error"),
                           code=err.get("code"),
                           param="orchestra.budget_usd" if status == 400 else None) from None

    async def prepare(self, request: Request) -> _Prepared:
        """Authenticate, validate, pick the policy and hold the budget: every refusal here is an
        OpenAI-shaped error and nothing has run."""
        key = self.authenticate(request)
        body = self.parse(await self.read_json(request), request.headers)
        query, history = conversation(body.messages)
        policy = await self.policy_for(body)
        knobs = body.orchestra or Knobs()
        run_id = uuid.uuid4().hex
        want = knobs.budget_usd if knobs.budget_usd is not None else self.budget.usd
        hold = None
        key_limited = False
        if key is not None:
            hold = self._hold(key, want, run_id)
            key_limited = hold.amount_usd is not None and (want is None or hold.amount_usd < want)
            want = hold.amount_usd
        try:
            budget = Budget(**{**self.budget.model_dump(), "usd": want,
                               **({"rounds": knobs.max_rounds} if knobs.max_rounds else {})})
            orch = Orchestra(self.pool, policy=policy, budget=budget, backend=self.backend,
                             store=self.store if self.store is not None else False,
                             check_keys=False)
        except Exception:
            if hold is not None:
                self.keys.settle(hold, 0.0)
            raise
        self._routed[run_id] = policy
        while len(self._routed) > _ROUTED_RUNS:
            self._routed.popitem(last=False)
        return _Prepared(body=body, query=query, history=history, orch=orch, run_id=run_id,
                         hold=hold, key_name=getattr(key, "name", None), key_limited=key_limited)

    async def run(self, prep: _Prepared, tally: _Tally) -> RunResult:
        """The run; whatever ends it, the hold is settled with what was spent."""
        result: RunResult | None = None
        knobs = prep.body.orchestra or Knobs()
        routing = {k: v for k, v in (("policy", knobs.policy), ("params", knobs.params),
                                     ("lam", knobs.lam)) if v is not None}
        # The client's metadata first: the server's meta and its own keys win.
        meta = {**(prep.body.metadata or {}), **self.meta, "source": "serve",
                "api_key": prep.key_name, "requested_model": prep.body.model,
                "user": prep.body.user, **({KNOBS_META: routing} if routing else {})}
        try:
            result = await prep.orch.arun(prep.query, history=prep.history, meta=meta,
                                          run_id=prep.run_id, on_event=tally)
            return result
        finally:
            spent = result.cost_usd if result is not None else tally.spent_usd
            stop = (result.stop_reason if result is not None
                    else "interrupted" if tally.interrupted else "error")
            self.metrics.run_ended(spent, stop)
            if prep.hold is not None:
                self.keys.settle(prep.hold, spent)

    # ------------------------------------------------------------------ feedback
    async def feedback(self, request: Request) -> dict[str, Any]:
        """``POST /v1/feedback``: check the key and the body, find the run, then
        :meth:`Orchestra.feedback <orchestra.runtime.Orchestra.feedback>` with the policy that
        routed it (the trace store keeps a ``feedback`` event; the policy observes it).

        One feedback per run: a second one is refused (409), so that a client's retry never
        teaches an online policy the same outcome twice. The run must be a finished run of
        ``orchestra serve`` in the trace store (any replica's), made with the caller's key when
        the server has keys.
        """
        key = self.authenticate(request)
        data = await self.read_json(request)
        try:
            body = FeedbackRequest.model_validate(data)
        except ValidationError as e:
            raise feedback_error(e) from None
        if body.score is None and body.reward is None:
            raise ApiError(400, "feedback needs a 'score' (a number in [0, 1]) or a 'reward' (a "
                                "finite number), or both; e.g. {\"trace_id\": \"...\", "
                                "\"score\": 1}", param="score", code="missing_field")
        run_id = body.run_id
        if self.store is None:
            raise ApiError(404, f"trace {run_id!r}: this server keeps no trace store, so it "
                                "cannot find a run to give feedback on; start it with a store "
                                "(orchestra serve --store PATH)", param="trace_id",
                           code="trace_not_found")
        store = self.store
        async with self._feedback_lock:  # the duplicate check and the write, one at a time
            events = await asyncio.to_thread(store.events, run_id)
            meta = self._check_feedback(run_id, events, key)
            policy = self._routed.get(run_id)
            if policy is None:
                policy = await self._policy_of_run(run_id, meta)
            orch = Orchestra(self.pool, policy=policy, backend=self.backend, store=store,
                             check_keys=False)
            try:
                await asyncio.to_thread(orch.feedback, run_id, score=body.score,
                                        reward=body.reward, meta=body.meta)
            except UserError as e:
                raise ApiError(400, f"feedback on trace {run_id!r}: {e}", code="invalid_value"
                               ) from None
            except Exception as e:  # noqa: BLE001 - answered as a 500 naming the trace
                raise ApiError(500, f"the policy failed to observe the feedback on trace "
                                    f"{run_id!r} ({type(e).__name__}: {e}); the feedback is in "
                                    f"the trace (orchestra traces show {run_id})",
                               type="server_error", code="observe_failed") from None
        return {"object": "orchestra.feedback", "trace_id": run_id, "score": body.score,
                "reward": body.reward, "policy": str(getattr(policy, "name", policy)),
                "observed": callable(getattr(policy, "observe", None)),
                "schema_version": SCHEMA_VERSION}

    def _check_feedback(self, run_id: str, events: Sequence[Mapping[str, Any]],
                        key: Any) -> dict[str, Any]:
        """The run's meta, once it is known to be a finished served run of the caller's key
        without feedback yet; else the 403, 404 or 409 that says why not."""
        started = next((e for e in events if e.get("kind") == "run_started"), None)
        if started is None:
            raise ApiError(404, f"no run with trace id {run_id!r} in this server's trace store; "
                                "give the x-orchestra-trace-id header (or the orchestra."
                                "trace_id field) of a response of this server",
                           param="trace_id", code="trace_not_found")
        meta = dict(started.get("meta") or {})
        if meta.get("source") != "serve":
            raise ApiError(404, f"trace {run_id!r} is not a run of orchestra serve (source "
                                f"{meta.get('source')!r}); give its feedback with "
                                "Orchestra.feedback where it ran", param="trace_id",
                           code="trace_not_found")
        if self.keys is not None and meta.get("api_key") != getattr(key, "name", None):
            raise ApiError(403, f"trace {run_id!r} was made with another API key; feedback is "
                                "given with the key that made the run", type="permission_error",
                           code="not_your_run")
        if not any(e.get("kind") == "run_finished" for e in events):
            raise ApiError(409, f"trace {run_id!r} has not finished (still running, or "
                                "interrupted before an answer); give feedback once the response "
                                "has come back", param="trace_id", code="run_not_finished")
        given = next((e for e in events if e.get("kind") == "feedback"), None)
        if given is not None:
            raise ApiError(409, f"trace {run_id!r} already has feedback (score "
                                f"{given.get('score')!r}, reward {given.get('reward')!r}); a run "
                                "takes one, so that the policy learns each outcome once",
                           param="trace_id", code="feedback_exists")
        return meta

    async def _policy_of_run(self, run_id: str, meta: Mapping[str, Any]) -> Policy:
        """The policy a stored run asked for (a run of another replica, or an older one):
        resolved in this process from the model name and knobs in its meta."""
        model = meta.get("requested_model")
        if not isinstance(model, str) or not model:
            raise ApiError(404, f"trace {run_id!r} does not say which model it asked for; it is "
                                "not a run this server can route again", param="trace_id",
                           code="trace_not_found")
        try:
            knobs = Knobs.model_validate(meta.get(KNOBS_META) or {})
        except ValidationError as e:
            raise ApiError(409, f"trace {run_id!r}: its routing knobs no longer validate "
                                f"({validation_error(e).message})", param="trace_id",
                           code="invalid_trace") from None
        try:
            return await self.policy_of(model, knobs)
        except ApiError as e:
            raise ApiError(409, f"trace {run_id!r} asked for model {model!r}, which this server "
                                f"no longer routes: {e.message}", param="trace_id",
                           code="policy_unavailable") from None

    def start(self, prep: _Prepared, tally: _Tally) -> asyncio.Task[RunResult]:
        """The run as a task, tracked until it ends (see :meth:`aclose`)."""
        task = asyncio.create_task(self.run(prep, tally))
        self._runs.add(task)
        task.add_done_callback(self._runs.discard)
        return task

    async def aclose(self) -> None:
        """Cancel the runs still going, wait until each has recorded its interruption and
        settled its hold, then close the stores the server opened (at shutdown, once the HTTP
        server's grace period is over)."""
        runs = list(self._runs)
        for task in runs:
            task.cancel()
        await asyncio.gather(*runs, return_exceptions=True)
        self.close()

    def close(self) -> None:
        """Close the stores the server opened itself (not those it was given)."""
        for owned in self._owned:
            owned.close()

    # ------------------------------------------------------------------ run → response
    def facts(self, prep: _Prepared, result: RunResult, tally: _Tally) -> dict[str, Any]:
        """The ``orchestra`` object of a response: which model answered and why."""
        ans = result.answer_call()
        models: list[str] = []
        for s in result.steps:
            for c in s.get("calls") or []:
                if c["model"] not in models:
                    models.append(c["model"])
        return {
            "schema_version": SCHEMA_VERSION, "trace_id": result.trace_id,
            "policy": tally.policy, "selected_model": ans["model"] if ans else None,
            "answer_from": result.answer_from, "models": models, "calls": result.calls,
            "rounds": result.rounds, "cost_usd": result.cost_usd,
            "stop_reason": result.stop_reason, "budget_usd": prep.orch.budget.usd,
            "api_key": prep.key_name, "steps": result.steps,
        }

    def answer_model(self, facts: Mapping[str, Any]) -> str:
        """``model`` of a response: the model whose output became the answer, else the policy."""
        return str(facts["selected_model"] or f"orchestra/{facts['policy']}")

    def headers(self, run_id: str, facts: Mapping[str, Any] | None = None) -> dict[str, str]:
        out = {"x-orchestra-trace-id": run_id, "x-orchestra-schema-version": SCHEMA_VERSION}
        if facts is not None:
            out.update({
                "x-orchestra-selected-model": _header(facts["selected_model"] or ""),
                "x-orchestra-cost-usd": repr(float(facts["cost_usd"])),
                "x-orchestra-calls": str(facts["calls"]),
                "x-orchestra-rounds": str(facts["rounds"]),
                "x-orchestra-stop-reason": _header(facts["stop_reason"]),
                "x-orchestra-policy": _header(facts["policy"]),
            })
        return out

    def no_answer(self, prep: _Prepared, result: RunResult) -> ApiError:
        """Why a run that produced no answer failed, as an error to answer with."""
        if result.stop_reason == "budget:seconds":
            return ApiError(504, f"the run reached the server's time limit ({self.timeout_s:g} s) "
                                 f"before any answer (trace {result.trace_id})",
                            type="timeout_error", code="timeout")
        if result.stop_reason.startswith("budget") and prep.key_limited:
            return ApiError(429, f"key {prep.key_name!r} has ${prep.orch.budget.usd!r} left in "
                                 f"its limits, too little for any call ({result.stop_reason}); "
                                 "wait for its day to reset or raise its limits (orchestra keys "
                                 f"usage {prep.key_name}) (trace {result.trace_id})",
                            type="insufficient_quota", code="insufficient_quota")
        if result.stop_reason.startswith("budget"):
            return ApiError(400, f"the run stopped at its budget ({result.stop_reason}, "
                                 f"usd={prep.orch.budget.usd!r}) before any answer; raise "
                                 "orchestra.budget_usd (or the key's limits) or ask a cheaper "
                                 f"model (trace {result.trace_id})", code="budget_too_small")
        return ApiError(502, f"no model produced an answer ({result.stop_reason}); see trace "
                             f"{result.trace_id} (orchestra traces show {result.trace_id})",
                        type="upstream_error", code="no_answer")

    def run_error(self, e: BaseException, run_id: str) -> ApiError:
        """A run's exception as an API error (the trace has the details)."""
        if isinstance(e, UserError):
            return ApiError(400, str(e))
        if isinstance(e, RunError):
            return ApiError(502, f"{type(e).__name__}: {e} (trace {run_id})",
                            type="upstream_error", code="run_failed")
        return ApiError(500, f"the run failed: {type(e).__name__}: {e} (trace {run_id})",
                        type="server_error", code="internal_error")

    def usage(self, result: RunResult) -> dict[str, int]:
        return {"prompt_tokens": result.input_tokens, "completion_tokens": result.output_tokens,
                "total_tokens": result.input_tokens + result.output_tokens}

    def finish_reason(self, result: RunResult) -> Literal["stop", "length"]:
        return "length" if result.stop_reason.startswith("budget") else "stop"


async def _wait_disconnect(request: Request) -> None:
    """Return when the client goes away (the body was read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


class _RunStream(StreamingResponse):
    """A streamed run: whatever ends the response (the client gone, the server stopping), the
    run's task is cancelled if it is still going, so its trace says interrupted and its hold is
    settled."""

    def __init__(self, content: AsyncIterator[str], task: asyncio.Task[RunResult],
                 headers: Mapping[str, str]) -> None:
        super().__init__(content, media_type="text/event-stream", headers=headers)
        self.task = task

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if not self.task.done():
                self.task.cancel()


def _sse(data: Mapping[str, Any]) -> str:
    # json.dumps escapes newlines: one event is one line, whatever the model wrote.
    return f"data: {json.dumps(data)}\n\n"


def create_app(pool: Pool | str | Path = "local", *, server: Server | None = None,
               **kwargs: Any) -> Starlette:
    """The OpenAI-compatible ASGI app.

    Args:
        pool: the pool (ignored when ``server`` is given).
        server: a ready :class:`Server`; otherwise one is built from ``pool`` and ``kwargs``
            (``policy``, ``backend``, ``store``, ``keys``, ``timeout_s``, ``max_body_bytes``,
            ``check_keys``, ``meta``; see :class:`Server`).
    """
    srv = server or Server(pool, **kwargs)

    async def chat(request: Request) -> Response:
        prep = await srv.prepare(request)
        if prep.body.stream:
            return stream(request, prep)
        tally = _Tally()
        task = srv.start(prep, tally)
        gone = asyncio.create_task(_wait_disconnect(request))
        try:
            done, _ = await asyncio.wait({task, gone}, timeout=srv.timeout_s + _GRACE_S,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not task.done():
                task.cancel()
        if task not in done:
            with contextlib.suppress(BaseException):
                await task  # the run records itself interrupted and settles its hold
            if gone in done:
                return Response(status_code=499)  # nobody is listening
            raise ApiError(504, f"the request took longer than {srv.timeout_s:g} s and was "
                                f"stopped (trace {prep.run_id})", type="timeout_error",
                           code="timeout")
        err: ApiError | None
        try:
            result = task.result()
        except Exception as e:  # noqa: BLE001 - every run failure is answered, by its kind
            err = srv.run_error(e, prep.run_id)
        else:
            err = srv.no_answer(prep, result) if result.answer is None else None
        if err is not None:
            return JSONResponse(err.body(), status_code=err.status,
                                headers=srv.headers(prep.run_id))
        facts = srv.facts(prep, result, tally)
        body = {
            "id": f"chatcmpl-{result.trace_id}", "object": "chat.completion",
            "created": int(time.time()), "model": srv.answer_model(facts),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": result.answer},
                         "finish_reason": srv.finish_reason(result), "logprobs": None}],
            "usage": srv.usage(result), "system_fingerprint": None, "orchestra": facts,
        }
        return JSONResponse(body, headers=srv.headers(prep.run_id, facts))

    def stream(request: Request, prep: _Prepared) -> Response:
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        tally = _Tally(queue)
        task = srv.start(prep, tally)
        task.add_done_callback(lambda _: queue.put_nowait(None))
        created = int(time.time())
        chunk_id = f"chatcmpl-{prep.run_id}"

        def chunk(model: str, delta: dict[str, Any], finish: str | None = None,
                  **extra: Any) -> str:
            return _sse({"id": chunk_id, "object": "chat.completion.chunk", "created": created,
                         "model": model, "system_fingerprint": None,
                         "choices": [{"index": 0, "delta": delta, "finish_reason": finish,
                                      "logprobs": None}], **extra})

        async def events() -> AsyncIterator[str]:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + srv.timeout_s + _GRACE_S
            yield f": orchestra {json.dumps({'trace_id': prep.run_id})}\n\n"
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    task.cancel()
                    err = ApiError(504, f"the request took longer than {srv.timeout_s:g} s and "
                                        f"was stopped (trace {prep.run_id})",
                                   type="timeout_error", code="timeout")
                    yield _sse(err.body())
                    return
                try:
                    ev = await asyncio.wait_for(queue.get(), timeout=min(left, _KEEPALIVE_S))
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if ev is None:
                    break
                yield f": orchestra {json.dumps(step_summary(ev))}\n\n"
            try:
                result = task.result()
            except BaseException as e:  # noqa: BLE001 - sent to the client as an error event
                yield _sse(srv.run_error(e, prep.run_id).body())
                return
            if result.answer is None:
                yield _sse(srv.no_answer(prep, result).body())
                return
            facts = srv.facts(prep, result, tally)
            model = srv.answer_model(facts)
            yield chunk(model, {"role": "assistant", "content": ""})
            text = result.answer
            for i in range(0, len(text), _CHUNK_CHARS):
                yield chunk(model, {"content": text[i:i + _CHUNK_CHARS]})
            yield chunk(model, {}, srv.finish_reason(result), usage=srv.usage(result),
                        orchestra=facts)
            yield "data: [DONE]\n\n"

        headers = {**srv.headers(prep.run_id), "cache-control": "no-cache",
                   "x-accel-buffering": "no"}
        return _RunStream(events(), task, headers)

    async def feedback(request: Request) -> Response:
        return JSONResponse(await srv.feedback(request))

    async def models(request: Request) -> Response:
        srv.authenticate(request)
        return JSONResponse({"object": "list", "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "orchestra"}
            for name in model_names(srv)]})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "pool": srv.pool.name,
                             "policy": getattr(srv.policy, "name", str(srv.policy)),
                             "models": [m.name for m in srv.pool.models],
                             "keys": srv.keys is not None,
                             "in_flight": srv.metrics.in_flight,
                             "schema_version": SCHEMA_VERSION})

    async def metrics(request: Request) -> Response:
        return PlainTextResponse(srv.metrics.render(),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return JSONResponse(exc.body(), status_code=exc.status)

    async def server_error(request: Request, exc: Exception) -> Response:
        err = ApiError(500, f"internal error: {type(exc).__name__}: {exc}", type="server_error",
                       code="internal_error")
        return JSONResponse(err.body(), status_code=500)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        err = ApiError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}",
                       code="not_found" if exc.status_code == 404 else None)
        return JSONResponse(err.body(), status_code=exc.status_code, headers=exc.headers)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        # uvicorn has waited for in-flight requests (--timeout) and cancelled the rest: their
        # runs record the interruption before the store closes.
        await srv.aclose()

    app = Starlette(
        routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                Route("/v1/feedback", feedback, methods=["POST"]),
                Route("/v1/models", models, methods=["GET"]),
                Route("/health", health, methods=["GET"]),
                Route("/metrics", metrics, methods=["GET"])],
        exception_handlers={ApiError: api_error, HTTPException: http_error,
                            Exception: server_error},
        middleware=[Middleware(MetricsMiddleware, metrics=srv.metrics)],
        lifespan=lifespan,
    )
    app.state.server = srv
    return app


def model_names(srv: Server) -> Sequence[str]:
    """What ``GET /v1/models`` lists: ``auto``, ``orchestra/<policy>`` for every registered
    policy that needs no argument and every recipe, then the pool's models."""
    from orchestra._paths import named_files
    from orchestra.policies.resolve import policy_names

    policies = {n for n in policy_names() if n != "single"} | set(named_files("policies"))
    return ["auto", *(f"orchestra/{n}" for n in sorted(policies)),
            *(m.name for m in srv.pool.models)]
