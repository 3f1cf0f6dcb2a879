"""The inputs stage: every supported file type; bad rows are skipped and reported, never fatal."""

from __future__ import annotations

from pathlib import Path

from distillc import api
from distillc.build.artifacts import read_jsonl
from tests.conftest import VALID


def gather(tmp_path: Path, filename: str, content: str, source: str) -> tuple[list[str], dict]:
    if content:
        (tmp_path / filename).write_text(content, encoding="utf-8")
    spec = tmp_path / "spec.yaml"
    spec.write_text(VALID.replace("source: {path: inputs.txt}", f"source: {source}"))
    result = api.build(spec, out=tmp_path / "out", until="inputs")
    record = result.stage("inputs")
    return [r["input"] for r in read_jsonl(record.artifact / "inputs.jsonl")], record.summary


def test_jsonl_skips_bad_rows_with_line_numbers(tmp_path: Path) -> None:
    content = '{"text": "card declined"}\n{broken\n{"body": "no text"}\n{"text": "  "}\n\n{"text": "Card  DECLINED"}\n'
    content += '{"text": "app crashes on start"}\n'
    inputs, summary = gather(tmp_path, "t.jsonl", content, "{path: t.jsonl, field: text}")
    assert inputs == ["card declined", "app crashes on start"]
    assert summary["invalid"] == 2 and summary["empty"] == 1 and summary["duplicates"] == 1
    assert summary["problems"][0].startswith("t.jsonl:2: invalid JSON")
    assert summary["problems"][1] == "t.jsonl:3: no field 'text'"


def test_csv_with_quoted_multiline_cells_and_limit(tmp_path: Path) -> None:
    content = 'id,body\n1,"first ticket, with a comma"\n2,"second\nspans lines"\n3,third\n'
    inputs, summary = gather(tmp_path, "t.csv", content, "{path: t.csv, field: body, limit: 2}")
    assert inputs == ["first ticket, with a comma", "second spans lines"]
    assert summary["kept"] == 2


def test_csv_without_the_column_says_which_columns_exist(tmp_path: Path) -> None:
    inputs, summary = gather(tmp_path, "t.csv", "id,body\n1,x\n", "{path: t.csv, field: text}")
    assert inputs == []
    assert summary["problems"] == ["t.csv:1: no column 'text' (columns: id, body)"]


def test_txt_one_input_per_line(tmp_path: Path) -> None:
    inputs, _ = gather(tmp_path, "t.txt", "alpha\n\nbeta\nalpha\n", "{path: t.txt}")
    assert inputs == ["alpha", "beta"]


def test_editing_the_input_file_invalidates_the_stage(tmp_path: Path) -> None:
    gather(tmp_path, "t.txt", "alpha\n", "{path: t.txt}")
    inputs, _ = gather(tmp_path, "t.txt", "alpha\ngamma\n", "{path: t.txt}")
    assert inputs == ["alpha", "gamma"]


def test_parquet_column_with_nulls_and_wrong_types(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": [1, 2, 3, 4], "body": ["first", None, "second", "first"]}), tmp_path / "t.parquet")
    inputs, summary = gather(tmp_path, "t.parquet", "", "{path: t.parquet, field: body}")
    assert inputs == ["first", "second"]
    assert (summary["empty"], summary["duplicates"]) == (1, 1)
    _, summary = gather(tmp_path, "t.parquet", "", "{path: t.parquet, field: id}")
    assert summary["problems"][0] == "t.parquet:1: column 'id' holds int, not text"
