"""The code a stage's output is made from, found rather than listed: the import closure of the stage's
module, and the data packages that code reads.

A stage's cache key holds one digest per module its code can run: every first-party module (distillc,
distillc_runtime, or the stage module's own top-level package) imported by the stage module, at module
level or inside a function, followed transitively, with the `__init__` of each package on the way; and
every package read as data by name (`importlib.resources.files("distillc.templates")`: the templates a
package stage renders, the runtime it copies), all of its files. Editing any of them, by hand or by
upgrading distillc, is a miss that names the module; no list can fall behind the code.

Found by reading the source (an AST walk), not by importing it, so the closure holds lazy imports too.
"""

from __future__ import annotations

import ast
import functools
import importlib.machinery
import importlib.util
from pathlib import Path

from distillc.build.artifacts import canonical_sha256, file_sha256, tree_files

FIRST_PARTY = ("distillc", "distillc_runtime")
# Code that runs a stage but does not make its output: the build machinery (keys, cache, events) and the
# spec's reading, whose results enter the key as the spec values and artifact digests they produce. Left
# out, so that editing them does not rerun every stage; their own tests guard them.
ORCHESTRATION = ("distillc.build", "distillc.spec", "distillc.errors", "distillc.redact")
DATA_READERS = ("files",)  # importlib.resources.files("package"): the package's files are the stage's data


@functools.cache
def closure(module: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(modules, data packages) that `module`'s code can run or read, each sorted."""
    roots = {*FIRST_PARTY, module.split(".")[0]}
    modules: set[str] = set()
    data: set[str] = set()
    pending = [module]
    while pending:
        name = pending.pop()
        if name in modules or name.split(".")[0] not in roots or orchestration(name):
            continue
        if (path := source_path(name)) is None:
            continue
        modules.add(name)
        if "." in name:
            pending.append(name.rpartition(".")[0])  # a package's __init__ runs before its module
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        imported, read = references(path, package)
        pending += imported
        data |= {name for name in read if name.split(".")[0] in roots and package_dir(name)}
    return tuple(sorted(modules)), tuple(sorted(data))


def orchestration(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in ORCHESTRATION)


def references(path: Path, package: str) -> tuple[list[str], list[str]]:
    """Modules `path` imports (anywhere in it) and packages it reads as data, by absolute name."""
    imported: list[str] = []
    read: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, `level - 1` packages up
                parent = package.split(".")
                parent = parent[: len(parent) - (node.level - 1)]
                base = ".".join([*parent, *([base] if base else [])])
            imported.append(base)
            imported += [f"{base}.{alias.name}" for alias in node.names]  # submodules; other names drop out
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", getattr(node.func, "attr", None)) in DATA_READERS
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            read.append(node.args[0].value)
    return imported, read


def source_path(module: str) -> Path | None:
    """The .py file of a first-party module, or None when `module` names no module (an attribute)."""
    spec = _find(module)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def package_dir(package: str) -> Path | None:
    spec = _find(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _find(name: str) -> importlib.machinery.ModuleSpec | None:
    try:
        return importlib.util.find_spec(name)
    except (ImportError, AttributeError, ValueError):  # a name inside a module, not a module
        return None


def code_parts(module: str) -> dict[str, str]:
    """{"source.<module>": sha256 of its file, "data.<package>": sha256 of its files} for the closure."""
    modules, data = closure(module)
    parts = {f"source.{name}": file_sha256(path) for name in modules if (path := source_path(name))}
    for name in data:
        root = package_dir(name)
        assert root is not None
        files = tree_files(root, skip=lambda rel: "__pycache__" in rel or rel.endswith(".pyc"))
        parts[f"data.{name}"] = canonical_sha256(files)
    return parts
