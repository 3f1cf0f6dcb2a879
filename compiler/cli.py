"""The `distillc` command: a thin layer over distillc.api that turns errors into messages and exit codes."""

from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path

import click

from distillc import __version__
from distillc.build.events import Event, JsonSink, sink_for
from distillc.errors import DistillcError
from distillc.graph import STAGE_NAMES
from distillc.redact import redact
from distillc.report.headline import usd_text
from distillc.spec.diagnostics import SpecError, to_json
from distillc.task import type_names

WRITE_ERRORS = (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG, errno.EIO)


def _fail(error: DistillcError, log_format: str = "text") -> None:
    """The error as text for people, or with `--log-format json` as the last JSON event (with the spec's
    diagnostics when there are some), then exit status 1."""
    if log_format == "json":
        data = {"code": error.code, "help": error.help}
        if isinstance(error, SpecError):
            data["diagnostics"] = json.loads(to_json(error.diagnostics, error.source, error.filename))
        JsonSink(sys.stderr)(Event("error", "", redact(error.message), data))
    else:
        click.echo(redact(error.render()), err=True)
    sys.exit(1)


@click.group()
@click.version_option(__version__, prog_name="distillc")
def main() -> None:
    """Compile a task spec into a distilled model and a ready-to-run inference package."""
    # Libraries' own progress bars would interleave with distillc's events; read when tqdm is first imported.
    os.environ.setdefault("TQDM_DISABLE", "1")


@main.command()
@click.argument("specs", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", help="Diagnostics format.")
@click.option("--strict", is_flag=True, help="Treat warnings as errors.")
def validate(specs: tuple[Path, ...], fmt: str, strict: bool) -> None:
    """Check each SPEC and print every problem at once (exit 1 on errors)."""
    from distillc.spec import validate_file
    from distillc.spec.diagnostics import render_all, to_json

    failed = False
    rows: list[dict[str, object]] = []
    for spec in specs:
        resolved, diagnostics, source = validate_file(spec)
        failed |= resolved is None or (strict and bool(diagnostics))
        if fmt == "json":
            rows += json.loads(to_json(diagnostics, source, str(spec)))
        elif diagnostics:
            click.echo(render_all(diagnostics, source, str(spec)), err=True)
        if fmt == "text" and resolved is not None and not (strict and diagnostics):
            click.echo(f"{spec}: ok")
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
    if failed:
        sys.exit(1)


@main.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--task", type=click.Choice(type_names()), default="label", show_default=True)
@click.option("--force", is_flag=True, help="Overwrite an existing spec.yaml.")
def init(folder: Path, task: str, force: bool) -> None:
    """Write a commented, valid spec and a small inputs file into FOLDER."""
    from distillc.scaffold import init as scaffold

    try:
        written = scaffold(folder, task, force)
    except DistillcError as error:
        _fail(error)
    for path in written:
        click.echo(f"wrote {path}")
    click.echo(f"next: distillc validate {written[0]}")


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Build folder [build/<name>].")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
def plan(spec: Path, out: Path | None, fmt: str) -> None:
    """Show what `build` would run and what the teacher would cost; sends nothing, trains nothing."""
    from distillc.plan import plan as make_plan
    from distillc.plan import render

    try:
        result = make_plan(spec, out)
    except DistillcError as error:
        _fail(error)
    click.echo(json.dumps(result.as_dict(), indent=2) if fmt == "json" else render(result))
    if result.over_budget:
        sys.exit(1)


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Build folder [build/<name>].")
@click.option("--dry-run", is_flag=True, help="List what would be removed; remove nothing.")
def gc(spec: Path, out: Path | None, dry_run: bool) -> None:
    """Remove cached stage artifacts the last build did not use; keeps the journal and the package."""
    from distillc.api import default_build_dir
    from distillc.build.gc import collect
    from distillc.spec import load_spec

    try:
        build_dir = out or default_build_dir(load_spec(spec))
        result = collect(build_dir, dry_run=dry_run)
    except DistillcError as error:
        _fail(error)
    for entry in result.removed:
        click.echo(f"{'would remove' if dry_run else 'removed'} {entry.relative_to(build_dir)}")
    verb = "would free" if dry_run else "freed"
    click.echo(f"{verb} {result.freed_bytes / 1e6:.1f} MB in {len(result.removed)} entries; kept {result.kept}")


@main.command()
@click.argument("folder_a", type=click.Path(file_okay=False, path_type=Path))
@click.argument("folder_b", type=click.Path(file_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
def compare(folder_a: Path, folder_b: Path, fmt: str) -> None:
    """Show how two builds differ: spec fields changed, data counts, quality with intervals, latency, size, cost."""
    from distillc.report import compare as comparing

    try:
        result = comparing.compare(folder_a, folder_b)
    except DistillcError as error:
        _fail(error)
    click.echo(json.dumps(result, indent=2) if fmt == "json" else comparing.render(result))


@main.group()
def journal() -> None:
    """The build folder's journal of teacher answers."""


@journal.command("export")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--to", "target", type=click.Path(dir_okay=False, path_type=Path), help="File to write [stdout].")
def journal_export(out: Path, target: Path | None) -> None:
    """Write every journaled answer of build folder OUT as one JSON line each (safe beside a running build)."""
    from distillc.teacher.journal import JournalView, journal_path

    path = journal_path(out)
    if not path.exists() and not path.with_name("teacher.jsonl").exists():
        _fail(DistillcError("E207", f"{out}: no journal of teacher answers here (looked for {path})"))
    with JournalView(path) as answers:
        if target is None:
            count = answers.export(click.get_binary_stream("stdout"))
        else:
            with target.open("wb") as f:
                count = answers.export(f)
    click.echo(f"{count} answers written" + (f" to {target}" if target else ""), err=True)


@main.command()
def schema() -> None:
    """Print the spec's JSON Schema (for editors: `# yaml-language-server: $schema=...`)."""
    from distillc.spec.schema import schema_text

    click.echo(schema_text(), nl=False)


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Build folder [build/<name>].")
@click.option("--until", type=click.Choice(STAGE_NAMES), help="Stop after this stage.")
@click.option("--force", multiple=True, type=click.Choice(STAGE_NAMES), help="Re-run this stage even if cached.")
@click.option("--log-format", type=click.Choice(["auto", "text", "json"]), default="auto")
@click.option(
    "--keep-weights",
    "--keep-variants",
    "keep_weights",
    is_flag=True,
    help="Keep the trained weights and the export variants that did not ship (freed once the package is in place).",
)
@click.option("--strict", is_flag=True, help="Stop, rather than warn, when the labeled answers are degenerate.")
def build(
    spec: Path,
    out: Path | None,
    until: str | None,
    force: tuple[str, ...],
    log_format: str,
    keep_weights: bool,
    strict: bool,
) -> None:
    """Build SPEC: inputs, label, split, train, prune, evaluate, export, verify, gate, package."""
    from distillc import api

    try:
        result = api.build(
            spec, out=out, until=until, force=force, emit=sink_for(log_format), keep_weights=keep_weights, strict=strict
        )
    except DistillcError as error:
        _fail(error, log_format)
    except OSError as error:
        if error.errno not in WRITE_ERRORS:
            raise
        where = f" {error.filename}" if error.filename else ""
        _fail(
            DistillcError(
                "E205",
                f"cannot write{where}: {error.strerror}",
                help="free space or fix the folder's permissions, then run the same command: finished stages "
                "stay cached and teacher answers journaled",
            ),
            log_format,
        )
    except KeyboardInterrupt:
        click.echo(
            "interrupted: finished stages stay cached and teacher answers journaled; run the same command to resume",
            err=True,
        )
        sys.exit(130)
    ran = ", ".join(result.ran) or "nothing (all cached)"
    if log_format == "json":  # one object, the last event, for CI to read instead of the text below
        paths = {"report": str(result.build_dir / "report.json"), "report_html": str(result.build_dir / "report.html")}
        data = {"ran": result.ran, **paths, "package": str(result.package_dir) if result.package_dir else None}
        JsonSink(sys.stdout)(
            Event("build_done", "", f"built {result.spec.name}", data | {"headline": result.report.get("headline")})
        )
        return
    click.echo(f"built {result.spec.name} in {result.build_dir} (ran: {ran})")
    evaluation = result.report.get("evaluation")
    if evaluation:
        low, high = evaluation["interval"]
        click.echo(
            f"{evaluation['metric']}: {evaluation['score']:.3f}, 95% interval [{low:.3f}, {high:.3f}], on "
            f"{evaluation['n']} held-out inputs against "
            + ("their human labels" if evaluation.get("reference") == "gold" else "the teacher's answers")
            + f" (min_score {evaluation['min_score']}, gate: {evaluation['gate']})"
        )
        baselines = evaluation["baselines"]
        majority, base = baselines["majority"], baselines["few_shot_base"]
        click.echo(f"baseline, the majority answer {majority['answer']!r} for all: {majority['value']:.3f}")
        low, high = base["interval"]
        click.echo(f"baseline, the untrained base shown the examples: {base['value']:.3f} [{low:.3f}, {high:.3f}]")
        if gold := evaluation.get("gold"):
            said = ", ".join(
                f"{name.replace('_', ' ')} {gold[name]['value']:.3f}"
                for name in ("student", "teacher", "majority", "few_shot_base")
            )
            gap = gold["gap_to_teacher"]
            click.echo(
                f"against {gold['n']} human labels ({gold['metric']}): {said}; student - teacher "
                f"{gap['value']:+.3f} [{gap['interval'][0]:+.3f}, {gap['interval'][1]:+.3f}]"
            )
        for warning in evaluation["warnings"]:
            click.echo(f"warning: {warning}")
    if "verify" in result.report:
        click.echo(verify_table(result.report["verify"], result.report.get("package", {}).get("variant")))
    if headline := result.report.get("headline"):
        click.echo("\n" + headline_table(headline))
    click.echo(f"report:  {result.build_dir / 'report.html'}")
    if result.package_dir:
        click.echo(f"package: {result.package_dir}  (distillc serve {result.package_dir})")


def headline_table(head: dict) -> str:
    """The shipped student against its teacher: quality, p50 latency, cost per 1,000 requests, size."""
    teacher, student = head["teacher"], head["student"]

    low, high = student["interval"]
    size = f"{student['bytes'] / 1e6:.0f} MB"
    teacher_size = f"{teacher['parameters'] / 1e6:.0f}M params" if teacher["parameters"] else "hosted"
    rows = [
        ("", f"{head['metric']} vs teacher", "p50 ms", "$ per 1,000", "size"),
        (
            "teacher",
            "reference",
            "-" if teacher["p50_ms"] is None else f"{teacher['p50_ms']:.1f}",
            usd_text(teacher["usd_per_1k"]),
            teacher_size,
        ),
        (
            "student",
            f"{student['score']:.3f} [{low:.3f}, {high:.3f}]",
            f"{student['p50_ms']:.1f}",
            usd_text(student["usd_per_1k"]),
            size,
        ),
    ]
    lines = [f"{a:<8} {b:<24} {c:>8} {d:>12}  {e}" for a, b, c, d, e in rows]
    gains = [
        f"{head['faster']}x faster" if head["faster"] else "",
        f"{head['cheaper']}x cheaper" if head["cheaper"] else "",
    ]
    if any(gains):
        lines.append(" " * 9 + ", ".join(g for g in gains if g) + " than the teacher")
    return "\n".join(lines)


def verify_table(verify: dict, shipped: str | None) -> str:
    """Each exported variant (of the full student, each pruned candidate and the linear student) as shipped:
    layers ("linear" for the linear student), size, score, drop below the full student's fp32, agreement with
    it, latency alone and batched."""
    size = verify["variants"][0]["batch"]["size"]
    width = max(7, *(len(v["name"]) for v in verify["variants"]))
    lines = [
        f"{'variant':<{width}}  layers      MB  {verify['metric']:>8}  95% interval    drop    agrees  "
        f"p50 ms  p95 ms  batch {size}: inputs/s"
    ]
    for v in verify["variants"]:
        mark = "  <- ships" if v["name"] == shipped else ("" if v["listed"] else "  (reference)")
        low, high = v["interval"]
        shape = v["layers"] if v["kind"] == "decoder" else v["kind"]
        # a linear student weighs kilobytes: three decimals, not 0.0
        size = f"{v['bytes'] / 1e6:>6.1f}" if v["bytes"] >= 1e5 else f"{v['bytes'] / 1e6:>6.3f}"
        lines.append(
            f"{v['name']:<{width}}  {shape:>6}  {size}  {v['score']:>8.3f}  "
            f"[{low:.3f}, {high:.3f}]  {v['drop']:>6.3f}  {v['agreement']:>6.1%}  {v['p50_ms']:>6.1f}  "
            f"{v['p95_ms']:>6.1f}  {v['batch']['inputs_per_s']:>10.1f}{mark}"
        )
    if built_on := verify.get("cpu"):  # kernels differ by instruction set: say where these figures come from
        from distillc_runtime import cpu

        lines.append(f"measured on {cpu.text(built_on)}")
    return "\n".join(lines)


@main.command()
@click.argument("package_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--max-batch-size", type=click.IntRange(min=1), help="Override the package's deploy.max_batch_size.")
@click.option("--max-queue", type=click.IntRange(min=1), help="Override the package's deploy.max_queue.")
@click.option(
    "--capture-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="With a cascade: append its escalated and shadowed pairs here (chat_log), for the next build.",
)
def serve(
    package_dir: Path, host: str, port: int, max_batch_size: int | None, max_queue: int | None, capture_dir: Path | None
) -> None:
    """Serve a built package over HTTP, with the runtime copy it ships."""
    if not (package_dir / "package.json").is_file():
        _fail(
            DistillcError(
                "E601",
                f"{package_dir} is not a distillc package (no package.json)",
                help="build one with `distillc build SPEC`; it lands in build/<name>/package",
            )
        )
    # Checked here, with distillc's own copy of the check, before any of the package's code runs.
    from distillc_runtime.integrity import problems

    if found := problems(package_dir):
        _fail(
            DistillcError(
                "E602",
                f"{package_dir} does not match its manifest:\n  " + "\n  ".join(found[:20]),
                help="rebuild it (`distillc build SPEC` puts a changed package back), or restore the files",
            )
        )
    # The package's launcher: the package's folder is not on sys.path, and no bytecode is read (launch.py).
    launcher = str(package_dir / "distillc_runtime" / "launch.py")
    command = [sys.executable, "-I", launcher, "serve", str(package_dir), "--host", host, "--port", str(port)]
    for flag, value in (
        ("--max-batch-size", max_batch_size),
        ("--max-queue", max_queue),
        ("--capture-dir", capture_dir),
    ):
        if value is not None:
            command += [flag, str(value)]
    # Become the server (no child process), so a stop signal reaches it rather than orphaning it.
    os.execv(sys.executable, command)


@main.command()
@click.option("--upstream", required=True, help="The endpoint to pass requests on to, e.g. https://api.openai.com/v1.")
@click.option("--listen", default="127.0.0.1:8900", show_default=True, help="HOST:PORT to serve on.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder of captures.")
def capture(upstream: str, listen: str, out: Path) -> None:
    """Pass OpenAI-compatible requests on to UPSTREAM and record each chat request and answer (chat_log)."""
    from urllib.parse import urlsplit

    from distillc.capture.proxy import serve as serve_capture

    host, _, port = listen.rpartition(":")
    parts = urlsplit(upstream)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        _fail(DistillcError("E130", f"--listen {listen!r} is not HOST:PORT", help="e.g. --listen 127.0.0.1:8900"))
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        _fail(
            DistillcError(
                "E130",
                f"--upstream {upstream!r} is not an http(s) URL with a host (and no credentials)",
                help="e.g. --upstream https://api.openai.com/v1; clients send their own Authorization header",
            )
        )

    def ready(url: str, path: Path) -> None:
        click.echo(
            f"capturing to {path}; point clients at {url} (their Authorization is passed on, never kept)", err=True
        )

    try:
        serve_capture(upstream, host, int(port), out, ready)
    except OSError as error:
        _fail(DistillcError("E130", f"cannot listen on {listen}: {error.strerror or error}", help="pick a free port"))
