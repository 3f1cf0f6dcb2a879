"""Runs the stage list: cache key -> hit (load) or miss (run into a temp dir, commit with os.replace).

Cache key = sha256 of canonical JSON of {stage, version, the spec slices it reads, the digests of the
artifacts it needs}. Every miss records why, so a user can see what made work happen.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from distillc.artifacts import canonical_sha256, read_json, tree_files, write_json
from distillc.cache import commit, damage, discard, file_stats
from distillc.errors import DistillcError
from distillc.events import Event, Sink
from distillc.spec.ir import SpecIR, cache_view
from distillc.spec.view import stage_view

META = "_meta.json"


@dataclass
class StageContext:
    spec: SpecIR
    workdir: Path  # the stage writes its artifact here; committed only if run() returns
    build_dir: Path  # the build's root: journals and other state that outlives one key
    emit: Sink
    stage: str

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


def stage_components(stage: ModuleType, spec: SpecIR, needed: dict[str, StageRecord]) -> dict[str, str]:
    """What the key is made of, each part hashed, so a miss can name what changed."""
    parts = {"version": str(stage.VERSION)}
    for name in stage.READS:
        parts[f"spec.{name}"] = canonical_sha256(cache_view(spec.slice(name)))
    for name in stage.NEEDS:
        parts[f"artifact.{name}"] = needed[name].digest
    for name in (stage.__name__ if getattr(stage, "__file__", None) else None, *getattr(stage, "SOURCES", ())):
        if name:
            parts[f"source.{name}"] = source_digest(name)
    return parts


def source_digest(module: str) -> str:
    """sha256 of the code a stage's output is made from (its own module, and a package's or module's
    files it names in SOURCES, caches left out): editing the stage, the runtime that verify scores with,
    or the templates a package is rendered from, is a miss."""
    import importlib

    origin = Path(importlib.import_module(module).__file__ or "")
    if origin.name != "__init__.py":
        return canonical_sha256({origin.name: origin.read_text(encoding="utf-8")})
    return canonical_sha256(tree_files(origin.parent, skip=lambda name: "__pycache__" in name or name.endswith(".pyc")))


def run_stages(
    stages: tuple[ModuleType, ...],
    spec: SpecIR,
    build_dir: Path,
    emit: Sink,
    previous: dict[str, dict[str, Any]] | None = None,
    until: str | None = None,
    force: tuple[str, ...] = (),
) -> Iterator[StageRecord]:
    """Yield one record per stage, in order. `previous` is the last manifest's stage table."""
    names = [s.NAME for s in stages]
    for name in (*force, *([until] if until else [])):
        if name not in names:
            raise DistillcError("E201", f"unknown stage '{name}'", help="stages: " + ", ".join(names))
    done: dict[str, StageRecord] = {}
    for stage in stages:
        key, final, components, cached, damaged = _lookup(stage, spec, build_dir, done)
        if cached and stage.NAME not in force:
            record = cached
            emit(Event("stage_done", stage.NAME, "cached", {"key": key, "status": "hit"}))
        else:
            reason = (
                "forced"
                if stage.NAME in force
                else damaged or miss_reason(components, (previous or {}).get(stage.NAME))
            )
            emit(Event("stage_start", stage.NAME, f"running ({reason})", {"key": key, "reason": reason}))
            record = _run_one(stage, spec, build_dir, emit, key, final, components, done, reason)
            emit(Event("stage_done", stage.NAME, f"{record.seconds:.1f}s", {"seconds": record.seconds}))
        done[stage.NAME] = record
        yield record
        if until == stage.NAME:
            return


def cached_record(stage: ModuleType, spec: SpecIR, build_dir: Path) -> StageRecord | None:
    """The intact cached record of a stage that needs no other, or None; read-only."""
    return _lookup(stage, spec, build_dir, {}, repair=False)[3]


def plan_stages(
    stages: tuple[ModuleType, ...],
    spec: SpecIR,
    build_dir: Path,
    previous: dict[str, dict[str, Any]] | None = None,
    known: dict[str, StageRecord] | None = None,
) -> list[tuple[str, str, str]]:
    """(stage, "cached" | "to run", why) for each stage, without running any. `known`: records of stages
    the plan ran elsewhere (free ones, like reading inputs): stages after them are looked up as if they
    had run here."""
    done: dict[str, StageRecord] = {}
    rows = []
    for stage in stages:
        waiting = [name for name in stage.NEEDS if name not in done]
        if waiting:
            rows.append((stage.NAME, "to run", f"after {', '.join(waiting)}"))
            continue
        _, _, components, cached, damaged = _lookup(stage, spec, build_dir, done, repair=False)
        if cached:
            done[stage.NAME] = cached
            rows.append((stage.NAME, "cached", ""))
        else:
            rows.append((stage.NAME, "to run", damaged or miss_reason(components, (previous or {}).get(stage.NAME))))
            if known and stage.NAME in known:
                done[stage.NAME] = known[stage.NAME]
    return rows


def _lookup(
    stage: ModuleType, spec: SpecIR, build_dir: Path, done: dict[str, StageRecord], repair: bool = True
) -> tuple[str, Path, dict[str, str], StageRecord | None, str]:
    """The stage's key, artifact folder and key parts; its record when the artifact is cached and intact,
    else why not. A damaged artifact is discarded (`repair`; `plan` only reports it)."""
    components = stage_components(stage, spec, done)
    key = canonical_sha256({"stage": stage.NAME, **components})
    final = build_dir / "cache" / stage.NAME / key[:24]
    if not (final / META).exists():
        return key, final, components, None, ""
    meta = read_json(final / META)
    if problem := damage(final, meta):
        if repair:
            discard(final)
        return key, final, components, None, f"cached artifact damaged ({problem})"
    record = StageRecord(
        stage.NAME,
        key,
        "hit",
        "",
        0.0,
        final,
        meta["digest"],
        components,
        meta.get("summary", {}),
        meta.get("files", {}),
    )
    return key, final, components, record, ""


def miss_reason(components: dict[str, str], previous: dict[str, Any] | None) -> str:
    if not previous or "components" not in previous:
        return "not built before"
    changed = sorted(k for k, v in components.items() if previous["components"].get(k) != v)
    return "changed: " + ", ".join(changed) if changed else "cached artifact missing"


def _run_one(
    stage: ModuleType,
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
    ctx = StageContext(stage_view(spec, stage.NAME, stage.READS), workdir, build_dir, emit, stage.NAME)
    started = time.perf_counter()
    try:
        run: Callable[..., dict[str, Any]] = stage.run
        summary = run(ctx, **{name: done[name].artifact for name in stage.NEEDS}) or {}
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    seconds = time.perf_counter() - started
    files = tree_files(workdir)
    digest = canonical_sha256(files)
    write_json(
        workdir / META,
        {
            "stage": stage.NAME,
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
    return StageRecord(stage.NAME, key, "miss", reason, seconds, final, digest, components, summary, files)
