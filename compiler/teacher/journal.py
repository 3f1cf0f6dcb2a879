"""Append-only, fsync'd journal of paid teacher responses, keyed by the hash of the request.

A response is on disk before it counts, so a crash loses nothing that was paid for: a re-run
reads the journal and sends only what is missing. A torn last line (crash mid-write) is ignored.
Each priced answer also records what it cost (`usd`) and the most it was expected to cost
(`worst_usd`): the budget counts the one and learns from the other (see budget.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any


def journal_path(build_dir: Path) -> Path:
    """One journal per build folder: labels and generated inputs alike."""
    return build_dir / "journal" / "teacher.jsonl"


def request_key(model: str, messages: list[dict[str, str]], params: dict[str, Any]) -> str:
    canonical = json.dumps(
        {"model": model, "messages": messages, "params": params},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def journal_entry(
    key: str,
    text: str,
    usage: dict[str, int],
    price: dict[str, float] | None = None,
    logprobs: list[Any] | None = None,
    label_logprobs: dict[str, float] | None = None,
    seconds: float | None = None,
) -> dict[str, Any]:
    """One answer as journaled. `logprobs`: an endpoint's answer tokens with their alternatives;
    `label_logprobs`: a local teacher's score for every label. Either is the teacher's distribution over the
    labels, which soft-label training learns from (teacher/soft_labels.py). `seconds`: an endpoint's time to
    answer, or a local teacher's compute time per answer in its batch (the report's latency and cost)."""
    entry = {"key": key, "text": text, "usage": usage, **(price or {})}
    if seconds is not None:
        entry["seconds"] = round(seconds, 4)
    if logprobs is not None:
        entry["logprobs"] = logprobs
    if label_logprobs is not None:
        entry["label_logprobs"] = label_logprobs
    return entry


def read_entries(path: Path, skipped: list[int] | None = None) -> dict[str, dict[str, Any]]:
    """The journal's answers by key, read without changing the file (`plan` reads it while a build may
    be appending to it). Lines that are torn or not of an answer's shape (edited by hand, or written by
    something else) are skipped, their line numbers added to `skipped`: those answers are asked again."""
    entries: dict[str, dict[str, Any]] = {}
    if path.exists():
        with path.open("rb") as f:
            for number, line in enumerate(f, start=1):
                try:
                    entry = json.loads(line)
                except ValueError:
                    entry = None  # torn write from a crash, or one in progress
                if well_formed(entry):
                    entries[entry["key"]] = entry
                elif skipped is not None and line.strip():
                    skipped.append(number)
    return entries


def well_formed(entry: Any) -> bool:
    """An answer as journal_entry writes it: what every reader of the journal relies on."""
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("key"), str)
        and isinstance(entry.get("text"), str)
        and isinstance(entry.get("usage", {}), dict)
    )


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.skipped: list[int] = []  # lines of the wrong shape, or torn: their answers are asked again
        self.entries = read_entries(path, self.skipped)
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        drop_torn_tail(path)
        self._file = path.open("ab")

    def get(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    def append(self, entry: dict[str, Any]) -> None:
        """Write one `journal_entry` and fsync it."""
        self.append_many([entry])

    def append_many(self, entries: list[dict[str, Any]]) -> None:
        """Write and fsync; only then are the entries counted as answered."""
        data = b"".join((json.dumps(e, ensure_ascii=False) + "\n").encode("utf-8") for e in entries)
        with self._lock:
            self._file.write(data)
            self._file.flush()
            os.fsync(self._file.fileno())
            for entry in entries:
                self.entries[entry["key"]] = entry

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class GroupCommit:
    """Appends from many coroutines share one write and one fsync: every append made in one turn of the
    event loop is flushed together at the end of that turn. Each `append` returns only once its entry is
    on disk, so durability is that of `Journal.append`; the loop pays one fsync per turn, not per answer.
    """

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._waiting: list[tuple[dict[str, Any], asyncio.Future[None]]] = []

    async def append(self, entry: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        if not self._waiting:
            loop.call_soon(self._flush)
        self._waiting.append((entry, done))
        await done

    def _flush(self) -> None:
        batch, self._waiting = self._waiting, []
        try:
            self.journal.append_many([entry for entry, _ in batch])
        except OSError as exc:
            for _, done in batch:
                if not done.done():
                    done.set_exception(exc)
            return
        for _, done in batch:
            if not done.done():  # its worker may have been cancelled meanwhile; the entry is written
                done.set_result(None)

    def drain(self) -> None:
        """Write whatever is still waiting (its workers were cancelled before the loop's turn ended)."""
        if self._waiting:
            self._flush()


def drop_torn_tail(path: Path) -> None:
    """Cut a last line that a crash left unfinished, so the next append starts on a line of its own."""
    if not path.exists():
        return
    with path.open("r+b") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)
