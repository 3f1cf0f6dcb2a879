"""Every stage's key follows the code it runs (distillc.build.closure): for each stage of the graph, a copy
of a module deep in its import closure, edited, changes that stage's code parts, and leaves unchanged the
parts of a stage whose closure does not hold it."""

from __future__ import annotations

from pathlib import Path

import pytest

from distillc.build import closure
from distillc.graph import STAGES

MODULES = {stage.name: closure.closure(stage.run.__module__)[0] for stage in STAGES}


def depths(module: str) -> dict[str, int]:
    """Each module of `module`'s closure, with how many imports away from it it is."""
    members = set(closure.closure(module)[0])
    found, frontier = {module: 0}, [module]
    while frontier:
        following = []
        for name in frontier:
            path = closure.source_path(name)
            package = name if path and path.name == "__init__.py" else name.rpartition(".")[0]
            for imported in closure.references(path, package)[0] if path else []:
                if imported in members and imported not in found:
                    found[imported] = found[name] + 1
                    following.append(imported)
        frontier = following
    return found


@pytest.mark.parametrize("stage", [stage.name for stage in STAGES])
def test_editing_a_module_deep_in_a_stages_closure_changes_its_key_and_no_other(
    stage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = next(s.run.__module__ for s in STAGES if s.name == stage)
    reach = depths(module)
    deepest = max((name for name in reach if not name.endswith("__init__")), key=lambda name: (reach[name], name))
    assert reach[deepest] >= 1 or len(reach) == 1
    before = {s.name: closure.code_parts(s.run.__module__) for s in STAGES}

    original = closure.source_path(deepest)
    assert original is not None
    edited = tmp_path / original.name
    edited.write_text(original.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")
    real = closure.source_path
    monkeypatch.setattr(closure, "source_path", lambda name: edited if name == deepest else real(name))
    after = {s.name: closure.code_parts(s.run.__module__) for s in STAGES}

    assert after[stage][f"source.{deepest}"] != before[stage][f"source.{deepest}"]
    for other in STAGES:
        changed = after[other.name] != before[other.name]
        assert changed == (deepest in MODULES[other.name]), (other.name, deepest)
    assert any(deepest not in MODULES[other.name] for other in STAGES)  # some stage is outside: it must not rerun


def test_the_modules_the_hand_written_lists_missed_are_in_the_keys() -> None:
    """The cases the `sources` lists had missed, found by the closure."""
    assert {"distillc.quality.metrics", "distillc.student.decode"} <= set(MODULES["evaluate"])
    assert "distillc.task.prompts" in MODULES["label"]  # was teacher.prompts
    assert "distillc.student.prompt" in MODULES["train"]
    data = {stage.name: closure.closure(stage.run.__module__)[1] for stage in STAGES}
    assert set(data["package"]) == {"distillc.templates", "distillc_runtime"}  # what it renders and ships


def test_orchestration_is_left_out_of_every_key() -> None:
    """Editing the runner, the cache or the spec loader does not rerun every stage: they enter the key
    through what they produce (spec values, artifact digests)."""
    for modules in MODULES.values():
        assert not [name for name in modules if closure.orchestration(name)]
