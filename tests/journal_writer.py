"""Commits batches of 40 answers to a journal as fast as it can, printing each batch's last index once its
commit has returned: `python -m tests.journal_writer PATH`. The durability test and bench/scale.py kill it."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from distillc.teacher.journal import Journal, journal_entry

LOGPROBS = [{"token": "positive", "logprob": -0.01, "top": [["negative", -4.6]] * 20}]


def main(path: Path) -> None:
    journal = Journal(path)
    start = len(journal)
    for batch in range(1_000_000_000):
        first = start + batch * 40
        entries = [
            journal_entry(f"k{i}", "positive", {"prompt_tokens": 9}, logprobs=LOGPROBS)
            for i in range(first, first + 40)
        ]
        journal.append_many(entries)
        print(first + 39, flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))


def kill_under_load(path: Path, acknowledged: int, rng: random.Random, most: int) -> int:
    """Start a writer on `path`, let it commit up to `most` more answers, SIGKILL it anywhere (mid-commit,
    between commits), and return the index of the last answer whose commit it had acknowledged."""
    command = [sys.executable, "-m", "tests.journal_writer", str(path)]
    writer = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1])
    assert writer.stdout is not None
    target = acknowledged + rng.randint(most // 10, most)
    for line in writer.stdout:
        acknowledged = int(line)
        if acknowledged >= target:
            break
    time.sleep(rng.uniform(0, 0.02))
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    return max([acknowledged, *(int(x) for x in writer.stdout.read().split())])
