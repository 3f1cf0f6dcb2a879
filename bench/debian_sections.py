"""A real 6-way label task from what every Debian machine has: a package's one-line description -> its section.

    python bench/debian_sections.py OUT [--per-section 240] [--extra 2000] [--base-url URL] [--model NAME]

writes OUT/spec.yaml, OUT/data/inputs.jsonl (descriptions written by package maintainers, deduplicated) and
OUT/data/gold.jsonl (each description's section in the archive), from the apt lists on this machine. The
spec's teacher is the OpenAI-compatible endpoint at --base-url (e.g. a llama.cpp server); the examples are
descriptions left out of the inputs. `python bench/debian_sections.py OUT --score BUILD` scores a build's
teacher labels against the archive's sections. With --extra N, N more descriptions follow the labeled ones
in inputs.jsonl, beyond `inputs.source.limit`: the spec prunes the student to half its layers
(`student.prune`), and recovery trains on them, answered by the trained student.
"""

from __future__ import annotations

import argparse
import glob
import json
import random
import subprocess
from pathlib import Path

import yaml

SECTIONS = ("games", "graphics", "sound", "science", "mail", "net")
EXAMPLES = {
    "games": "Real-time strategy game of ancient warfare",
    "graphics": "assemble APNG animation from PNG/TGA image sequence",
    "sound": "drum sequencer for a sound card or MIDI device",
    "science": "genomic structural variation discovery",
    "net": "Traces the route taken by packets over an IPv4/IPv6 network",
}


def packages_text() -> str:
    """The archive's Packages lists, decompressed by apt itself."""
    lists = sorted(glob.glob("/var/lib/apt/lists/*_Packages*"))
    if not lists:
        raise SystemExit("no apt Packages lists in /var/lib/apt/lists: run apt-get update")
    return "".join(
        subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", path], capture_output=True, text=True, check=True).stdout
        for path in lists
    )


def descriptions() -> dict[str, str]:
    """Description -> section, for the chosen sections; a description listed under two sections is dropped."""
    seen: dict[str, set[str]] = {}
    for stanza in packages_text().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and not line[0].isspace())
        text, section = fields.get("Description", "").strip(), fields.get("Section", "")
        if section in SECTIONS and text and text not in EXAMPLES.values():
            seen.setdefault(text, set()).add(section)
    return {text: next(iter(sections)) for text, sections in seen.items() if len(sections) == 1}


def write_task(out: Path, per_section: int, extra: int, base_url: str, model: str) -> None:
    by_section: dict[str, list[str]] = {s: [] for s in SECTIONS}
    for text, section in sorted(descriptions().items()):
        by_section[section].append(text)
    rng = random.Random(0)
    chosen = [(t, s) for s in SECTIONS for t in rng.sample(by_section[s], min(per_section, len(by_section[s])))]
    rng.shuffle(chosen)
    taken = {t for t, _ in chosen}
    rest = [(t, s) for s in SECTIONS for t in by_section[s] if t not in taken]
    chosen_extra = random.Random(1).sample(rest, min(extra, len(rest)))
    (out / "data").mkdir(parents=True, exist_ok=True)
    every = chosen + chosen_extra
    (out / "data" / "inputs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t, _ in every))
    (out / "data" / "gold.jsonl").write_text("".join(json.dumps({"text": t, "section": s}) + "\n" for t, s in every))
    spec = {
        "name": "debian-sections",
        "task": {
            "instructions": "Which section of the Debian archive does this package belong to? "
            "You see the package's one-line description.",
            "examples": [{"input": text, "output": section} for section, text in EXAMPLES.items()],
            "output": {"type": "label", "labels": list(SECTIONS)},
        },
        "inputs": {"source": {"path": "data/inputs.jsonl", "field": "text"}},
        "teacher": {"model": model, "base_url": base_url, "max_tokens": 24, "max_concurrency": 2, "timeout_s": 300},
        "student": {
            "base_model": "smollm2-135m-instruct",
            "epochs": 2,
            "learning_rate": 1.0e-4,
            "batch_size": 8,
            "max_seq_len": 128,
        },
        "evaluation": {"holdout": 0.25, "min_score": 0.5},
        "export": {"quantization": ["int8"]},
    }
    if chosen_extra:
        spec["inputs"]["source"]["limit"] = len(chosen)  # the teacher labels these; the rest are for recovery
        spec["student"]["prune"] = {"candidates": [15], "extra_inputs": len(chosen_extra)}
    (out / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    counts = {s: sum(1 for _, x in chosen if x == s) for s in SECTIONS}
    print(f"{len(chosen)} inputs in {out}: {counts}")


def score(out: Path, build: Path) -> None:
    """The teacher's labels against the archive's sections."""
    gold = {row["text"]: row["section"] for row in map(json.loads, (out / "data" / "gold.jsonl").open())}
    labeled = [json.loads(line) for line in next(build.glob("cache/label/*/labeled.jsonl")).open()]
    right = sum(gold.get(row["input"]) == row["output"] for row in labeled)
    print(f"teacher vs archive: {right}/{len(labeled)} = {right / len(labeled):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-section", type=int, default=240)
    parser.add_argument("--extra", type=int, default=0, help="unlabeled inputs for pruning's recovery")
    parser.add_argument("--base-url", default="http://127.0.0.1:8091/v1")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--score", type=Path, metavar="BUILD", help="score BUILD's teacher labels instead")
    args = parser.parse_args()
    if args.score:
        score(args.out, args.score)
    else:
        write_task(args.out, args.per_section, args.extra, args.base_url, args.model)


if __name__ == "__main__":
    main()
