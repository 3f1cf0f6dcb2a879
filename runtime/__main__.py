"""`serve PACKAGE_DIR`, `predict PACKAGE_DIR TEXT`, or `check PACKAGE_DIR [--answers]`, started by
`python -I distillc_runtime/launch.py` (launch.py says why not `python -m distillc_runtime`)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distillc_runtime.generate import Generator
    from distillc_runtime.linear import LinearClassifier


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="distillc_runtime")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the package over HTTP")
    serve.add_argument("package_dir", type=Path)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")), help="default: $PORT or 8080")
    serve.add_argument("--max-batch-size", type=int, help="override the package's deploy.max_batch_size")
    serve.add_argument("--max-queue", type=int, help="override the package's deploy.max_queue")
    serve.add_argument(
        "--capture-dir",
        type=Path,
        default=os.environ.get("DISTILLC_CAPTURE_DIR") or None,
        help="with a cascade: append its escalated and shadowed pairs here, for the next build "
        "(default: $DISTILLC_CAPTURE_DIR)",
    )
    check = commands.add_parser("check", help="check every file against the package's manifest")
    check.add_argument("package_dir", type=Path)
    check.add_argument(
        "--answers", action="store_true", help="also run the self-test: the build's answers, given again on this CPU"
    )
    predict = commands.add_parser("predict", help="answer one input and print the output")
    predict.add_argument("package_dir", type=Path)
    predict.add_argument("text")
    args = parser.parse_args(argv)

    if not (args.package_dir / "package.json").is_file():
        print(f"error: {args.package_dir} is not a distillc package (no package.json)", file=sys.stderr)
        return 2
    from distillc_runtime.integrity import problems

    if found := problems(args.package_dir):
        print(f"error: {args.package_dir} does not match its manifest:", file=sys.stderr)
        for line in found:
            print(f"  {line}", file=sys.stderr)
        return 1
    if args.command == "check":
        print(f"{args.package_dir}: every file matches the manifest")
        return check_answers(args.package_dir) if args.answers else 0
    if args.command == "predict":
        print(package_generator(args.package_dir).predict(args.text))
        return 0
    import uvicorn

    from distillc_runtime.connections import Limits, guarded_protocol
    from distillc_runtime.server import create_app

    deploy = json.loads((args.package_dir / "package.json").read_text(encoding="utf-8")).get("deploy", {})
    # uvicorn drains on SIGTERM, then restores this handler and raises the signal again: exit 0, the
    # status of a clean stop, rather than death by signal.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(
        create_app(
            args.package_dir, max_batch_size=args.max_batch_size, max_queue=args.max_queue, capture_dir=args.capture_dir
        ),
        host=args.host,
        port=args.port,
        log_level="info",
        # Deadlines for slow and idle clients and a connection cap that evicts them (connections.py);
        # requests are limited by the app (InFlightLimit, the queue), not by uvicorn's limit_concurrency,
        # which counts idle sockets too.
        http=guarded_protocol(Limits(deploy)),
        # SIGTERM: stop accepting, let requests in flight finish (each is bounded by its own timeout), exit 0.
        timeout_graceful_shutdown=float(deploy.get("request_timeout_s", 30.0)) + 5,
    )
    return 0


def package_generator(package_dir: Path) -> Generator | LinearClassifier:
    from distillc_runtime.model import load_model
    from distillc_runtime.providers import providers_for

    target = json.loads((package_dir / "package.json").read_text(encoding="utf-8")).get("target", "cpu")
    model = package_dir / "model"
    return load_model(model, providers=providers_for(target, model))


def check_answers(package_dir: Path) -> int:
    """The server's start-up self-test, by hand: 0 when the model answers here as the build measured."""
    from distillc_runtime import selftest

    recorded = selftest.load(package_dir)
    if recorded is None:
        print(f"error: {package_dir} has no {selftest.SELFTEST}: it was built without a self-test", file=sys.stderr)
        return 2
    proof = selftest.run(package_generator(package_dir), recorded)
    print(json.dumps(proof.summary(), indent=2))
    if not proof.passed:
        print(f"error: self-test failed: {proof.reason()}", file=sys.stderr)
        return 1
    print(f"{package_dir}: self-test passed: {proof.reason()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
