"""Commits batches of 40 answers to a journal as fast as it can, printing each batch's last index once its
commit has returned: `python -m tests.journal_writer PATH`. The durability test and bench/scale.py kill it."""

from __future__ import annotations

import sys
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
