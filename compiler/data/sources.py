"""Reading the user's input files (.jsonl, .csv, .txt, .parquet): one input per row, cleaned, deduplicated.

A bad row is skipped and reported with its line number; it never stops the build.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distillc.data.normalize import exact_key
from distillc.spec.ir import InputsIR

MAX_CHARS = 20_000
REPORTED_PROBLEMS = 20


def input_id(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def kept_inputs(source: InputsIR, counts: dict[str, int], problems: list[str]) -> list[dict[str, str]]:
    """The inputs the build keeps: the first `limit` usable ones (all of them without a limit)."""
    rows = []
    for row in read_inputs(source, counts, problems):
        rows.append(row)
        if source.limit and len(rows) >= source.limit:
            break
    return rows


def read_inputs(source: InputsIR, counts: dict[str, int], problems: list[str]) -> Iterator[dict[str, str]]:
    """The source file's usable inputs, in file order, cleaned, and (unless `inputs.dedup` is off) without
    exact repeats: equal but for case, punctuation and spacing. What it skips is tallied in `counts` (read,
    duplicates, empty, too_long, invalid) and `problems`. Memory: 8 bytes of hash per distinct input, in a set."""
    seen: set[bytes] = set()
    for line, value, problem in _rows(Path(source.path), source.format, source.field):
        counts["read"] += 1
        if problem:
            counts["invalid"] += 1
            if len(problems) < REPORTED_PROBLEMS:
                problems.append(f"{Path(source.path).name}:{line}: {problem}")
            continue
        text = " ".join(str(value).split()) if value is not None else ""
        if not text:
            counts["empty"] += 1
        elif len(text) > MAX_CHARS:
            counts["too_long"] += 1
        elif source.dedup != "off" and (key := exact_key(text)) in seen:
            counts["duplicates"] += 1
        else:
            if source.dedup != "off":
                seen.add(key)
            yield {"id": input_id(text), "input": text}


def _rows(path: Path, fmt: str, field: str) -> Iterator[tuple[int, Any, str]]:
    """(line or row number, value, problem) per row; problem is "" for a good row."""
    if fmt == "parquet":
        yield from _parquet_rows(path, field)
        return
    with path.open(encoding="utf-8", errors="replace", newline="") as f:
        if fmt == "txt":
            for n, line in enumerate(f, 1):
                yield n, line, ""
        elif fmt == "jsonl":
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    yield n, None, f"invalid JSON ({exc.msg})"
                    continue
                if not isinstance(row, dict) or field not in row:
                    yield n, None, f"no field '{field}'"
                else:
                    yield n, row[field], ""
        else:
            reader = csv.DictReader(f)
            if field not in (reader.fieldnames or []):
                yield 1, None, f"no column '{field}' (columns: {', '.join(reader.fieldnames or [])})"
                return
            for row in reader:
                yield reader.line_num, row[field], ""


def _parquet_rows(path: Path, field: str) -> Iterator[tuple[int, Any, str]]:
    """Rows of one column, read in batches so a large file never sits in memory whole."""
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        yield 1, None, f"not a readable Parquet file ({exc})"
        return
    columns = table.schema_arrow.names
    if field not in columns:
        yield 1, None, f"no column '{field}' (columns: {', '.join(columns)})"
        return
    row = 0
    for batch in table.iter_batches(columns=[field], batch_size=4096):
        for value in batch.column(0).to_pylist():
            row += 1
            if value is not None and not isinstance(value, str):
                yield row, None, f"column '{field}' holds {type(value).__name__}, not text"
            else:
                yield row, value, ""
