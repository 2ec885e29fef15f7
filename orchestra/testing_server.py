"""A fake OpenAI-compatible provider over loopback HTTP, for tests that run other processes.

The in-process test doubles (:mod:`orchestra.testing`) cannot reach a CLI subprocess. This
server can: a pool whose models say ``id: openai/<name>`` and ``api_base: <server.url>`` goes
through the real litellm client, over HTTP, to this server, which answers deterministically
and records every request it received, whichever process sent it::

    with FakeOpenAIServer(latency_s=0.05) as server:
        Path("fake.yaml").write_text(server.pool_yaml(["a", "b"]))
        subprocess.run(["orchestra", "run", "q", "--pool", "fake.yaml"])
        assert len(server.requests) == 1

Replies: ``answer from <model>`` (cut to ``max_tokens`` words), with usage counted in words
(never above the runtime's prompt bound). ``hold`` makes chosen models wait until
:meth:`FakeOpenAIServer.release` (to stop a run mid-call at a known point).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

__all__ = ["FakeOpenAIServer", "FakeRequest"]


@dataclass(frozen=True)
class FakeRequest:
    """One request the server received."""

    model: str
    messages: list[dict[str, Any]]
    max_tokens: int | None
    at: float

    @property
    def last_user(self) -> str:
        return next((str(m.get("content") or "") for m in reversed(self.messages)
                     if m.get("role") == "user"), "")


class FakeOpenAIServer:
    """An OpenAI-compatible ``/chat/completions`` endpoint on 127.0.0.1 (a thread per request).

    Args:
        reply: the reply text for a request (default ``answer from <model>``).
        latency_s: seconds each reply takes.
        hold: model names whose requests wait until :meth:`release` (or the server stops).
    """

    def __init__(self, *, reply: Callable[[FakeRequest], str] | None = None,
                 latency_s: float = 0.0, hold: Iterable[str] = ()) -> None:
        self.reply = reply or (lambda r: f"answer from {r.model}")
        self.latency_s = latency_s
        self.hold = set(hold)
        self.requests: list[FakeRequest] = []
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def requests_to(self, model: str) -> list[FakeRequest]:
        with self._lock:
            return [r for r in self.requests if r.model == model]

    def release(self) -> None:
        """Let held requests (and later ones to held models) answer."""
        self._released.set()

    def pool_yaml(self, models: Sequence[str], *, name: str = "fake", policy: str = "ensemble",
                  input_price: float = 1.0, output_price: float = 2.0,
                  max_output_tokens: int = 16, budget: str = "{usd: 1.0, rounds: 4}") -> str:
        """A pool file whose models are served by this server (vote refiner, one answerer)."""
        lines = [f"name: {name}", "models:"]
        for m in models:
            lines += [f"  - name: {m}", f"    id: openai/{m}", f"    api_base: {self.url}",
                      f"    input_price: {input_price}", f"    output_price: {output_price}",
                      "    context_window: 4096", f"    max_output_tokens: {max_output_tokens}",
                      "    timeout_s: 60", "    params: {api_key: fake}"]
        lines += ["agents:", "  - name: assistant", "    system_prompt: Answer briefly.",
                  "refiner: {kind: vote}", f"policy: {policy}", f"budget: {budget}"]
        return "\n".join(lines) + "\n"

    def __enter__(self) -> Self:
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._released.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def _answer(self, body: dict[str, Any]) -> dict[str, Any]:
        req = FakeRequest(model=str(body.get("model", "")), messages=list(body.get("messages") or []),
                          max_tokens=body.get("max_tokens"), at=time.time())
        with self._lock:
            self.requests.append(req)
        if req.model in self.hold:
            self._released.wait()
        if self.latency_s:
            time.sleep(self.latency_s)
        words = self.reply(req).split()
        if req.max_tokens:
            words = words[: int(req.max_tokens)]
        prompt = sum(len(str(m.get("content") or "").split()) + 1 for m in req.messages)
        return {
            "id": f"fake-{len(self.requests)}", "object": "chat.completion",
            "created": int(req.at), "model": req.model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": " ".join(words)}}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": len(words),
                      "total_tokens": prompt + len(words)},
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(n) or b"{}")
                    data = json.dumps(server._answer(body)).encode()
                    code = 200
                except (ValueError, TypeError, AttributeError) as e:  # a bad request: a 400
                    data, code = json.dumps({"error": {"message": str(e)}}).encode(), 400
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client was killed or gave up: nothing to answer

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

        return Handler
