"""How fast each input format is read, on this machine: rows per second over 100,000 rows.

    python bench/import_formats.py [--rows 100000] [--repeats 3]

For each format it writes the rows in its vendor's documented shape (a production prompt template around
each input, an answer for each, a system prompt; the Batch API's output file in shuffled order), then times
`distillc.data.sources.read_inputs` over them as the inputs stage reads them (cleaning, exact dedup, `extract`
on the message formats, answers and provenance carried), and reports the median of the repeats.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow
import pyarrow.parquet

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.*, run from anywhere

from distillc.data.sources import Reading, read_inputs  # noqa: E402
from distillc.spec.ir import InputsIR, SourceIR  # noqa: E402
from distillc_runtime.integrity import sha256  # noqa: E402
from tests.planted import sentence  # noqa: E402

SYSTEM = "You are SupportBot. Route the ticket."
EXTRACT = r"Ticket:\n(?P<input>.*)\n\nAnswer with one word\."


def prompt(text: str) -> str:
    return f"Ticket:\n{text}\n\nAnswer with one word."


def messages(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt(text)}]


def completion(answer: str) -> dict[str, Any]:
    message = {"role": "assistant", "content": answer}
    return {"object": "chat.completion", "choices": [{"index": 0, "message": message}]}


def write_all(folder: Path, texts: list[str], answers: list[str]) -> dict[str, SourceIR]:
    def lines(path: Path, records: Any) -> Path:
        with path.open("w") as f:
            for record in records:
                f.write(json.dumps(record) + "\n")
        return path

    pairs = list(zip(texts, answers, strict=True))
    chat = lines(
        folder / "chat.jsonl", ({"messages": [*messages(t), {"role": "assistant", "content": a}]} for t, a in pairs)
    )
    requests = (
        {"custom_id": f"r{n}", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": messages(t)}}
        for n, t in enumerate(texts)
    )
    batch_in = lines(folder / "batch_in.jsonl", requests)
    outputs = [
        {"id": f"b{n}", "custom_id": f"r{n}", "response": {"status_code": 200, "body": completion(a)}, "error": None}
        for n, a in enumerate(answers)
    ]
    random.Random(0).shuffle(outputs)
    batch_out = lines(folder / "batch_out.jsonl", outputs)
    calls = ({"request": {"messages": messages(t)}, "response": completion(a), "status": 200} for t, a in pairs)
    log = lines(folder / "log.jsonl", calls)
    pairs_jsonl = lines(folder / "pairs.jsonl", ({"text": t, "label": a} for t, a in pairs))
    pairs_csv = folder / "pairs.csv"
    with pairs_csv.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(pairs)
    pairs_parquet = folder / "pairs.parquet"
    pyarrow.parquet.write_table(pyarrow.table({"text": texts, "label": answers}), pairs_parquet)
    bare = lines(folder / "bare.jsonl", ({"text": t} for t in texts))

    def source(path: Path, fmt: str, **more: Any) -> SourceIR:
        return SourceIR(str(path), sha256(path), fmt, **more)

    return {
        "jsonl (bare)": source(bare, "jsonl", field="text"),
        "openai_chat": source(chat, "openai_chat", extract=EXTRACT),
        "openai_batch": source(batch_in, "openai_batch", extract=EXTRACT, output_path=str(batch_out)),
        "chat_log": source(log, "chat_log", extract=EXTRACT),
        "pairs (.jsonl)": source(pairs_jsonl, "pairs", field="text", answer_field="label"),
        "pairs (.csv)": source(pairs_csv, "pairs", field="text", answer_field="label"),
        "pairs (.parquet)": source(pairs_parquet, "pairs", field="text", answer_field="label"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(1)
    texts = [f"{sentence(rng)} {n}" for n in range(args.rows)]  # distinct: every row is kept
    answers = [rng.choice(["billing", "bug", "other"]) for _ in texts]
    with tempfile.TemporaryDirectory() as folder:
        sources = write_all(Path(folder), texts, answers)
        print(f"{'format':<16} {'rows/s':>10} {'kept':>8} {'answered':>9}")
        for name, source in sources.items():
            seconds = []
            for _ in range(args.repeats):
                reading = Reading()
                started = time.perf_counter()
                kept = sum(1 for _ in read_inputs(InputsIR("source", (source,), dedup="exact"), reading, SYSTEM))
                seconds.append(time.perf_counter() - started)
            rate = args.rows / statistics.median(seconds)
            print(f"{name:<16} {rate:>10,.0f} {kept:>8,} {reading.counts['imported']:>9,}", flush=True)


if __name__ == "__main__":
    main()
