"""How the data stages scale with the number of inputs: seconds and peak memory per stage, on this machine.

    python bench/scale.py [--sizes 10000 100000] [--million] [--concurrency 64] [--out DIR] [--kills 5]

For each N it writes N inputs of 5-60 words (5% exact repeats once normalized, 5% edited copies: near
duplicates), serves an instant OpenAI-compatible teacher on 127.0.0.1 in a process of its own, and runs, each
in a fresh process whose own peak RSS is read (tests/peak_memory.py): `plan` on a fresh folder; `build --until inputs`;
`build --until label` (every request sent); the same with `--force label` (every answer from the journal);
`build --until split`; and training data preparation as training does it (every training row tokenized
into the example store and read back, with the embedded student's tokenizer). It prints each stage's
seconds and peak MB, the growth exponent between sizes (log of the ratio of seconds, or MB, over log of the
ratio of N: 1.0 is linear), labeling's requests per second, and the journal's bytes per answer on disk.
`--million` adds N = 1,000,000. `--kills` kills a process committing answers to a journal with SIGKILL that
many times and counts answers acknowledged and found. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.*, run from anywhere

from tests.journal_writer import kill_under_load  # noqa: E402
from tests.peak_memory import run_with_peak  # noqa: E402
from tests.planted import edited, sentence  # noqa: E402

LABELS = ("positive", "negative")
INSTRUCTIONS = "Classify the sentiment of the review."


def write_inputs(path: Path, n: int, seed: int = 0) -> None:
    """N texts: 90% new sentences, 5% repeats (recased, repunctuated), 5% edited copies."""
    rng = random.Random(seed)
    earlier: list[str] = []
    with path.open("w", encoding="utf-8") as f:
        for _ in range(n):
            roll = rng.random()
            if earlier and roll < 0.05:
                text = rng.choice(earlier).upper() + "!"
            elif earlier and roll < 0.10:
                text = edited(rng, rng.choice(earlier))
            else:
                text = sentence(rng)
                if len(earlier) < 100_000:
                    earlier.append(text)
                else:
                    earlier[rng.randrange(len(earlier))] = text
            f.write(json.dumps({"text": text}) + "\n")


def label(text: str) -> str:
    return LABELS[len(text) % 2]


def serve(ready: Any) -> None:
    """The teacher, in its own process so it does not share the build's interpreter."""
    from tests.fake_teacher import FakeTeacher

    with FakeTeacher(label, record=False) as teacher:
        ready.put(teacher.base_url)
        while True:
            time.sleep(3600)


def write_spec(folder: Path, base_url: str, concurrency: int) -> Path:
    spec = {
        "name": "scale",
        "task": {
            "instructions": INSTRUCTIONS,
            "examples": [{"input": "lovely", "output": "positive"}, {"input": "awful", "output": "negative"}],
            "output": {"type": "label", "labels": list(LABELS)},
        },
        "inputs": {"source": {"path": "inputs.jsonl", "field": "text"}},
        "teacher": {
            "model": "instant",
            "base_url": base_url,
            "api_key_env": "DISTILLC_SCALE_KEY",
            "max_concurrency": concurrency,
            "max_tokens": 4,
        },
        "student": {"base_model": "smollm2-135m-instruct"},
    }
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def prepare(train: Path) -> None:
    """Training data preparation as training does it (train_job.training_examples), with the embedded
    student's tokenizer: every row tokenized into the example store, the length derived, each row read back."""
    import tempfile

    from distillc.student.models import load_tokenizer
    from distillc.student.prompt import answer_ids, prompt_template
    from distillc.student.train_job import TrainJob, training_examples

    tokenizer = load_tokenizer("smollm2-135m-instruct")
    prefix, suffix = prompt_template(tokenizer, INSTRUCTIONS)
    job = TrainJob("", None, [], 0, 0.05, {}, INSTRUCTIONS, list(LABELS), str(train), "", "")
    soft = {label: answer_ids(tokenizer, label) for label in LABELS}
    with tempfile.TemporaryDirectory() as folder:
        template = {"prompt_prefix": prefix, "prompt_suffix": suffix}
        examples, dev, length, cut = training_examples(job, tokenizer, template, soft, 8192, Path(folder))
        print(f"{len(examples)} rows, {len(dev)} dev, {length['tokens']} tokens, {cut['rows']} cut", file=sys.stderr)
        examples.close()


def measured(args: list[str]) -> tuple[float, float, str]:
    """(seconds, peak RSS MB, stderr) of one `distillc` command (or, `args` starting with "--prepare", of
    `prepare`) in a fresh process."""
    env = {**os.environ, "DISTILLC_SCALE_KEY": "local", "TOKENIZERS_PARALLELISM": "false"}
    command = [__file__, *args] if args[0] == "--prepare" else ["-m", "distillc", *args]
    done, seconds, peak_mb = run_with_peak(
        [sys.executable, *command], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )
    err = done.stderr.decode(errors="replace")
    if done.returncode != 0:
        raise SystemExit(f"distillc {' '.join(args)} failed:\n{err[-3000:]}")
    return seconds, peak_mb, err


def one_size(n: int, root: Path, base_url: str, concurrency: int) -> dict[str, Any]:
    folder = root / f"n{n}"
    folder.mkdir(parents=True, exist_ok=True)
    write_inputs(folder / "inputs.jsonl", n)
    spec = str(write_spec(folder, base_url, concurrency))
    out = str(folder / "out")
    stages = {
        "plan, fresh folder": ["plan", spec, "--out", str(folder / "plan")],
        "inputs": ["build", spec, "--out", out, "--until", "inputs"],
        "label, first run": ["build", spec, "--out", out, "--until", "label"],
        "label, every answer journaled": ["build", spec, "--out", out, "--until", "label", "--force", "label"],
        "split": ["build", spec, "--out", out, "--until", "split"],
        "training data": ["--prepare", str(folder / "train.jsonl")],
    }
    row: dict[str, Any] = {"n": n}
    for name, args in stages.items():
        if name == "training data":  # the split's training rows (its newest artifact), under a fixed name
            split = max((folder / "out" / "cache" / "split").glob("*/train.jsonl"), key=lambda p: p.stat().st_mtime)
            (folder / "train.jsonl").unlink(missing_ok=True)
            (folder / "train.jsonl").symlink_to(split)
        seconds, mb, _ = measured(args)
        row[name] = {"s": round(seconds, 1), "mb": round(mb)}
        print(f"  N={n:,} {name}: {seconds:.1f} s, {mb:,.0f} MB", flush=True)
        if name == "label, first run":  # the stage's own time, and what it sent
            labeled = json.loads((folder / "out" / "report.json").read_text())
            row["label stage s"] = labeled["timings_s"]["label"]
            row["requests/s"] = round(labeled["label"]["requests_sent"] / labeled["timings_s"]["label"])
            answers = labeled["label"]["requests_sent"]
    report = json.loads((folder / "out" / "report.json").read_text())
    journal = folder / "out" / "journal"
    stored = sum(p.stat().st_size for p in journal.glob("teacher.sqlite*"))
    row["inputs kept"] = report["inputs"]["kept"]
    row["near duplicates"] = report["inputs"]["near_duplicates"]
    row["journal bytes/answer"] = round(stored / max(1, answers))
    return row


def exponent(a: float, b: float, n_a: int, n_b: int) -> float:
    return round(math.log(max(b, 1e-9) / max(a, 1e-9)) / math.log(n_b / n_a), 2)


def kills(times: int, root: Path) -> tuple[int, int]:
    """Kill a journal writer under load `times` times: (answers acknowledged, found afterwards)."""
    from distillc.teacher.journal import JournalView

    path = root / "kills" / "teacher.sqlite"
    acknowledged = -1
    rng = random.Random(1)
    for _ in range(times):
        acknowledged = kill_under_load(path, acknowledged, rng, most=20_000)
    with JournalView(path) as journal:
        found = len(journal.answered(f"k{i}" for i in range(acknowledged + 1)))
    return acknowledged + 1, found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--million", action="store_true", help="add N = 1,000,000")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("/tmp/distillc-scale"))
    parser.add_argument("--kills", type=int, default=0)
    parser.add_argument("--prepare", type=Path, help=argparse.SUPPRESS)  # the training data stage, in its process
    args = parser.parse_args()
    if args.prepare:
        prepare(args.prepare)
        return 0
    sizes = sorted(set(args.sizes + ([1_000_000] if args.million else [])))
    ready: Any = multiprocessing.Queue()
    teacher = multiprocessing.Process(target=serve, args=(ready,), daemon=True)
    teacher.start()
    base_url = ready.get(timeout=60)
    rows = []
    try:
        for n in sizes:
            rows.append(one_size(n, args.out, base_url, args.concurrency))
    finally:
        teacher.terminate()
    stages = [k for k in rows[0] if isinstance(rows[0][k], dict)]
    print("\n| stage | " + " | ".join(f"{r['n']:,}" for r in rows) + " | exponent s, MB |")
    print("|---|" + "---|" * (len(rows) + 1))
    for stage in stages:
        cells = [f"{r[stage]['s']} s / {r[stage]['mb']:,} MB" for r in rows]
        growth = ""
        if len(rows) > 1:
            a, b = rows[-2], rows[-1]
            growth = (
                f"{exponent(a[stage]['s'], b[stage]['s'], a['n'], b['n'])}, "
                f"{exponent(a[stage]['mb'], b[stage]['mb'], a['n'], b['n'])}"
            )
        print(f"| {stage} | " + " | ".join(cells) + f" | {growth} |")
    for key in ("inputs kept", "near duplicates", "requests/s", "label stage s", "journal bytes/answer"):
        print(f"| {key} | " + " | ".join(f"{r[key]:,}" for r in rows) + " | |")
    if args.kills:
        acknowledged, found = kills(args.kills, args.out)
        print(f"\nkill -9 x{args.kills} under load: {acknowledged:,} answers acknowledged, {found:,} found")
    (args.out / "scale.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
