"""``GET /metrics``: the server's own counters in the Prometheus text format (0.0.4), without a
client library: requests by route and status, requests in flight, dollars spent, runs by stop
reason and a request latency histogram.

:class:`MetricsMiddleware` (pure ASGI, so a streamed response counts until its last byte) does the
request counting; the chat handler adds spend and stop reasons.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

__all__ = ["LATENCY_BUCKETS", "Metrics", "MetricsMiddleware"]

#: Upper bounds (seconds) of the latency histogram's buckets; ``+Inf`` is added.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

#: Paths counted under their own label; anything else is ``other`` (a scanner's random paths
#: must not grow the label set without bound).
ROUTES = ("/v1/chat/completions", "/v1/feedback", "/v1/models", "/health", "/metrics")


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Thread-safe counters (one set per server process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, str]] = Counter()  # (route, status)
        self.stops: Counter[str] = Counter()
        self.in_flight = 0
        self.spend_usd = 0.0
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.latency_count = 0

    def started(self) -> None:
        with self._lock:
            self.in_flight += 1

    def finished(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.in_flight -= 1
            self.requests[(route, str(status))] += 1
            self.latency_sum += seconds
            self.latency_count += 1
            i = next((i for i, b in enumerate(LATENCY_BUCKETS) if seconds <= b),
                     len(LATENCY_BUCKETS))
            self.buckets[i] += 1

    def run_ended(self, spent_usd: float, stop_reason: str) -> None:
        """A run ended (answered, stopped or interrupted) having spent ``spent_usd``."""
        with self._lock:
            self.spend_usd += spent_usd
            self.stops[stop_reason.partition(":")[0]] += 1

    def render(self) -> str:
        """The Prometheus text exposition."""
        with self._lock:
            lines = ["# HELP orchestra_requests_total HTTP requests by route and status.",
                     "# TYPE orchestra_requests_total counter"]
            for (route, status), n in sorted(self.requests.items()):
                lines.append(f'orchestra_requests_total{{route="{_label(route)}",'
                             f'status="{status}"}} {n}')
            lines += ["# HELP orchestra_requests_in_flight Requests being answered now.",
                      "# TYPE orchestra_requests_in_flight gauge",
                      f"orchestra_requests_in_flight {self.in_flight}",
                      "# HELP orchestra_spend_usd_total Dollars spent by runs (model calls).",
                      "# TYPE orchestra_spend_usd_total counter",
                      f"orchestra_spend_usd_total {self.spend_usd!r}",
                      "# HELP orchestra_runs_total Runs by stop reason (interrupted included).",
                      "# TYPE orchestra_runs_total counter"]
            for reason, n in sorted(self.stops.items()):
                lines.append(f'orchestra_runs_total{{stop_reason="{_label(reason)}"}} {n}')
            lines += ["# HELP orchestra_request_duration_seconds Time to the last byte.",
                      "# TYPE orchestra_request_duration_seconds histogram"]
            cumulative = 0
            for bound, n in zip((*LATENCY_BUCKETS, None), self.buckets, strict=True):
                cumulative += n
                le = "+Inf" if bound is None else repr(bound)
                lines.append(f'orchestra_request_duration_seconds_bucket{{le="{le}"}} '
                             f"{cumulative}")
            lines += [f"orchestra_request_duration_seconds_sum {self.latency_sum!r}",
                      f"orchestra_request_duration_seconds_count {self.latency_count}"]
        return "\n".join(lines) + "\n"


class MetricsMiddleware:
    """Counts every HTTP request: in flight while it runs, then by route and status."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope.get("path", "")
        route = route if route in ROUTES else "other"
        status = 500  # unless a response starts: an app that fails before it answers
        t0 = time.perf_counter()

        async def counting_send(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        self.metrics.started()
        try:
            await self.app(scope, receive, counting_send)
        finally:
            self.metrics.finished(route, status, time.perf_counter() - t0)
