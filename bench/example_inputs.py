"""Regenerate the example specs' inputs from text that lies on any Debian 12 machine with Python 3.11.

- specs/data/debian-changelog.jsonl: single entries ("  * ...") of the changelog.Debian files under
  /usr/share/doc, written by Debian maintainers; each file is part of its package and under its license
  (DFSG-free; see /usr/share/doc/<package>/copyright). Every row names its package.
- specs/data/python-docstrings.jsonl: the first paragraph of docstrings of public functions and classes in
  CPython 3.11's standard library (Python Software Foundation License 2.0). Every row names its module.

Rows are deduplicated (case-insensitively), kept between 40 and 300 characters, and sampled with a fixed seed;
70% of the changelog rows cite a bug number or a CVE id (what the changelog-triage example extracts).

    python bench/example_inputs.py [--count 300]
"""

from __future__ import annotations

import argparse
import ast
import gzip
import json
import random
import re
import sysconfig
from collections.abc import Iterator
from pathlib import Path

CITATION = re.compile(r"#\d{4,}|CVE-\d{4}-\d+")  # a Debian bug number or a CVE id
DATA = Path(__file__).resolve().parent.parent / "specs" / "data"


def changelog_entries() -> Iterator[tuple[str, str]]:
    for path in sorted(Path("/usr/share/doc").glob("*/changelog.Debian.gz")):
        package, entry = path.parent.name, ""
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
        for line in lines:
            if match := re.match(r"^  \* (.*)", line):
                if entry:
                    yield package, entry
                entry = match.group(1).strip()
            elif entry and re.match(r"^    \S", line):
                entry += " " + line.strip()
            elif entry:
                yield package, entry
                entry = ""
        if entry:
            yield package, entry


def docstrings() -> Iterator[tuple[str, str]]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.glob("*.py")) + sorted(stdlib.glob("*/*.py")):
        if any(part in {"test", "tests", "idlelib", "lib2to3", "site-packages"} for part in path.parts):
            continue
        module = ".".join(path.relative_to(stdlib).with_suffix("").parts)
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                text = ast.get_docstring(node) or ""
                first = " ".join(text.split("\n\n")[0].split())
                if first and "(" not in first.split()[0] and ">>>" not in first:
                    yield module, first


def sample(rows: Iterator[tuple[str, str]], count: int, seed: int, referencing: float = 0.0) -> list[dict[str, str]]:
    """`count` distinct rows; `referencing`: the share of them that cite a bug number or a CVE id."""
    seen: set[str] = set()
    kept = []
    for origin, text in rows:
        if 40 <= len(text) <= 300 and text.lower() not in seen:
            seen.add(text.lower())
            kept.append({"text": text, "source": origin})
    rng = random.Random(seed)
    if not referencing:
        return sorted(rng.sample(kept, min(count, len(kept))), key=lambda r: (r["source"], r["text"]))
    citing = [r for r in kept if CITATION.search(r["text"])]
    other = [r for r in kept if not CITATION.search(r["text"])]
    picked = rng.sample(citing, min(round(count * referencing), len(citing)))
    picked += rng.sample(other, min(count - len(picked), len(other)))
    return sorted(picked, key=lambda r: (r["source"], r["text"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=300)
    args = parser.parse_args()
    # Most changelog rows cite bugs or CVEs, so that what the task extracts differs from row to row.
    for name, rows, referencing in (
        ("debian-changelog", changelog_entries(), 0.7),
        ("python-docstrings", docstrings(), 0.0),
    ):
        picked = sample(rows, args.count, seed=0, referencing=referencing)
        random.Random(1).shuffle(picked)  # sources mixed through the file, so any prefix is varied
        with (DATA / f"{name}.jsonl").open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in picked)
        print(f"{name}: {len(picked)} rows from {len({r['source'] for r in picked})} sources")


if __name__ == "__main__":
    main()
