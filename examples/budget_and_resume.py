"""Hard budgets, and a durable run that survives a crash. No API key, no network.

    python examples/budget_and_resume.py

1. Budgets are hard limits. Before a round, the runtime reserves each planned call's worst case
   (exact prompt tokens x input price + max_tokens x output price). A call whose reservation does
   not fit is never sent: it is *dropped*, the trace names the limit, and the run finishes with
   the best answer it has and a ``stop_reason`` saying why.
2. With ``durable=True`` every step is checkpointed (SQLite). If the process dies mid-run,
   ``resume(run_id)`` continues from the last completed step: calls that had finished are not
   sent (or paid for) again.
"""

from __future__ import annotations

import asyncio
import uuid

from orchestra import Budget, Orchestra
from orchestra.backends.base import Completion, CompletionRequest
from orchestra.backends.litellm_client import LiteLLMBackend
from orchestra.testing import FunctionBackend

QUESTION = "What is the capital of France?"


def budgets() -> None:
    print("1. the ensemble policy fans out to both local models; what fits in each budget?")
    print(f"   {'budget':<22} {'sent':<18} {'dropped (limit)':<28} {'cost':>9}  "
          f"{'stop reason':<13} answer")
    for budget in [Budget(usd=1e-4), Budget(usd=1e-6), Budget(calls=1), Budget(usd=2e-7)]:
        result = Orchestra("local", policy="ensemble", budget=budget).run(QUESTION)
        # The first decision of the run: which calls got a reservation, which were dropped.
        first = next(e for e in result.events if e.kind == "policy_decided")
        sent = ", ".join(c["model"] for c in first.calls) or "-"
        dropped = ", ".join(f"{d['model']} ({d['limit']})" for d in first.dropped) or "-"
        limits = ", ".join(f"{k}={v}" for k, v in budget.model_dump(exclude_none=True).items())
        print(f"   {limits:<22} {sent:<18} {dropped:<28} {result.cost_usd * 1e6:>7.3f}µ$  "
              f"{result.stop_reason:<13} {result.answer!r}")
    # Read the rows: a roomy budget sends both calls; $1e-6 fits one of the two worst cases,
    # so the other is dropped and the run answers with the one it has; calls=1 likewise (the
    # second call is dropped by the calls limit); $2e-7 does not even cover a prompt: nothing is
    # sent and the run stops with budget:usd.
    print("   A call whose worst case does not fit is dropped before it is sent; the spend never "
          "exceeds the budget,\n   and stop_reason names the limit that ended the run.")


class PowerCut(Exception):
    """Stands in for the process dying mid-run (a kill, an OOM, a reboot).

    Not a provider error: orchestra records provider errors on the call and goes on, whereas
    this one ends the run, as a crash would.
    """


def durable_run() -> None:
    print("\n2. a durable run, interrupted, then resumed")
    run_id = f"demo-{uuid.uuid4().hex[:8]}"

    # To interrupt the run on purpose, at the same point every time, we wrap the real backend
    # in orchestra.testing.FunctionBackend (a test double). The ensemble sends two calls in
    # parallel: gemma3's goes to the real model; smollm2's waits until gemma3 has answered,
    # then "cuts the power".
    real = LiteLLMBackend()
    gemma_done = asyncio.Event()

    async def until_power_cut(req: CompletionRequest) -> Completion:
        if req.model.name == "smollm2":
            await gemma_done.wait()
            await asyncio.sleep(0.2)  # a moment later, while gemma3's answer is being saved
            raise PowerCut("power cut while smollm2 was generating")
        completion = await real.complete(req)
        gemma_done.set()
        return completion

    flaky = FunctionBackend(until_power_cut)
    # Reserve with the real tokenizer, as the real backend would (FunctionBackend counts words).
    flaky.prompt_tokens_bound = real.prompt_tokens_bound  # type: ignore[method-assign]

    # durable=True checkpoints every step, with the run's terms, to
    # <ORCHESTRA_HOME or your data dir>/checkpoints/<run id>.sqlite.
    orch = Orchestra("local", policy="ensemble", backend=flaky, durable=True)
    try:
        orch.run(QUESTION, run_id=run_id)  # choose the id, to resume it later
    except PowerCut as e:
        print(f"   run {run_id} crashed: {e}")
    # The trace store kept what happened up to the crash, spend included.
    assert orch.store is not None
    row = orch.store.get_run(run_id)
    assert row is not None
    print(f"   trace store: status {row['status']!r}, {row['calls']} call(s) finished, "
          f"{row['cost_usd'] * 1e6:.3f}µ$ spent")

    # Later (a new process, for all it matters): same pool and policy, the real backend.
    again = Orchestra("local", policy="ensemble", durable=True)
    result = again.resume(run_id)
    sent_now = [e.model for e in result.events if e.kind == "call_started"]
    print(f"   resumed: sent {sent_now} now; the other {result.calls - len(sent_now)} call(s) "
          f"came from the checkpoint, not sent or paid again")
    print(f"   answer {result.answer!r}, stop reason {result.stop_reason}, {result.calls} calls, "
          f"{result.cost_usd * 1e6:.3f}µ$ in all")
    row = again.store.get_run(run_id) if again.store is not None else None
    print(f"   trace store: status {row['status'] if row else '?'!r}, one trace for both attempts "
          f"(orchestra traces show {run_id})")


if __name__ == "__main__":
    budgets()
    durable_run()
