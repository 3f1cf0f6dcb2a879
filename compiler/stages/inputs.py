"""Gather inputs from the spec's source file (.jsonl, .csv, .txt, .parquet): one input per row, cleaned, deduplicated.

A bad row is skipped and reported with its line number; it never stops the build.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distillc.build.artifacts import write_jsonl
from distillc.build.events import Event
from distillc.build.runner import Stage, StageContext
from distillc.errors import DistillcError
from distillc.spec.ir import InputsIR
from distillc.teacher.dedup import distinct_ngram_ratio
from distillc.teacher.journal import Journal, journal_path

MAX_CHARS = 20_000
REPORTED_PROBLEMS = 20


def input_id(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def run(ctx: StageContext) -> dict[str, Any]:
    if ctx.spec.inputs.mode == "generate":
        return _generate(ctx)
    source = ctx.spec.inputs
    counts = {"read": 0, "kept": 0, "duplicates": 0, "empty": 0, "too_long": 0, "invalid": 0}
    problems: list[str] = []
    rows = kept_inputs(source, counts, problems)
    counts["kept"] = write_jsonl(ctx.workdir / "inputs.jsonl", rows)
    ctx.log(f"{counts['kept']} inputs kept of {counts['read']} read", **counts)
    return {**counts, "problems": problems, **diversity([r["input"] for r in rows])}


def diversity(texts: list[str]) -> dict[str, float]:
    """How varied the inputs are: shares of distinct words and word pairs, and the mean length in words."""
    words = [len(t.split()) for t in texts]
    return {
        "distinct_1": distinct_ngram_ratio(texts, 1),
        "distinct_2": distinct_ngram_ratio(texts, 2),
        "mean_words": round(sum(words) / max(1, len(words)), 1),
    }


def kept_inputs(source: InputsIR, counts: dict[str, int], problems: list[str]) -> list[dict[str, str]]:
    """The inputs the build keeps: the first `limit` usable ones (all of them without a limit)."""
    rows = []
    for row in read_inputs(source, counts, problems):
        rows.append(row)
        if source.limit and len(rows) >= source.limit:
            break
    return rows


def read_inputs(source: InputsIR, counts: dict[str, int], problems: list[str]) -> Iterator[dict[str, str]]:
    """The source file's usable inputs, in file order, cleaned and deduplicated (case-insensitively);
    what it skips is tallied in `counts` (read, duplicates, empty, too_long, invalid) and `problems`."""
    seen: set[str] = set()
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
        elif text.lower() in seen:
            counts["duplicates"] += 1
        else:
            seen.add(text.lower())
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


def _generate(ctx: StageContext) -> dict[str, Any]:
    from distillc.teacher.generation import generate

    gen = ctx.spec.inputs.generate
    assert gen is not None
    with Journal(journal_path(ctx.build_dir)) as journal:
        result = generate(ctx.spec, journal, ctx.emit)
    if not result.inputs:
        raise DistillcError(
            "E404",
            f"the teacher produced no usable input in {result.requests} requests: every answer was empty, "
            "unparseable or a duplicate",
            help="the answers are journaled; check the teacher, or loosen inputs.generate.guidance",
        )
    if len(result.inputs) < gen.count:
        ctx.emit(
            Event(
                "warning",
                ctx.stage,
                f"made {len(result.inputs)} of {gen.count} inputs within "
                f"{gen.max_requests} requests (inputs.generate.max_requests)",
            )
        )
    write_jsonl(ctx.workdir / "inputs.jsonl", ({"id": input_id(t), "input": t} for t in result.inputs))
    ctx.log(f"{len(result.inputs)} inputs generated in {result.requests} requests")
    return {**result.summary(), "kept": len(result.inputs)}


STAGE = Stage(
    name="inputs",
    version=3,  # 3: what generating cost is counted from the journal, not from a file of the artifact
    # task, teacher and budget: generated inputs are the teacher's answers to prompts made from the task's
    # examples, within the budget.
    reads=("inputs", "task", "teacher", "budget"),
    needs=(),
    produces=("inputs.jsonl",),
    run=run,
)
