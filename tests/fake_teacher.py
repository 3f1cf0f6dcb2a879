"""An OpenAI-compatible chat server on 127.0.0.1 for tests: real HTTP, deterministic answers, counted requests."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = Callable[[str], str]


class FakeTeacher:
    """Answers each chat request with `answer(last user message)`; `requests` counts what was received."""

    def __init__(self, answer: Answer, delay_s: float = 0.0, prompt_tokens: int | None = None) -> None:
        self.answer = answer
        self.delay_s = delay_s
        self.prompt_tokens = prompt_tokens  # reported usage; by default, words in the messages
        self.requests = 0
        self.bodies: list[dict[str, Any]] = []
        self.arrivals: list[float] = []  # time.monotonic() of each request
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> FakeTeacher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        teacher = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
                with teacher._lock:
                    teacher.requests += 1
                    teacher.arrivals.append(time.monotonic())
                    teacher.bodies.append(body)
                user = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
                time.sleep(teacher.delay_s)
                try:
                    text = teacher.answer(user)
                except Exception as exc:  # an injected fault: the answer function raised
                    self._send(500, json.dumps({"error": {"message": str(exc)}}).encode())
                    return
                payload = json.dumps(
                    {
                        "id": "chatcmpl-test",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [
                            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
                        ],
                        "usage": {
                            "prompt_tokens": teacher.prompt_tokens
                            or sum(len(m["content"].split()) for m in body["messages"]),
                            "completion_tokens": len(text.split()),
                            "total_tokens": 0,
                        },
                    }
                ).encode()
                self._send(200, payload)

            def _send(self, status: int, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler
