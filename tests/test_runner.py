"""The stage runner: content-addressed keys, hits and misses with reasons, atomic commits."""

from __future__ import annotations

import os
import types
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from distillc.build.events import null_sink
from distillc.build.runner import Stage, StageContext, run_stages
from distillc.spec import load_spec
from tests.conftest import VALID, edit_spec, write

calls: list[str] = []


def make_stage(name: str, reads: tuple[str, ...], needs: tuple[str, ...], fail: bool = False) -> Stage:
    def run(ctx: StageContext, **artifacts: Path) -> dict[str, Any]:
        calls.append(name)
        (ctx.workdir / "out.txt").write_text(f"{name}:{ctx.spec.slice(reads[0]) if reads else ''}")
        if fail:
            raise RuntimeError("boom")
        return {"inputs": sorted(artifacts)}

    return Stage(name, 1, reads, needs, ("out.txt",), run)


def graph() -> tuple[Stage, ...]:
    return (
        make_stage("a", ("teacher.model",), ()),
        make_stage("b", ("student",), ("a",)),
        make_stage("c", ("deploy",), ("b",)),
    )


def records(spec_path: Path, build: Path, stages: tuple[Stage, ...], **kw: Any) -> dict[str, Any]:
    calls.clear()
    return {r.name: r for r in run_stages(stages, load_spec(spec_path), build, null_sink, **kw)}


def test_second_run_is_all_hits(tmp_path: Path) -> None:
    spec = write(tmp_path, VALID)
    first = records(spec, tmp_path / "build", graph())
    assert calls == ["a", "b", "c"]
    assert {r.status for r in first.values()} == {"miss"}
    second = records(spec, tmp_path / "build", graph())
    assert calls == []
    assert {r.status for r in second.values()} == {"hit"}
    assert second["c"].key == first["c"].key
    assert second["b"].summary == {"inputs": ["a"]}


def test_change_reruns_the_stage_and_its_dependents_and_says_why(tmp_path: Path) -> None:
    spec = write(tmp_path, VALID)
    first = records(spec, tmp_path / "build", graph())
    previous = {name: {"components": r.components} for name, r in first.items()}
    edit_spec(spec, {"student.base_model": "other"})
    second = records(spec, tmp_path / "build", graph(), previous=previous)
    assert calls == ["b", "c"]
    assert second["b"].reason == "changed: spec.student"
    assert second["c"].reason == "changed: artifact.b"


def test_fields_that_cannot_change_outputs_do_not_invalidate(tmp_path: Path) -> None:
    spec = write(tmp_path, VALID)
    records(spec, tmp_path / "build", graph())
    edit_spec(spec, {"teacher.max_concurrency": 64})
    records(spec, tmp_path / "build", graph())
    assert calls == []


def test_failed_stage_commits_nothing_and_keeps_earlier_work(tmp_path: Path) -> None:
    spec = write(tmp_path, VALID)
    failing = (graph()[0], make_stage("b", ("student",), ("a",), fail=True))
    with pytest.raises(RuntimeError):
        records(spec, tmp_path / "build", failing)
    assert not list((tmp_path / "build" / "cache" / "b").iterdir())  # no half-written artifact, no temp dir
    records(spec, tmp_path / "build", graph())
    assert calls == ["b", "c"]  # stage a was kept


def test_until_and_force(tmp_path: Path) -> None:
    spec = write(tmp_path, VALID)
    assert list(records(spec, tmp_path / "build", graph(), until="b")) == ["a", "b"]
    forced = records(spec, tmp_path / "build", graph(), force=("a",))
    assert calls == ["a", "c"]  # a re-ran; same output, so b stays cached
    assert forced["a"].reason == "forced"


STAGE_CODE = """
from pathlib import Path


def run(ctx, **artifacts):
    from stagecode import helpers  # imported inside the function: still in the closure

    (ctx.workdir / "out.txt").write_text(helpers.text())
    return {}
"""


def test_editing_code_a_stage_runs_with_reruns_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stage's key holds every module its code imports, transitively (distillc.build.closure): editing
    one two imports away is a miss that names it; a compiled cache file beside it is not."""
    import importlib

    package = tmp_path / "code" / "stagecode"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "stage.py").write_text(STAGE_CODE)
    (package / "helpers.py").write_text("from stagecode.limits import LIMIT\n\n\ndef text():\n    return 'same'\n")
    (package / "limits.py").write_text("LIMIT = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    a, b, c = graph()
    stages = (a, replace(b, run=importlib.import_module("stagecode.stage").run), c)
    spec = write(tmp_path, VALID)
    first = records(spec, tmp_path / "build", stages)
    assert "source.stagecode.limits" in first["b"].components
    previous = {name: {"components": r.components} for name, r in first.items()}
    (package / "__pycache__").mkdir(exist_ok=True)
    (package / "__pycache__" / "limits.cpython-311.pyc").write_bytes(b"\0")
    assert {r.status for r in records(spec, tmp_path / "build", stages).values()} == {"hit"}
    (package / "limits.py").write_text("LIMIT = 2\n")
    second = records(spec, tmp_path / "build", stages, previous=previous)
    assert second["a"].status == "hit"  # a's code imports nothing of stagecode
    assert second["b"].reason == "changed: source.stagecode.limits"
    assert second["c"].status == "hit"  # b wrote the same bytes as before, so c, keyed on them, is a hit


def test_a_stage_that_reads_an_undeclared_field_fails_and_commits_nothing(tmp_path: Path) -> None:
    from distillc.spec.view import UndeclaredRead

    declared = make_stage("a", ("student",), ())

    def run(ctx: StageContext, **artifacts: Path) -> dict[str, Any]:
        ctx.spec.deploy.port  # noqa: B018 - the read itself is the point: deploy is not in its reads
        return declared.run(ctx, **artifacts)

    sneaky = replace(declared, run=run)
    with pytest.raises(UndeclaredRead, match="stage 'a' read spec field 'deploy', which is not in its reads"):
        records(write(tmp_path, VALID), tmp_path / "build", (sneaky,))
    assert not list((tmp_path / "build" / "cache").rglob("out.txt"))


def test_the_stage_list_is_checked() -> None:
    from distillc.graph import STAGES, check, resolves

    check(STAGES)
    assert resolves("inputs.generate.count") and resolves("spec_path") and not resolves("deploy.port.x")
    a, b = make_stage("a", ("student",), ()), make_stage("b", ("deploy",), ("a",))
    with pytest.raises(ValueError, match="needs \\['a'\\], which do not run before it"):
        check((b, a))
    with pytest.raises(ValueError, match="listed twice"):
        check((a, a))
    with pytest.raises(ValueError, match="reads \\['deploy.nope'\\]"):
        check((make_stage("c", ("deploy.nope",), ()),))
    # A field kept out of keys cannot be read by name: changing it would serve the stale artifact.
    with pytest.raises(ValueError, match="reads \\['budget.max_usd'\\], which are kept out of cache keys"):
        check((make_stage("d", ("budget.max_usd",), ()),))


def test_fields_a_stage_reads_through_helpers_are_in_its_key(tmp_path: Path) -> None:
    """verify builds the TensorRT profile (student.max_seq_len, deploy.max_new_tokens) for tensorrt
    packages: changing either must re-run it, not serve a verify of the old profile."""
    from distillc.build.runner import stage_components
    from distillc.stages.verify import STAGE as verify

    base = load_spec(write(tmp_path, VALID))
    for field, value in (("student.max_seq_len", 77), ("deploy.max_new_tokens", 9)):
        part, name = field.split(".")
        changed = replace(base, **{part: replace(getattr(base, part), **{name: value})})
        done = {n: types.SimpleNamespace(digest="d") for n in verify.needs}
        before, after = stage_components(verify, base, done), stage_components(verify, changed, done)  # type: ignore[arg-type]
        assert [k for k in before if before[k] != after[k]] == [f"spec.{field}"]


def test_a_damaged_cached_artifact_is_never_a_hit(tmp_path: Path) -> None:
    """A hit re-checks what it committed: sizes and mtimes first, the sha256 where those moved."""
    spec, build = write(tmp_path, VALID), tmp_path / "build"
    first = records(spec, build, graph())
    out = first["b"].artifact / "out.txt"
    original = out.read_bytes()
    stat = out.stat()
    os.utime(out, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched, same bytes: still a hit
    assert {r.status for r in records(spec, build, graph()).values()} == {"hit"}
    out.write_bytes(original.upper())  # same size, other bytes
    again = records(spec, build, graph())
    assert calls == ["b"] and again["b"].reason == "cached artifact damaged (out.txt changed)"
    assert again["b"].artifact.joinpath("out.txt").read_bytes() == original  # rebuilt, not trusted
    again["a"].artifact.joinpath("out.txt").unlink()  # half-deleted, as a killed gc would leave it
    third = records(spec, build, graph())
    assert calls == ["a"] and third["a"].reason == "cached artifact damaged (out.txt is missing)"


def test_a_kill_while_forcing_or_collecting_leaves_no_half_artifact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Folders leave the cache by one rename into .trash before they are deleted: a kill during the
    delete leaves debris there, and the stage's next lookup is a miss, never a half-deleted hit."""
    from distillc.build import cache

    spec, build = write(tmp_path, VALID), tmp_path / "build"
    first = records(spec, build, graph())
    killed = RuntimeError("killed while deleting")

    def dies(path: Path, ignore_errors: bool = False) -> None:
        next(iter(Path(path).rglob("*"))).unlink()  # part of the folder is gone when the kill comes
        raise killed

    monkeypatch.setattr(cache.shutil, "rmtree", dies)
    with pytest.raises(RuntimeError, match="killed while deleting"):
        cache.discard(first["b"].artifact)
    monkeypatch.undo()
    assert not first["b"].artifact.exists() and list((build / "cache" / cache.TRASH).iterdir())
    again = records(spec, build, graph())
    assert calls == ["b"] and again["b"].status == "miss"


def test_a_stage_that_does_not_write_what_it_declares_fails_and_commits_nothing(tmp_path: Path) -> None:
    short = replace(make_stage("a", ("student",), ()), produces=("out.txt", "model/*.onnx"))
    with pytest.raises(RuntimeError, match=r"stage 'a' did not write \['model/\*.onnx'\]"):
        records(write(tmp_path, VALID), tmp_path / "build", (short,))
    assert not list((tmp_path / "build" / "cache").rglob("out.txt"))


def test_a_miss_names_a_few_changed_parts_and_counts_the_rest() -> None:
    from distillc.build.runner import miss_reason

    old = {"components": {f"source.m{i}": "a" for i in range(10)} | {"source.gone": "a"}}
    new = {f"source.m{i}": "b" for i in range(10)}
    reason = miss_reason(new, old)
    assert reason.startswith("changed: source.gone, source.m0, ") and reason.endswith(" and 5 more")
    assert miss_reason({"x": "1"}, {"components": {"x": "1"}}) == "cached artifact missing"
