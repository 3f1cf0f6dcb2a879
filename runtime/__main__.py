"""`python -m distillc_runtime serve PACKAGE_DIR` or `python -m distillc_runtime predict PACKAGE_DIR TEXT`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="distillc_runtime")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the package over HTTP")
    serve.add_argument("package_dir", type=Path)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    predict = commands.add_parser("predict", help="answer one input and print the output")
    predict.add_argument("package_dir", type=Path)
    predict.add_argument("text")
    args = parser.parse_args(argv)

    if not (args.package_dir / "package.json").is_file():
        print(f"error: {args.package_dir} is not a distillc package (no package.json)", file=sys.stderr)
        return 2
    if args.command == "predict":
        import json

        from distillc_runtime.generate import Generator
        from distillc_runtime.providers import providers_for

        target = json.loads((args.package_dir / "package.json").read_text(encoding="utf-8")).get("target", "cpu")
        model = args.package_dir / "model"
        print(Generator(model, providers=providers_for(target, model)).predict(args.text))
        return 0
    import uvicorn

    from distillc_runtime.server import create_app

    uvicorn.run(create_app(args.package_dir), host=args.host, port=args.port, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
