"""A process that starts a run in a trace store, sends one call, then waits to be killed.

``python viewer_killed_writer.py STORE RUN_ID QUERY``: prints ``ready`` once the events are
stored. The viewer tests SIGKILL it to get a run whose writer is gone mid-call (the
``run_started`` row records this process as its writer).
"""

import sys
import time

from orchestra.trace.events import CallStarted, PolicyDecided, RunStarted
from orchestra.trace.store import SQLiteTraceStore

store, rid, query = SQLiteTraceStore(sys.argv[1]), sys.argv[2], sys.argv[3]
store.append(RunStarted(run_id=rid, seq=0, query=query, pool="test", policy="cheapest",
                        budget={"usd": 1.0}))
store.append(PolicyDecided(run_id=rid, seq=1, round=0, action="route", reason="one call",
                           calls=[{"agent": "assistant", "model": "mini"}]))
store.append(CallStarted(run_id=rid, seq=2, round=0, call_id="k0", agent="assistant",
                         model="mini", model_id="test/mini",
                         messages=[{"role": "user", "content": query}], max_tokens=8,
                         reserved_usd=0.001))
print("ready", flush=True)
time.sleep(120)
