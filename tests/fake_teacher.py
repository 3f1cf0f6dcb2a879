"""An OpenAI-compatible server on 127.0.0.1 for tests and benchmarks.

Real HTTP/1.1 with keep-alive on an asyncio loop of its own thread, so it keeps up with a client
sending over a thousand requests a second. Answers are deterministic (`answer(last user message)`);
every request is counted. Faults are injected per request by `fault(last user message, attempt)`,
which returns one of FAULTS or None to answer normally:

    429:<s>     429 Too Many Requests with Retry-After: <s>
    <status>    that HTTP status, e.g. 500, 503 or 401
    timeout     no answer until the client gives up
    reset       the connection is reset (TCP RST) without an answer
    malformed   200 with a body that is not JSON
    truncated   200 whose body stops halfway and the connection closes

Like a real server, it may honour a label schema (`constrain=True`: a `response_format` whose `label` is an
enum gets `{"label": ...}`, always one of the labels) and return each answer token's alternatives when asked
for `logprobs` (`label_probs(last user message)` gives the model's probability of each label). By default it
ignores both, as servers that do not know them do.

The Batch API (files and batches) is served too, enough for `teacher.batch`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

Answer = Callable[[str], str]
Fault = Callable[[str, int], "str | None"]
FAULTS = ("429:<s>", "<status>", "timeout", "reset", "malformed", "truncated")
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests"}
REASONS |= {500: "Internal Server Error", 503: "Service Unavailable"}


def messages_key(body: dict[str, Any]) -> str:
    """What identifies one request's content, to count the same request sent twice."""
    return hashlib.sha256(json.dumps(body.get("messages"), sort_keys=True).encode()).hexdigest()


class FakeTeacher:
    """`requests` counts chat requests received; `bodies`, `arrivals` and `sent` say what and when."""

    def __init__(
        self,
        answer: Answer,
        delay_s: float | Callable[[], float] = 0.0,
        prompt_tokens: int | None = None,
        fault: Fault | None = None,
        record: bool = True,
        batch_polls: int = 1,
        refuse: tuple[str, ...] = (),
        refuse_status: int = 400,
        constrain: bool = False,
        label_probs: Callable[[str], dict[str, float]] | None = None,
        port: int = 0,
    ) -> None:
        self.answer = answer
        self.delay = delay_s if callable(delay_s) else (lambda: float(delay_s))
        self.prompt_tokens = prompt_tokens  # reported usage; by default, words in the messages
        self.fault = fault
        self.record = record  # keep bodies (tests); a benchmark sends too many to keep
        self.requests = 0
        self.bodies: list[dict[str, Any]] = []
        self.authorizations: list[str] = []  # the Authorization header of each chat request, as received
        self.arrivals: list[float] = []  # time.monotonic() of each chat request
        self.faults: list[tuple[float, str, str]] = []  # (time, user message, fault) of each injected fault
        self.sent: Counter[str] = Counter()  # messages key -> times received
        self.attempts: Counter[str] = Counter()  # user message -> times received
        self.in_flight = 0
        self.connections = 0  # TCP connections accepted: with keep-alive, far fewer than requests
        self.batches: dict[str, dict[str, Any]] = {}
        self.files: dict[str, bytes] = {}
        self.batch_polls = batch_polls  # polls before a batch reports completed
        self.refuse = refuse  # request parameters answered with a 400, as some servers and models do
        self.refuse_status = refuse_status  # some servers refuse with a 422, or a 500
        self.constrain = constrain
        self.label_probs = label_probs
        self.port = port  # 0: any free port; a fixed one lets a restarted teacher come back where it was
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._ids = 0

    @property
    def base_url(self) -> str:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> FakeTeacher:
        self._thread.start()
        start = asyncio.start_server(self._connection, "127.0.0.1", self.port, backlog=1024)
        self._server = asyncio.run_coroutine_threadsafe(start, self._loop).result()
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:] if ":" in x)}
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                if not await self._route(method, path, headers, body, writer):
                    return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if not writer.is_closing():
                writer.close()

    async def _route(
        self, method: str, path: str, headers: dict[str, str], body: bytes, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request; False when the connection must end."""
        if method == "POST" and path.endswith("/chat/completions"):
            if self.record:
                self.authorizations.append(headers.get("authorization", ""))
            return await self._chat(json.loads(body), writer)
        if method == "GET" and path.endswith("/models"):
            return _respond(writer, 200, {"object": "list", "data": [{"id": "test-teacher", "object": "model"}]})
        if method == "POST" and path.endswith("/files"):
            file_id = self._new_id("file")
            self.files[file_id] = _multipart_file(headers["content-type"], body)
            return _respond(writer, 200, {"id": file_id, "object": "file", "purpose": "batch", "bytes": 0})
        if method == "POST" and path.endswith("/batches"):
            return _respond(writer, 200, self._create_batch(json.loads(body)))
        if method == "GET" and path.split("?")[0].endswith("/batches"):
            listed = [_public(b) for b in reversed(self.batches.values())]
            return _respond(writer, 200, {"object": "list", "data": listed, "has_more": False})
        if method == "GET" and "/batches/" in path:
            return _respond(writer, *self._poll_batch(path.rsplit("/", 1)[1]))
        if method == "GET" and path.endswith("/content"):
            content = self.files.get(path.split("/")[-2])
            if content is None:
                return _respond(writer, 404, {"error": {"message": "no such file"}})
            return _respond_bytes(writer, 200, content, "application/octet-stream")
        return _respond(writer, 404, {"error": {"message": f"no route {method} {path}"}})

    def _receive(self, body: dict[str, Any], arrival: bool) -> tuple[str, int]:
        """Count one chat request (direct, or a line of a batch): its last user message and attempt number."""
        user = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
        self.requests += 1
        self.sent[messages_key(body)] += 1
        attempt = self.attempts[user]
        self.attempts[user] += 1
        if self.record:
            self.bodies.append(body)
            if arrival:  # direct requests only: `arrivals` says nothing went around the Batch API
                self.arrivals.append(time.monotonic())
        return user, attempt

    async def _chat(self, body: dict[str, Any], writer: asyncio.StreamWriter) -> bool:
        user, attempt = self._receive(body, arrival=True)
        sent = set(body) | {(body.get("response_format") or {}).get("type")}  # json_schema: that format only
        if refused := [name for name in self.refuse if name in sent]:
            message = f"Unsupported parameter: '{refused[0]}' is not supported with this model."
            return _respond(writer, self.refuse_status, {"error": {"message": message, "param": refused[0]}})
        self.in_flight += 1
        try:
            await asyncio.sleep(self.delay())
            fault = self.fault(user, attempt) if self.fault else None
            if fault:
                self.faults.append((time.monotonic(), user, fault))
                return await _inject(fault, writer)
            try:
                text = self.answer(user)
            except Exception as exc:  # the answer function raised: a server error
                return _respond(writer, 500, {"error": {"message": str(exc)}})
            completion = self._completion(body, text, user)
            if body.get("stream"):
                await _stream(writer, completion)
                return True
            return _respond(writer, 200, completion)
        finally:
            self.in_flight -= 1

    def _completion(self, body: dict[str, Any], text: str, user: str = "") -> dict[str, Any]:
        prompt_tokens = self.prompt_tokens or sum(len(m["content"].split()) for m in body["messages"])
        labels = _label_enum(body) if self.constrain else None
        if labels:
            text = json.dumps({"label": _closest(labels, text)})
        message = {"role": "assistant", "content": text}
        choice: dict[str, Any] = {"index": 0, "finish_reason": "stop", "message": message}
        if body.get("logprobs") and self.label_probs is not None:
            choice["logprobs"] = {"content": _token_logprobs(text, self.label_probs(user), body.get("top_logprobs", 0))}
        return {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [choice],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": len(text.split()),
                "total_tokens": prompt_tokens + len(text.split()),
            },
        }

    def _new_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}-{self._ids}"

    def _create_batch(self, request: dict[str, Any]) -> dict[str, Any]:
        batch_id = self._new_id("batch")
        self.batches[batch_id] = {
            "id": batch_id,
            "object": "batch",
            "endpoint": request["endpoint"],
            "input_file_id": request["input_file_id"],
            "completion_window": request["completion_window"],
            "status": "in_progress",
            "created_at": 0,
            "polls": 0,
            "output_file_id": None,
            "error_file_id": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
        }
        return _public(self.batches[batch_id])

    def _poll_batch(self, batch_id: str) -> tuple[int, dict[str, Any]]:
        batch = self.batches.get(batch_id)
        if batch is None:
            return 404, {"error": {"message": "no such batch"}}
        batch["polls"] += 1
        if batch["status"] == "in_progress" and batch["polls"] >= self.batch_polls:
            self._finish_batch(batch)
        return 200, _public(batch)

    def _finish_batch(self, batch: dict[str, Any]) -> None:
        """Answer every line of the input file, as the endpoint would have over the completion window."""
        out, errors = [], []
        for line in self.files[batch["input_file_id"]].decode().splitlines():
            request = json.loads(line)
            body = request["body"]
            user, attempt = self._receive(body, arrival=False)
            fault = self.fault(user, attempt) if self.fault else None
            if fault:
                error = {"code": "server_error", "message": f"injected {fault}"}
                errors.append({"id": "r", "custom_id": request["custom_id"], "response": None, "error": error})
                continue
            response = {"status_code": 200, "request_id": "r", "body": self._completion(body, self.answer(user), user)}
            out.append({"id": "r", "custom_id": request["custom_id"], "response": response, "error": None})
        batch["status"] = "completed"
        batch["request_counts"] = {"total": len(out) + len(errors), "completed": len(out), "failed": len(errors)}
        batch["output_file_id"] = self._store("".join(json.dumps(x) + "\n" for x in out))
        batch["error_file_id"] = self._store("".join(json.dumps(x) + "\n" for x in errors)) if errors else None

    def _store(self, text: str) -> str:
        file_id = self._new_id("file")
        self.files[file_id] = text.encode()
        return file_id


def _label_enum(body: dict[str, Any]) -> list[str] | None:
    """The labels a request's `response_format` allows, or None when it asks for no label."""
    response_format = body.get("response_format") or {}
    try:  # OpenAI's json_schema, or llama-cpp-python's json_object with a schema
        schema = (
            response_format["json_schema"]["schema"] if "json_schema" in response_format else response_format["schema"]
        )
        return list(schema["properties"]["label"]["enum"])
    except (KeyError, TypeError):
        return None


def _closest(labels: list[str], text: str) -> str:
    """What a constrained decoder lets a model say: the label it was saying, else the first it can."""
    said = text.lower()
    return next((label for label in labels if label.lower() in said), labels[0])


def _token_logprobs(text: str, probs: dict[str, float], top: int) -> list[dict[str, Any]]:
    """The answer as tokens: what comes before its label, the label in 3-character pieces, what comes after.
    The label's first piece has each label's first piece as alternatives, at that label's probability;
    every other token is certain."""
    field = json.loads(text)["label"] if text.startswith("{") else text
    start = text.find(field)
    head, tail = text[:start], text[start + len(field) :]
    label = [field[i : i + 3] for i in range(0, len(field), 3)]
    firsts: dict[str, float] = {}
    for name, p in probs.items():
        firsts[name[:3]] = firsts.get(name[:3], 0.0) + p
    alternatives = sorted(firsts.items(), key=lambda kv: -kv[1])[:top]

    def token(piece: str, logprob: float, others: list[tuple[str, float]]) -> dict[str, Any]:
        listed = [{"token": t, "logprob": lp, "bytes": None} for t, lp in others]
        return {"token": piece, "logprob": logprob, "bytes": None, "top_logprobs": listed}

    first = token(label[0], math.log(firsts.get(label[0], 1e-9)), [(t, math.log(p)) for t, p in alternatives])
    certain = [token(piece, 0.0, [(piece, 0.0)]) for piece in label[1:]]
    return (
        [token(piece, 0.0, [(piece, 0.0)]) for piece in (head,) if piece]
        + [first, *certain]
        + [token(piece, 0.0, [(piece, 0.0)]) for piece in (tail,) if piece]
    )


def _public(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in batch.items() if k != "polls"}


async def _inject(fault: str, writer: asyncio.StreamWriter) -> bool:
    if fault.startswith("429:"):
        error = {"error": {"message": "rate limited", "type": "rate_limit"}}
        return _respond(writer, 429, error, {"retry-after": fault.split(":", 1)[1]})
    if fault.isdigit():
        return _respond(writer, int(fault), {"error": {"message": f"injected {fault}"}})
    if fault == "timeout":
        await asyncio.sleep(3600)  # the client gives up first; the test server's stop cancels this
        return False
    if fault == "reset":
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
        return False
    if fault == "malformed":
        return _respond_bytes(writer, 200, b'{"id": "chatcmpl-test", "choices": [{"mess', "application/json")
    if fault == "truncated":
        payload = json.dumps({"id": "chatcmpl-test", "object": "chat.completion", "choices": []}).encode()
        head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(payload)}\r\n\r\n"
        writer.write(head.encode() + payload[: len(payload) // 2])
        await writer.drain()
        writer.close()
        return False
    raise ValueError(f"unknown fault {fault!r}; one of {FAULTS}")


async def _stream(writer: asyncio.StreamWriter, completion: dict[str, Any]) -> None:
    """A completion as OpenAI streams it: server-sent events of chat.completion.chunk (the role, the content a
    word at a time, the finish reason), then [DONE], in HTTP chunks written as they are made."""
    base = {"id": completion["id"], "object": "chat.completion.chunk", "created": 0, "model": completion["model"]}
    text = completion["choices"][0]["message"]["content"]
    pieces = [w + " " for w in text.split(" ")[:-1]] + [text.split(" ")[-1]]
    deltas = [{"role": "assistant", "content": ""}] + [{"content": piece} for piece in pieces]
    events = [{**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    writer.write(head.encode())
    for data in [*(json.dumps(e) for e in events), "[DONE]"]:
        event = f"data: {data}\n\n".encode()
        writer.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
        await writer.drain()
        await asyncio.sleep(0)  # each event its own write, as a real server's tokens are
    writer.write(b"0\r\n\r\n")


def _respond(writer: asyncio.StreamWriter, status: int, payload: Any, headers: dict[str, str] | None = None) -> bool:
    return _respond_bytes(writer, status, json.dumps(payload).encode(), "application/json", headers)


def _respond_bytes(
    writer: asyncio.StreamWriter, status: int, payload: bytes, kind: str, headers: dict[str, str] | None = None
) -> bool:
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    head = f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}\r\ncontent-type: {kind}\r\n"
    writer.write(f"{head}content-length: {len(payload)}\r\n{extra}\r\n".encode() + payload)
    return True


def _multipart_file(content_type: str, body: bytes) -> bytes:
    """The `file` part of a multipart/form-data upload."""
    boundary = content_type.split("boundary=", 1)[1].strip('"').encode()
    for part in body.split(b"--" + boundary):
        head, _, content = part.partition(b"\r\n\r\n")
        if b'name="file"' in head:
            return content.removesuffix(b"\r\n")
    raise ValueError("no file in the upload")
