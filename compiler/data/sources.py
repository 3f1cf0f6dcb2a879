"""Reading the user's input files: bare inputs (.jsonl, .csv, .txt, .parquet), or inputs with answers already
paid for (distillc.data.imports): one input per row, cleaned, deduplicated.

A bad row is skipped and reported with its line number; it never stops the build.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillc.data.imports import Row, message_rows, parse_json
from distillc.data.normalize import exact_key
from distillc.spec.ir import GoldIR, InputsIR, SourceIR
from distillc.spec.load import MESSAGE_FORMATS, source_files, table_format
from distillc_runtime.integrity import sha256 as file_sha256

MAX_CHARS = 20_000
REPORTED_PROBLEMS = 20
COUNTS = ("read", "kept", "duplicates", "near_duplicates", "empty", "too_long", "invalid", "imported", "gold")


def input_id(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass
class Reading:
    """What reading the sources skipped and found, for the report."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTS, 0))
    problems: list[str] = field(default_factory=list)  # the first REPORTED_PROBLEMS, with file and line
    system: str = ""  # the first system prompt unlike the spec's instructions
    other_systems: int = 0  # rows sent with a system prompt unlike the instructions

    def problem(self, where: str, problem: str) -> None:
        self.counts["invalid"] += 1
        if len(self.problems) < REPORTED_PROBLEMS:
            self.problems.append(f"{where}: {problem}")


def kept_inputs(inputs: InputsIR, reading: Reading) -> list[dict[str, Any]]:
    """The inputs the build keeps: each source's first `limit` usable ones (all of them without a limit)."""
    return list(read_inputs(inputs, reading, limit_each=True))


def read_inputs(
    inputs: InputsIR, reading: Reading, instructions: str = "", limit_each: bool = False
) -> Iterator[dict[str, Any]]:
    """The sources' usable inputs, source after source in file order, cleaned, and (unless `inputs.dedup` is
    off) without exact repeats, across sources too: equal but for case, punctuation and spacing. With dedup
    off a source's repeats stay, but a bare input that repeats an imported one is still dropped, so an answer
    already paid for is never bought again (answered sources come first). A row with an
    answer carries it (`answer`) and where it came from (`from`: file, sha256, line). With `limit_each`, a
    source stops at its `limit`. Memory: 8 bytes of hash per distinct input, in a set."""
    seen: set[bytes] = set()
    golds = gold_labels(inputs.gold) if inputs.gold is not None else {}
    same_system = " ".join(instructions.split())
    for source in inputs.sources:
        taken = 0
        for file, sha, row in _source_rows(source):
            reading.counts["read"] += 1
            if row.problem:
                reading.problem(f"{file.name}:{row.line}", row.problem)
                continue
            text = " ".join(str(row.text).split()) if row.text is not None else ""
            if not text:
                reading.counts["empty"] += 1
            elif len(text) > MAX_CHARS:
                reading.counts["too_long"] += 1
            elif (key := exact_key(text)) in seen and (inputs.dedup != "off" or row.answer is None):
                reading.counts["duplicates"] += 1  # with dedup off, only a bare repeat of an imported answer
            else:
                if inputs.dedup != "off" or row.answer is not None:
                    seen.add(key)
                if row.system is not None and same_system and " ".join(row.system.split()) != same_system:
                    reading.other_systems += 1
                    reading.system = reading.system or row.system
                item: dict[str, Any] = {"id": input_id(text), "input": text}
                gold = _answer(row.gold) if row.gold is not None else golds.get(exact_key(text)) if golds else None
                if gold is not None:
                    reading.counts["gold"] += 1
                    item["gold"] = gold
                if row.answer is not None:
                    reading.counts["imported"] += 1
                    item["answer"] = row.answer
                    item["from"] = {"file": file.name, "sha256": sha, "line": row.line}
                    if source.reask_invalid:
                        item["reask_invalid"] = True
                yield item
                taken += 1
                if limit_each and source.limit and taken >= source.limit:
                    break


def _source_rows(source: SourceIR) -> Iterator[tuple[Path, str, Row]]:
    """(file, its sha256, row) of every row of a source, its files in order."""
    output = Path(source.output_path) if source.output_path else None
    path = Path(source.path)
    for file in source_files(path):
        sha = source.sha256 if file == path else file_sha256(file)
        if source.format in MESSAGE_FORMATS:
            rows = message_rows(file, source.format, source.extract, output, source.gold_field)
        elif source.format == "pairs":
            rows = _rows(file, table_format(file), source.field, source.answer_field, source.gold_field)
        else:
            rows = _rows(file, source.format, source.field, "", source.gold_field)
        for row in rows:
            yield file, sha, row


def _rows(path: Path, fmt: str, field: str, answer_field: str = "", gold_field: str = "") -> Iterator[Row]:
    """One Row per row of a table: its input, and its answer and human label where those fields are named."""
    fields = (field, *(name for name in (answer_field, gold_field) if name))
    for line, values, problem in _values(path, fmt, fields):
        if problem:
            yield Row(line, problem=problem)
            continue
        named = dict(zip(fields, values, strict=True))
        answer = _answer(named[answer_field]) if answer_field else None
        yield Row(line, named[field], answer, gold=named[gold_field] if gold_field else None)


def gold_labels(gold: GoldIR) -> dict[bytes, str]:
    """A gold file's human labels by input (its exact key: equal but for case, punctuation and spacing)."""
    labels = {}
    for _, values, problem in _values(Path(gold.path), gold.format, (gold.field, gold.gold_field)):
        if not problem and values[0] is not None and (label := _answer(values[1])) is not None:
            labels[exact_key(" ".join(str(values[0]).split()))] = label
    return labels


def _answer(value: Any) -> str | None:
    """An answer as text: JSON answers held as objects are written back as JSON; none or empty is no answer."""
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _values(path: Path, fmt: str, fields: tuple[str, ...]) -> Iterator[tuple[int, tuple[Any, ...], str]]:
    """(line or row number, the fields' values, problem) per row; problem is "" for a good row."""
    if fmt == "parquet":
        yield from _parquet_values(path, fields)
        return
    with path.open(encoding="utf-8", errors="replace", newline="") as f:
        if fmt == "txt":
            for n, line in enumerate(f, 1):
                yield n, (line,), ""
        elif fmt == "jsonl":
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = parse_json(line)
                except ValueError as exc:
                    yield n, (), f"invalid JSON ({exc.msg if isinstance(exc, json.JSONDecodeError) else exc})"
                    continue
                if not isinstance(row, dict) or fields[0] not in row:
                    yield n, (), f"no field '{fields[0]}'"
                else:
                    yield n, tuple(row.get(name) for name in fields), ""
        else:
            reader = csv.DictReader(f)
            if missing := [name for name in fields if name not in (reader.fieldnames or [])]:
                yield 1, (), f"no column '{missing[0]}' (columns: {', '.join(reader.fieldnames or [])})"
                return
            for row in reader:
                yield reader.line_num, tuple(row[name] for name in fields), ""


def _parquet_values(path: Path, fields: tuple[str, ...]) -> Iterator[tuple[int, tuple[Any, ...], str]]:
    """Rows of the named columns, read in batches so a large file never sits in memory whole."""
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        yield 1, (), f"not a readable Parquet file ({exc})"
        return
    columns = table.schema_arrow.names
    if missing := [name for name in fields if name not in columns]:
        yield 1, (), f"no column '{missing[0]}' (columns: {', '.join(columns)})"
        return
    row = 0
    for batch in table.iter_batches(columns=list(fields), batch_size=4096):
        for values in zip(*(batch.column(k).to_pylist() for k in range(len(fields))), strict=True):
            row += 1
            if values[0] is not None and not isinstance(values[0], str):
                yield row, (), f"column '{fields[0]}' holds {type(values[0]).__name__}, not text"
            else:
                yield row, values, ""
