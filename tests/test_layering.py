"""Imports point one way: a distillc module imports only from layers below its own, in the order the README's
Layout section writes down. Imports under `if TYPE_CHECKING:` are for annotations and do not count."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "compiler"


def layers() -> dict[str, int]:
    """Top-level module or subpackage -> its layer (0 is the top), from the README's list."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    listing = readme.split("<!-- layers -->", 1)[1].split("<!-- /layers -->", 1)[0]
    out: dict[str, int] = {}
    for depth, line in enumerate(x for x in listing.splitlines() if x.strip()):
        for name in re.findall(r"`([\w.]+)`", line):
            out[name] = depth
    return out


def part(package: Path, module: str) -> str | None:
    """The layer a dotted distillc name belongs to: its top-level module or subpackage, or __init__."""
    parts = module.split(".")
    if parts[0] != "distillc":
        return None
    if len(parts) > 1 and ((package / parts[1]).is_dir() or (package / f"{parts[1]}.py").is_file()):
        return parts[1]
    return "__init__"


def layer_of(relative: Path) -> str:
    """The layer a file of the package is in."""
    return "__init__" if relative == Path("__init__.py") else relative.parts[0].removesuffix(".py")


def runtime_imports(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, module) of each import outside `if TYPE_CHECKING:` blocks, lazy ones inside functions too."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(child) for statement in node.body for child in ast.walk(statement)}
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            if node.module == "distillc":  # `from distillc import x`: x is a module, or a name of distillc/__init__
                found += [(node.lineno, f"distillc.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def violations(package: Path, order: dict[str, int]) -> list[str]:
    out = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package)
        mine = layer_of(relative)
        for line, module in runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            theirs = part(package, module)
            if theirs is None or theirs == mine:
                continue
            where = f"{relative}:{line}"
            if mine not in order or theirs not in order:
                out.append(f"{where}: {mine!r} or {theirs!r} is not in the README's layer list")
            elif order[theirs] <= order[mine]:
                out.append(f"{where}: {mine} (layer {order[mine] + 1}) imports {module} (layer {order[theirs] + 1})")
    return out


def test_imports_point_down_the_readmes_layers() -> None:
    assert violations(PACKAGE, layers()) == []


def test_every_subpackage_has_a_layer() -> None:
    names = {
        p.stem if p.is_file() else p.name
        for p in PACKAGE.iterdir()
        if p.suffix == ".py" or (p / "__init__.py").exists()
    }
    assert names - set(layers()) == set()


def test_an_import_of_a_layer_above_is_caught(tmp_path: Path) -> None:
    """The check itself: a quality module importing a stage, and a lazy import inside a function, fail it;
    an annotation-only import does not."""
    for name in ("quality", "stages", "teacher", "task"):
        (tmp_path / name).mkdir()
    (tmp_path / "quality" / "bad.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from distillc.stages.evaluate import run\n"
        "def f():\n    from distillc.teacher.local import LocalTeacher\n"
        "from distillc.task import task_type\n"
    )
    found = violations(tmp_path, layers())
    assert found == ["quality/bad.py:5: quality (layer 10) imports distillc.teacher.local (layer 8)"]


def test_validate_and_plan_import_no_numerics_or_model_runtime() -> None:
    """`distillc validate` and `plan` load the CLI, the stage list and the planner: none of them may pull in
    numpy, onnxruntime, torch or transformers (a stage imports those inside its run)."""
    import subprocess
    import sys

    heavy = ("numpy", "onnxruntime", "torch", "transformers", "scipy", "sklearn")
    code = "import sys, distillc.cli, distillc.graph, distillc.plan; print(' '.join(sorted(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert [name for name in heavy if name in loaded] == []


def test_no_stage_imports_another_stage() -> None:
    """Stages hand each other artifacts, read through distillc.artifacts; never each other's code."""
    found = []
    for path in sorted((PACKAGE / "stages").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        named = [(n.lineno, f"distillc.stages.{a.name}") for n in ast.walk(tree)
                 if isinstance(n, ast.ImportFrom) and n.module == "distillc.stages" for a in n.names]  # fmt: skip
        for line, module in [*runtime_imports(tree), *named]:
            if module.startswith("distillc.stages.") and module != f"distillc.stages.{path.stem}":
                found.append(f"stages/{path.name}:{line}: {module}")
    assert found == []


def test_every_subpackage_is_in_the_installed_distribution() -> None:
    """pyproject lists packages by name (distillc's source folder is compiler/): a subpackage missing from the
    list works in an editable install and is absent from a wheel, so `pip install .` would break on import."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(("distillc", *init.parent.relative_to(PACKAGE).parts))
        for init in PACKAGE.rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert on_disk <= listed, f"missing from pyproject's packages: {sorted(on_disk - listed)}"
