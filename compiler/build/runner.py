"""Runs the stage list: cache key -> hit (load) or miss (run into a temp dir, commit with os.replace).

Cache key = sha256 of canonical JSON of {stage, version, the spec slices it reads, the digests of the
artifacts it needs}. Every miss records why, so a user can see what made work happen.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillc.build.artifacts import canonical_sha256, read_json, tree_files, write_json
from distillc.build.cache import commit, damage, discard, file_stats
from distillc.build.closure import code_parts
from distillc.build.events import Event, Sink
from distillc.errors import DistillcError
from distillc.spec.ir import SpecIR, cache_view
from distillc.spec.view import stage_view

META = "_meta.json"


@dataclass(frozen=True)
class Stage:
    """One stage of the build, as data. Its cache key is made of its name and version, the spec fields it
    reads, the digests of the artifacts it needs, and the code it runs: the import closure of its module
    and the data packages that code reads (distillc.build.closure)."""

    name: str
    version: int  # raised when the stage's output changes in a way its code digest alone would not say
    reads: tuple[str, ...]  # spec fields its output depends on; it may read no other (distillc.spec.view)
    needs: tuple[str, ...]  # earlier stages whose artifacts `run` takes, as keyword arguments by name
    produces: tuple[str, ...]  # what its artifact holds: file names or patterns, each checked after a run
    run: Callable[..., dict[str, Any] | None]
    # Gates on its summary, run after it (cached or not) with (spec, summary, build_dir): one that raises stops
    # the build after the stage's record is out, so the report has the figures that failed it.
    checks: tuple[Callable[[SpecIR, dict[str, Any], Path], None], ...] = ()


@dataclass
class StageContext:
    spec: SpecIR
    workdir: Path  # the stage writes its artifact here; committed only if run() returns
    build_dir: Path  # the build's root: journals and other state that outlives one key
    emit: Sink
    stage: str
    key: str = ""  # the stage's cache key: names state that outlives one attempt (training checkpoints)

    def log(self, message: str, **data: Any) -> None:
        self.emit(Event("info", self.stage, message, data))


@dataclass
class StageRecord:
    name: str
    key: str
    status: str  # hit | miss
    reason: str
    seconds: float
    artifact: Path
    digest: str
    components: dict[str, str]
    summary: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    built_seconds: float = 0.0  # what making the artifact took, whichever build made it
    evicted: tuple[str, ...] = ()  # files freed after a build shipped (distillc.build.evict): a hit all the same


def stage_components(stage: Stage, spec: SpecIR, needed: dict[str, StageRecord]) -> dict[str, str]:
    """What the key is made of, each part hashed, so a miss can name what changed."""
    parts = {"version": str(stage.version)}
    for name in stage.reads:
        parts[f"spec.{name}"] = canonical_sha256(cache_view(spec.slice(name)))
    for name in stage.needs:
        parts[f"artifact.{name}"] = needed[name].digest
    return parts | code_parts(stage.run.__module__)


def run_stages(
    stages: tuple[Stage, ...],
    spec: SpecIR,
    build_dir: Path,
    emit: Sink,
    previous: dict[str, dict[str, Any]] | None = None,
    until: str | None = None,
    force: tuple[str, ...] = (),
    restore: bool = False,
) -> Iterator[StageRecord]:
    """Yield one record per stage, in order. `previous` is the last manifest's stage table. `restore`: make
    again every cached artifact whose files were freed after the last build (distillc.build.evict)."""
    names = [s.name for s in stages]
    for name in (*force, *([until] if until else [])):
        if name not in names:
            raise DistillcError("E201", f"unknown stage '{name}'", help="stages: " + ", ".join(names))
    remade = remade_stages(stages[: names.index(until) + 1] if until else stages, spec, build_dir, force, restore)
    done: dict[str, StageRecord] = {}
    for stage in stages:
        key, final, components, cached, damaged = _lookup(stage, spec, build_dir, done)
        if cached and stage.name not in force and stage.name not in remade:
            record = cached
            emit(Event("stage_done", stage.name, "cached", {"key": key, "status": "hit"}))
        else:
            reason = (
                "forced"
                if stage.name in force
                else remade.get(stage.name) or damaged or miss_reason(components, (previous or {}).get(stage.name))
            )
            emit(Event("stage_start", stage.name, f"running ({reason})", {"key": key, "reason": reason}))
            record = _run_one(stage, spec, build_dir, emit, key, final, components, done, reason)
            emit(Event("stage_done", stage.name, f"{record.seconds:.1f}s", {"seconds": record.seconds}))
        done[stage.name] = record
        yield record
        for check in stage.checks:
            check(spec, record.summary, build_dir)
        if until == stage.name:
            return


def remade_stages(
    stages: tuple[Stage, ...], spec: SpecIR, build_dir: Path, force: tuple[str, ...] = (), restore: bool = False
) -> dict[str, str]:
    """Cached stages to run again, each with why: those with freed files that a stage about to run needs
    (or, with `restore`, every one with freed files).

    Decided before anything runs, so the re-made artifact comes in its turn and every stage after it is
    keyed by what it now holds (a stage that measured the old files is never mixed with the new ones)."""
    done: dict[str, StageRecord] = {}
    running: set[str] = set()
    for stage in stages:
        if stage.name in force or any(name in running for name in stage.needs):
            running.add(stage.name)
            continue
        cached = _lookup(stage, spec, build_dir, done, repair=False)[3]
        if cached:
            done[stage.name] = cached
        else:
            running.add(stage.name)
    remade = {
        name: "re-made: the files freed after the last build are wanted back"
        for name, record in done.items()
        if restore and record.evicted
    }
    # Latest first, so that a stage made again gets its own inputs back too (verify -> export -> train);
    # the reason names the first stage that needs the files.
    needed: dict[str, str] = {}
    for stage in reversed(stages):
        for name in stage.needs if stage.name in running or stage.name in needed or stage.name in remade else ():
            if done.get(name) and done[name].evicted:
                needed[name] = f"re-made: {stage.name} needs the files freed after the last build"
    return {**needed, **remade}


def cached_record(stage: Stage, spec: SpecIR, build_dir: Path) -> StageRecord | None:
    """The intact cached record of a stage that needs no other, or None; read-only."""
    return _lookup(stage, spec, build_dir, {}, repair=False)[3]


def plan_stages(
    stages: tuple[Stage, ...],
    spec: SpecIR,
    build_dir: Path,
    previous: dict[str, dict[str, Any]] | None = None,
    known: dict[str, StageRecord] | None = None,
) -> list[tuple[str, str, str]]:
    """(stage, "cached" | "to run", why) for each stage, without running any. `known`: records of stages
    the plan ran elsewhere (free ones, like reading inputs): stages after them are looked up as if they
    had run here."""
    remade = remade_stages(stages, spec, build_dir)
    done: dict[str, StageRecord] = {}
    rows = []
    for stage in stages:
        if stage.name in remade:
            rows.append((stage.name, "to run", remade[stage.name]))
            continue
        if waiting := [name for name in stage.needs if name not in done]:
            rows.append((stage.name, "to run", f"after {', '.join(waiting)}"))
            continue
        _, _, components, cached, damaged = _lookup(stage, spec, build_dir, done, repair=False)
        if cached:
            done[stage.name] = cached
            rows.append((stage.name, "cached", ""))
        else:
            rows.append((stage.name, "to run", damaged or miss_reason(components, (previous or {}).get(stage.name))))
            if known and stage.name in known:
                done[stage.name] = known[stage.name]
    return rows


def _lookup(
    stage: Stage, spec: SpecIR, build_dir: Path, done: dict[str, StageRecord], repair: bool = True
) -> tuple[str, Path, dict[str, str], StageRecord | None, str]:
    """The stage's key, artifact folder and key parts; its record when the artifact is cached and intact,
    else why not. A damaged artifact is discarded (`repair`; `plan` only reports it)."""
    components = stage_components(stage, spec, done)
    key = canonical_sha256({"stage": stage.name, **components})
    final = build_dir / "cache" / stage.name / key[:24]
    if not (final / META).exists():
        return key, final, components, None, ""
    meta = read_json(final / META)
    if problem := damage(final, meta):
        if repair:
            discard(final)
        return key, final, components, None, f"cached artifact damaged ({problem})"
    record = StageRecord(
        stage.name,
        key,
        "hit",
        "",
        0.0,
        final,
        meta["digest"],
        components,
        meta.get("summary", {}),
        meta.get("files", {}),
        meta.get("seconds", 0.0),
        tuple(meta.get("evicted", ())),
    )
    return key, final, components, record, ""


MAX_NAMED = 6  # key parts a miss's reason names


def miss_reason(components: dict[str, str], previous: dict[str, Any] | None) -> str:
    if not previous or "components" not in previous:
        return "not built before"
    old = previous["components"]
    changed = sorted(k for k in components.keys() | old.keys() if old.get(k) != components.get(k))
    if not changed:
        return "cached artifact missing"
    shown = ", ".join(changed[:MAX_NAMED])  # an upgrade can change dozens of modules: name a few, count the rest
    return f"changed: {shown}" + (f" and {len(changed) - MAX_NAMED} more" if len(changed) > MAX_NAMED else "")


def _run_one(
    stage: Stage,
    spec: SpecIR,
    build_dir: Path,
    emit: Sink,
    key: str,
    final: Path,
    components: dict[str, str],
    done: dict[str, StageRecord],
    reason: str,
) -> StageRecord:
    for stale in final.parent.glob(f".tmp-{key[:24]}-*"):  # left by a killed build
        shutil.rmtree(stale, ignore_errors=True)
    workdir = final.with_name(f".tmp-{key[:24]}-{os.getpid()}")
    workdir.mkdir(parents=True)
    ctx = StageContext(stage_view(spec, stage.name, stage.reads), workdir, build_dir, emit, stage.name, key)
    started = time.perf_counter()
    try:
        summary = stage.run(ctx, **{name: done[name].artifact for name in stage.needs}) or {}
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    seconds = time.perf_counter() - started
    files = tree_files(workdir)
    if missing := [p for p in stage.produces if not any(fnmatch.fnmatch(f, p) for f in files)]:
        shutil.rmtree(workdir, ignore_errors=True)
        raise RuntimeError(f"stage {stage.name!r} did not write {missing}, which it declares it produces")
    digest = canonical_sha256(files)
    write_json(
        workdir / META,
        {
            "stage": stage.name,
            "key": key,
            "digest": digest,
            "files": files,
            "stat": file_stats(workdir, files),
            "summary": summary,
            "seconds": seconds,
            "components": components,
        },
    )
    commit(workdir, final)  # a forced re-run replaces the old artifact
    return StageRecord(stage.name, key, "miss", reason, seconds, final, digest, components, summary, files, seconds)
