"""The journal of paid teacher answers: an SQLite database (WAL, synchronous=FULL), keyed by the request's hash.

An answer is committed before it counts, so a crash loses nothing that was paid for: a re-run looks each
request up (an index probe) and sends only what is missing. Readers (`plan`, `compare`, the report) open the
file read-only and never block the writer. Each priced answer also records what it cost (`usd`) and the most
it was expected to cost (`worst_usd`): the budget counts the one and learns from the other (see budget.py).

A journal of the older JSONL form (`teacher.jsonl`) is imported on first open, in one transaction, then kept
beside it as `teacher.jsonl.migrated`; `distillc journal export` writes the JSONL form back for grep.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

FILENAME = "teacher.sqlite"
LEGACY = "teacher.jsonl"  # the journal's form before the database: migrated on first open
_PROBE = 500  # keys per `IN (...)` lookup: well under SQLite's 32,766 bound parameters

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY,  -- request_key: what the answer depends on
    usd REAL,              -- what it cost (priced teachers only)
    worst_usd REAL,        -- the most it was expected to cost
    entry BLOB NOT NULL    -- the whole journal_entry, JSON
)
"""


def journal_path(build_dir: Path) -> Path:
    """One journal per build folder: labels and generated inputs alike."""
    return build_dir / "journal" / FILENAME


def request_key(model: str, messages: list[dict[str, str]], params: dict[str, Any]) -> str:
    """SHA-256 of {"messages", "model", "params"} as canonical JSON (sorted keys, compact, UTF-8)."""
    return request_keys(model, params)(messages)


def request_keys(model: str, params: dict[str, Any]) -> Callable[[list[dict[str, str]]], str]:
    """`request_key` for one model and its parameters, whose part of the JSON is written once.

    The messages, nearly all of the bytes, are written by orjson, which spells strings exactly as `json`
    does and is ten times faster; the model and parameters by `json`, whose floats (1e-05) orjson spells
    otherwise. Keys therefore match those of journals written before."""
    tail = b',"model":' + _canonical(model) + b',"params":' + _canonical(params) + b"}"

    def key(messages: list[dict[str, str]]) -> str:
        try:
            body = orjson.dumps(messages, option=orjson.OPT_SORT_KEYS)
        except TypeError:  # what orjson refuses (lone surrogates, huge ints): `json` says why, or writes it
            body = _canonical(messages)
        return hashlib.sha256(b'{"messages":' + body + tail).hexdigest()

    return key


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


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


def imported_entry(item: dict[str, Any]) -> dict[str, Any]:
    """An answer the user already had (an input row's `answer`), as journaled: keyed by the input and the
    answer, never by a teacher's request, so it is neither mistaken for a teacher's answer nor lost when the
    teacher changes; `imported` says where it came from (file, sha256, line). It cost nothing here."""
    canonical = orjson.dumps({"answer": item["answer"], "imported": item["input"]}, option=orjson.OPT_SORT_KEYS)
    key = hashlib.sha256(canonical).hexdigest()
    usage = {"prompt_tokens": 0, "completion_tokens": 0}
    return {**journal_entry(key, item["answer"], usage), "imported": item["from"]}


def well_formed(entry: Any) -> bool:
    """An answer as journal_entry writes it: what every reader of the journal relies on."""
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("key"), str)
        and isinstance(entry.get("text"), str)
        and isinstance(entry.get("usage", {}), dict)
    )


@dataclass(frozen=True)
class Totals:
    """What the budget needs from every answer so far, summed by the database rather than in Python."""

    answers: int
    spent_usd: float
    most_usd: float  # the most one answer cost
    billing_scale: float | None  # the most an answer was billed, as a share of what was reserved for it


class Answers:
    """The journal's lookups, shared by the writer (Journal) and the read-only view (JournalView)."""

    _db: sqlite3.Connection
    _lock: threading.Lock

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT entry FROM answers WHERE key = ?", (key,)).fetchone()
        return orjson.loads(row[0]) if row else None

    def get_many(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The journaled answers among `keys`, by key (index probes in batches; memory follows `keys`)."""
        found: dict[str, dict[str, Any]] = {}
        for chunk in _chunks(keys):
            for (blob,) in self._select("entry", chunk):
                entry = orjson.loads(blob)
                found[entry["key"]] = entry
        return found

    def answered(self, keys: Iterable[str]) -> set[str]:
        """Which of `keys` have an answer: the index alone, no answer is decoded."""
        return {key for chunk in _chunks(keys) for (key,) in self._select("key", chunk)}

    def _select(self, column: str, keys: list[str]) -> list[tuple[Any]]:
        marks = ",".join("?" * len(keys))
        with self._lock:
            return self._db.execute(f"SELECT {column} FROM answers WHERE key IN ({marks})", keys).fetchall()

    def entries(self) -> Iterator[dict[str, Any]]:
        """Every answer, in the order they were journaled (read in pages: memory stays flat)."""
        last = 0
        while True:
            with self._lock:
                rows = self._db.execute(
                    "SELECT rowid, entry FROM answers WHERE rowid > ? ORDER BY rowid LIMIT 1000", (last,)
                ).fetchall()
            if not rows:
                return
            last = rows[-1][0]  # the next page starts after this one
            for _, blob in rows:
                yield orjson.loads(blob)

    def totals(self) -> Totals:
        with self._lock:
            count, spent, most, scale = self._db.execute(
                "SELECT count(*), total(usd), max(usd), max(CASE WHEN worst_usd > 0 THEN usd / worst_usd END) "
                "FROM answers"
            ).fetchone()
        return Totals(count, float(spent), float(most or 0.0), scale)

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM answers").fetchone()[0]

    def export(self, out: IO[bytes]) -> int:
        """Write every answer as one JSON line (the journal's JSONL form); returns how many."""
        count = 0
        for entry in self.entries():
            out.write(orjson.dumps(entry) + b"\n")
            count += 1
        return count

    def close(self) -> None:
        self._db.close()


class Journal(Answers):
    """The build's writer. Opening it creates the database, or imports an older JSONL journal found beside it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.skipped: list[int] = []  # lines of a migrated JSONL journal that were torn or not an answer
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with disk_errors(path):
            # One connection shared by the labeling threads and event loop, serialized by the lock.
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # the WAL is fsync'd at every commit: power loss included
            self._db.execute(_SCHEMA)
            legacy = path.with_name(LEGACY)
            if legacy.exists():
                self.skipped = _import_jsonl(self._db, legacy)
                legacy.rename(legacy.with_name(LEGACY + ".migrated"))

    def append(self, entry: dict[str, Any]) -> None:
        """Commit one `journal_entry`."""
        self.append_many([entry])

    def append_many(self, entries: list[dict[str, Any]]) -> None:
        """Commit the entries in one transaction; only then are they counted as answered."""
        self._commit("INSERT OR REPLACE", entries)

    def add_imported(self, entries: list[dict[str, Any]]) -> int:
        """Commit answers imported from the user's files (`imported_entry`) that the journal lacks; one already
        there stays as first imported, so importing the same file again writes nothing. Returns how many
        were new."""
        return self._commit("INSERT OR IGNORE", entries)

    def _commit(self, insert: str, entries: list[dict[str, Any]]) -> int:
        rows = [_row(entry) for entry in entries]
        with self._lock, disk_errors(self.path):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                before = self._db.total_changes
                self._db.executemany(f"{insert} INTO answers VALUES (?, ?, ?, ?)", rows)
                added = self._db.total_changes - before
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        return added

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class JournalView(Answers):
    """A read-only look at a build folder's journal, safe beside a running build: it writes nothing, and a
    JSONL journal not yet migrated is read as it is, without being migrated."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.skipped: list[int] = []
        self._lock = threading.Lock()
        legacy = path.with_name(LEGACY)
        if legacy.exists() or not path.exists():  # not migrated yet (or being migrated right now), or none
            self._db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            self._db.execute(_SCHEMA)
            if legacy.exists():
                self.skipped = _import_jsonl(self._db, legacy)
        else:
            self._db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)

    def __enter__(self) -> JournalView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_WRITE_ERRORS = {"SQLITE_FULL": errno.ENOSPC, "SQLITE_READONLY": errno.EROFS, "SQLITE_CANTOPEN": errno.EACCES}


@contextmanager
def disk_errors(path: Path) -> Iterator[None]:
    """SQLite's failures to write (a full disk, a read-only folder, a file-size limit) as the OSError every
    other write raises, so the build reports them alike (E205) and keeps what was committed."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        base = "_".join(getattr(exc, "sqlite_errorname", "").split("_")[:2])  # SQLITE_IOERR_WRITE -> SQLITE_IOERR
        if base in _WRITE_ERRORS or base == "SQLITE_IOERR":
            raise OSError(_WRITE_ERRORS.get(base, errno.EIO), f"{exc} (the teacher journal)", str(path)) from exc
        raise


def _row(entry: dict[str, Any]) -> tuple[str, float | None, float | None, bytes]:
    return (entry["key"], entry.get("usd"), entry.get("worst_usd"), orjson.dumps(entry))


def _chunks(keys: Iterable[str]) -> Iterator[list[str]]:
    chunk: list[str] = []
    for key in keys:
        chunk.append(key)
        if len(chunk) == _PROBE:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _import_jsonl(db: sqlite3.Connection, legacy: Path) -> list[int]:
    """Insert a JSONL journal's answers (a later line wins, as it did when the file was read) in one
    transaction; returns the numbers of lines skipped: torn by a crash, or not of an answer's shape."""
    skipped: list[int] = []
    db.execute("BEGIN IMMEDIATE")
    try:
        with legacy.open("rb") as f:
            for number, line in enumerate(f, start=1):
                try:
                    entry = orjson.loads(line)
                except orjson.JSONDecodeError:
                    entry = None  # torn write from a crash, or one in progress
                if well_formed(entry):
                    db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?)", _row(entry))
                elif line.strip():
                    skipped.append(number)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return skipped


class GroupCommit:
    """Appends from many coroutines share one transaction: every append made in one turn of the event loop
    is committed together at the end of that turn. Each `append` returns only once its entry is committed,
    so durability is that of `Journal.append`; the loop pays one commit (one fsync) per turn, not per answer.
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
        except (OSError, sqlite3.Error) as exc:
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
    """Cut a last line that a crash left unfinished, so the next append starts on a line of its own
    (the batch provider's JSONL state file)."""
    if not path.exists():
        return
    with path.open("r+b") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)
