"""Helpers shared by tests that run the real CLI and the real package server."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


def distillc(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the `distillc` command as a user would, in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "distillc", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def stage_artifact(build_dir: Path, stage: str) -> Path:
    """Where the last build's `stage` artifact lies, from its manifest."""
    stages = {s["name"]: s for s in json.loads((build_dir / "manifest.json").read_text(encoding="utf-8"))["stages"]}
    return build_dir / stages[stage]["artifact"]


def parity_rows(build_dir: Path) -> list[dict[str, Any]]:
    """The export stage's parity check, row by row: each held-out input's PyTorch and ONNX answers."""
    lines = (stage_artifact(build_dir, "export") / "parity.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited early: {process.stderr.read() if process.stderr else ''}")
        try:
            if http("GET", url)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("server did not become healthy")


def journaled(build_dir: Path) -> list[dict[str, Any]]:
    """Every answer in a build folder's journal, read as `plan` reads it (read-only)."""
    from distillc.teacher.journal import JournalView, journal_path

    with JournalView(journal_path(build_dir)) as journal:
        return list(journal.entries())


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def runtime(package: Path, *args: str) -> list[str]:
    """The package's own runtime, started as `distillc serve` and the image start it (launch.py)."""
    return [sys.executable, "-I", str(package / "distillc_runtime" / "launch.py"), *args]


def set_deploy(package: Path, **deploy: object) -> None:
    """Change some of a package's deploy settings, and its manifest as a rebuild would record them."""
    if not deploy:
        return
    info = json.loads((package / "package.json").read_text())
    set_info(package, deploy=info["deploy"] | deploy)


def set_info(package: Path, **sections: object) -> None:
    """Set some top-level sections of a package's package.json, and its manifest as a rebuild would record them."""
    info = json.loads((package / "package.json").read_text())
    info |= sections
    (package / "package.json").write_text(json.dumps(info))
    manifest = json.loads((package / "manifest.json").read_text())
    manifest["files"]["package.json"] = hashlib.sha256((package / "package.json").read_bytes()).hexdigest()
    (package / "manifest.json").write_text(json.dumps(manifest))


def start(package: Path, **deploy: object) -> tuple[subprocess.Popen, int]:
    """The package's server as `distillc serve` starts it, with some deploy settings changed."""
    set_deploy(package, **deploy)
    port = free_port()
    process = subprocess.Popen(
        runtime(package, "serve", str(package), "--port", str(port)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_healthy(f"http://127.0.0.1:{port}/healthz", process)
    return process, port


def curve_of(points: list[tuple[float, int, int]], total: int) -> list[dict[str, Any]]:
    """A coverage curve (distillc.quality.confidence) from (threshold, answered, agree) points of `total` inputs,
    with their Wilson intervals."""
    from distillc.quality.confidence import wilson

    return [
        {
            "threshold": t,
            "answered": n,
            "agree": k,
            "coverage": n / total,
            "agreement": k / n,
            "interval": list(wilson(k, n)),
        }
        for t, n, k in points
    ]
