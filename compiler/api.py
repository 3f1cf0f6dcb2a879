"""The build, as a library call: `build(spec_path) -> BuildResult`. Raises DistillcError; never exits."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillc import __version__
from distillc.artifacts.export import read_exported, variant_dir
from distillc.artifacts.prune import read_candidates
from distillc.build.artifacts import disk_bytes, link_tree, read_json, write_json
from distillc.build.events import Event, Sink, null_sink
from distillc.build.evict import evict
from distillc.build.lock import build_lock
from distillc.build.runner import StageRecord, run_stages
from distillc.errors import DistillcError, GateFailed
from distillc.graph import STAGES
from distillc.quality.answers import degenerate
from distillc.quality.gates import gated_score
from distillc.redact import redact
from distillc.report.headline import headline
from distillc.report.html import write_html
from distillc.spec import SpecIR, load_spec
from distillc.spec.ir import plain
from distillc_runtime.integrity import problems


@dataclass
class BuildResult:
    spec: SpecIR
    build_dir: Path
    stages: list[StageRecord] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    package_dir: Path | None = None
    keep_weights: bool = False  # --keep-weights: nothing freed after the package is in place

    def stage(self, name: str) -> StageRecord:
        return next(s for s in self.stages if s.name == name)

    @property
    def ran(self) -> list[str]:
        """Stages that did work in this build (cache misses)."""
        return [s.name for s in self.stages if s.status == "miss"]


def default_build_dir(spec: SpecIR) -> Path:
    return Path("build") / spec.name


def previous_stages(build_dir: Path) -> dict[str, dict[str, Any]]:
    """The last build's stage table, from its manifest, to explain what changed since."""
    manifest = build_dir / "manifest.json"
    return {s["name"]: s for s in read_json(manifest).get("stages", [])} if manifest.exists() else {}


def build(
    spec_path: str | Path,
    out: str | Path | None = None,
    until: str | None = None,
    force: tuple[str, ...] = (),
    emit: Sink = null_sink,
    keep_weights: bool = False,
    strict: bool = False,
) -> BuildResult:
    """Build the spec at `spec_path` into `out` (build/<name>). `keep_weights`: keep the trained weights and
    the export variants that did not ship (distillc.build.evict frees them once the package is in place),
    making again those an earlier build freed. `strict`: answers not worth training on (distillc.quality.
    answers) stop the build before training, rather than warn."""
    spec = load_spec(spec_path)
    build_dir = Path(out) if out else default_build_dir(spec)
    with build_lock(build_dir):
        return _build(spec, build_dir, until, force, emit, keep_weights, strict)


def _build(
    spec: SpecIR,
    build_dir: Path,
    until: str | None,
    force: tuple[str, ...],
    emit: Sink,
    keep_weights: bool,
    strict: bool = False,
) -> BuildResult:
    previous = previous_stages(build_dir)
    result = BuildResult(spec, build_dir, keep_weights=keep_weights)
    started = time.time()
    status = "failed"
    try:
        for record in run_stages(STAGES, spec, build_dir, emit, previous, until, force, restore=keep_weights):
            result.stages.append(record)
            _write_manifest(result, started, "running")
            if record.name == "label":  # judged on every build, the stage's artifact cached or not
                _judge_answers(spec, record.summary.get("answers", {}), emit, strict)
        if result.stages[-1].name == "package":
            result.package_dir = _materialize_package(result.stage("package").artifact / "package", build_dir, emit)
            if not keep_weights:
                _free_unneeded(result, emit)
        status = "succeeded"
    except GateFailed:
        status = "failed_gate"
        raise
    finally:
        result.report = _report(result, status)
        write_json(build_dir / "report.json", result.report)
        _write_html(build_dir, emit)
        _write_manifest(result, started, status)
    return result


def _judge_answers(spec: SpecIR, answers: dict[str, Any], emit: Sink, strict: bool) -> None:
    """Warn, or with `strict` stop before training, when one answer is most of a text or JSON task's."""
    why = degenerate(spec.task.output_type, answers, spec.evaluation.max_answer_share)
    if why is None:
        return
    if strict:
        raise DistillcError(
            "E304",
            f"the labeled answers are not worth training on: {why}",
            help="check the teacher (or the imported answers); raise evaluation.max_answer_share if this is "
            "the task; the answers are journaled",
        )
    emit(Event("warning", "label", why))


def _free_unneeded(result: BuildResult, emit: Sink) -> None:
    """Free the weights the package does not need (distillc.build.evict): trained, pruned, not shipped."""
    train, prune, export = (result.stage(name).artifact for name in ("train", "prune", "export"))
    shipped = result.stage("gate").summary["variant"]
    pruned = read_candidates(prune)
    unshipped = [v["name"] for s in read_exported(export) for v in s["variants"] if v["name"] != shipped]
    freed = {
        "the trained weights": evict(train, [train / "model"]),
        f"the pruned students ({', '.join(c['name'] for c in pruned)})": evict(
            prune, [c["model"].parent for c in pruned]
        ),
        f"the variants not shipped ({', '.join(unshipped)})": evict(
            export, [variant_dir(export, name) for name in unshipped]
        ),
    }
    if total := sum(freed.values()):
        what = "; ".join(label for label, n in freed.items() if n)
        message = f"freed {total / 1e6:.0f} MB not needed by the package: {what}; --keep-weights keeps them"
        emit(Event("info", "package", message, {"freed_bytes": total}))


def _write_html(build_dir: Path, emit: Sink) -> None:
    try:
        write_html(build_dir)
    except Exception as exc:  # the page is a view of report.json: never worth failing a finished build over
        emit(Event("warning", "report", f"report.html was not written ({type(exc).__name__}: {exc}); report.json is"))


def _materialize_package(source: Path, build_dir: Path, emit: Sink) -> Path:
    """Link the package out of the cache (distillc.build.artifacts.link_tree), unless it is already there
    and intact: a package/ edited, emptied or added to since is put back, and the build says so."""
    target = build_dir / "package"
    if (target / "manifest.json").is_file() and (target / "manifest.json").read_bytes() == (
        source / "manifest.json"
    ).read_bytes():
        if not (damaged := problems(target)):
            return target
        shown = "; ".join(damaged[:3]) + (f"; {len(damaged) - 3} more" if len(damaged) > 3 else "")
        emit(Event("warning", "package", f"{target} did not match its manifest ({shown}): put back from the cache"))
    staging = build_dir / ".package.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        link_tree(source, staging)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)  # a full disk leaves no half-made package behind
        raise
    if damaged := problems(staging):  # the cached artifact itself was changed: never publish it
        shutil.rmtree(staging, ignore_errors=True)
        raise DistillcError(
            "E602",
            f"the cached package {source} does not match its manifest: {damaged[0]}",
            help="rebuild it: distillc build SPEC --force package",
        )
    shutil.rmtree(target, ignore_errors=True)
    staging.replace(target)
    return target


def redacted(value: Any) -> Any:
    """`value` with key-like text masked in every string (distillc.redact): the report is shared."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redacted(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redacted(item) for item in value]
    return value


def _write_manifest(result: BuildResult, started: float, status: str) -> None:
    stages = [
        {
            "name": s.name,
            "key": s.key,
            "status": s.status,
            "reason": s.reason,
            "seconds": round(s.seconds, 3),
            "artifact": str(s.artifact.relative_to(result.build_dir)),
            "digest": s.digest,
            "inputs": {k.removeprefix("artifact."): v for k, v in s.components.items() if k.startswith("artifact.")},
            "components": s.components,
            "outputs": s.files,
        }
        for s in result.stages
    ]
    write_json(
        result.build_dir / "manifest.json",
        {
            "name": result.spec.name,
            "spec": result.spec.spec_path,
            "distillc_version": __version__,
            "status": status,
            "started": started,
            "finished": time.time(),
            "stages": stages,
        },
    )


def _report(result: BuildResult, status: str) -> dict[str, Any]:
    summaries = {s.name: s.summary for s in result.stages}
    report: dict[str, Any] = {
        "name": result.spec.name,
        "status": status,
        "timings_s": {s.name: round(s.seconds, 3) for s in result.stages},
        "cache": {s.name: s.status for s in result.stages},
        # Each stage's time when its artifact was made: a cached stage costs nothing now but did once.
        "built_s": {s.name: round(s.built_seconds, 3) for s in result.stages},
    }
    if "evaluate" in summaries:
        ev = summaries["evaluate"]
        report["evaluation"] = {
            **ev,
            "min_score": result.spec.evaluation.min_score,
            "gate": result.spec.evaluation.gate,
            "passed": gated_score(result.spec, ev) >= result.spec.evaluation.min_score,
        }
    for name, summary in summaries.items():  # in the stage list's order; evaluate's is "evaluation" above
        if name != "evaluate":
            report[name] = summary
    report["headline"] = headline(report, result.spec)
    if result.package_dir:  # each file once, however many links it has (distillc.build.artifacts.link_tree)
        report["folder"] = {
            "bytes": disk_bytes([result.build_dir]),
            "package_bytes": disk_bytes([result.package_dir]),
            "weights": "kept" if result.keep_weights else "freed",  # what the package does not need
        }
    report["spec"] = redacted(plain(result.spec))  # what `distillc compare` tells two builds apart by
    return report
