"""What a package ships for deployment: hadolint-clean Dockerfiles, hash-locked dependencies that cover
what the runtime imports, compose and Kubernetes manifests that agree with the server, and a smoke test
that passes against the real server and fails against a broken one."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import packages_distributions, version
from pathlib import Path

import pytest
import yaml

from distillc.package.policy import image
from distillc.package.render import render
from distillc.package.runtime_lock import TARGETS, check_versions, lock_path, locked_versions, normalize
from distillc.targets import TENSORRT_LIBS
from tests.helpers import free_port, start

RUNTIME = Path(__file__).parent.parent / "runtime"


@pytest.mark.parametrize("selftest", [True, False])
@pytest.mark.parametrize("target", ["cpu", "cuda", "tensorrt"])
def test_every_dockerfile_is_hadolint_clean(target: str, selftest: bool) -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    values = {"name": "review-sentiment", "distillc_version": "0.0.0", "port": 8080, "selftest": selftest}
    dockerfile = render("Dockerfile.j2", **values, **image(target))
    assert ("selftest.json" in dockerfile) == selftest
    result = subprocess.run([hadolint, "--no-color", "-"], input=dockerfile, capture_output=True, text=True)
    assert (result.returncode, result.stdout) == (0, ""), result.stdout
    assert "--require-hashes" in dockerfile and ":latest" not in dockerfile
    assert re.search(r"^FROM [\w./-]+:\d+\.\d+\.\d+-", dockerfile, re.MULTILINE)  # pinned to a patch release


def third_party_imports() -> set[str]:
    """Top-level modules the runtime imports that neither the standard library nor the runtime provide."""
    found = set()
    for path in RUNTIME.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            found |= {n.split(".")[0] for n in names}
    return {m for m in found if m not in sys.stdlib_module_names and m not in ("distillc_runtime", "__future__")}


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_each_lock_pins_and_hashes_everything_the_runtime_imports(target: str) -> None:
    lock = lock_path(target).read_text()
    locked = locked_versions(lock)
    distributions = packages_distributions()
    for module in third_party_imports():
        if module == "tensorrt_libs":  # TensorRT packages install it apart from the lock, pinned
            assert TENSORRT_LIBS.startswith("tensorrt-cu13-libs==")
            continue
        names = {normalize(d) for d in distributions[module]}
        if "onnxruntime" in names and target != "cpu":
            names = {"onnxruntime-gpu"}
        assert names & set(locked), f"{target} lock lacks {module} ({names})"
    # Every requirement is `name==version` followed by its hashes, as --require-hashes needs.
    entries = re.split(r"\n(?=\S)", "\n".join(x for x in lock.splitlines() if not x.lstrip().startswith("#")).strip())
    assert len(entries) == len(locked)
    for entry in entries:
        assert re.match(r"^[\w.\-]+==\S+ \\\n(\s+--hash=sha256:[0-9a-f]{64}( \\\n)?)+$", entry + "\n"), entry


def test_a_lock_that_differs_from_the_build_is_reported() -> None:
    stale = "onnxruntime==0.0.1 \\\n    --hash=sha256:" + "0" * 64 + "\n"
    assert check_versions(stale) == [f"onnxruntime: locked 0.0.1, verified with {version('onnxruntime')}"]
    same = f"onnxruntime=={version('onnxruntime')} \\\n    --hash=sha256:" + "0" * 64 + "\n"
    assert check_versions(same) == []


def test_compose_and_kubernetes_manifests_agree_with_the_server(tiny_package: Path) -> None:
    info = json.loads((tiny_package / "package.json").read_text())
    port, timeout = info["deploy"]["port"], info["deploy"]["request_timeout_s"]
    deployment = yaml.safe_load((tiny_package / "k8s" / "deployment.yaml").read_text())
    service = yaml.safe_load((tiny_package / "k8s" / "service.yaml").read_text())
    hpa = yaml.safe_load((tiny_package / "k8s" / "hpa.yaml").read_text())
    compose = yaml.safe_load((tiny_package / "compose.yaml").read_text())

    pod = deployment["spec"]["template"]
    [container] = pod["spec"]["containers"]
    assert deployment["spec"]["selector"]["matchLabels"] == pod["metadata"]["labels"] == service["spec"]["selector"]
    assert container["ports"] == [{"name": "http", "containerPort": port}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert pod["spec"]["terminationGracePeriodSeconds"] > timeout  # in-flight requests may finish
    requests = container["resources"]["requests"]
    model_mib = sum(p.stat().st_size for p in (tiny_package / "model").rglob("*") if p.is_file()) / 2**20
    assert set(requests) == {"cpu", "memory"} and int(requests["memory"].removesuffix("Mi")) > model_mib
    target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"]}
    assert hpa["spec"]["scaleTargetRef"] == target
    assert hpa["spec"]["minReplicas"] >= 1 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]

    [(name, app)] = compose["services"].items()
    assert name == info["name"] and app["image"] == container["image"] and app["build"] == "."
    assert app["ports"] == [f"127.0.0.1:{port}:{port}"]
    assert int(app["stop_grace_period"].removesuffix("s")) > timeout
    # The image tag follows the model's bytes: another model is another tag.
    assert re.fullmatch(rf"{info['name']}:[0-9a-f]{{12}}", app["image"])


def smoke(package: Path, url: str, wait: str = "30") -> subprocess.CompletedProcess:
    command = [sys.executable, str(package / "smoke_test.py"), url, "--wait", wait]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_the_smoke_test_passes_against_the_running_package(tiny_package: Path) -> None:
    process, port = start(tiny_package)
    try:
        result = smoke(tiny_package, f"http://127.0.0.1:{port}")
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert result.returncode == 0, result.stdout
    assert result.stdout.count("ok  ") == 5 and "FAIL" not in result.stdout


def test_the_smoke_test_fails_on_a_missing_or_broken_server(tiny_package: Path) -> None:
    gone = smoke(tiny_package, f"http://127.0.0.1:{free_port()}", wait="1")
    assert gone.returncode == 1 and "FAIL readiness" in gone.stdout

    class Broken(BaseHTTPRequestHandler):
        """Live and ready, but answers outside the label set and takes any body."""

        def reply(self) -> None:
            body = json.dumps({"output": "maybe"}).encode()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = reply

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Broken)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        broken = smoke(tiny_package, f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
    assert broken.returncode == 1
    assert "FAIL answer /v1/predict" in broken.stdout and "FAIL malformed request refused" in broken.stdout
