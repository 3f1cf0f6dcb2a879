"""The CPU runtime's installed footprint: what a package's requirements.txt puts on disk.

    python bench/footprint.py [--lock runtime/locks/cpu.txt] [--out footprint.json]

Installs the lock into a fresh virtual environment exactly as the package's Dockerfile does
(`pip install --require-hashes --no-deps`), checks that the server's modules import there, and
prints the environment's size: site-packages in total and its largest distributions, in MB. Needs the
package index; the interpreter must be the lock's Python (3.11).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).parent.parent


def size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink()) / 1e6


def measure(lock: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env = Path(tmp) / "env"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
        python = env / "bin" / "python"
        # pip from outside the environment installs into it, so pip itself is not counted.
        install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-cache-dir"]
        subprocess.run([*install, "--require-hashes", "--no-deps", "-r", str(lock)], check=True)
        shutil.copytree(ROOT / "runtime", Path(tmp) / "distillc_runtime", ignore=shutil.ignore_patterns("locks"))
        imports = "import distillc_runtime.server, distillc_runtime.generate, distillc_runtime.constrain"
        subprocess.run([str(python), "-c", imports], check=True, cwd=tmp)
        [site] = list((env / "lib").glob("python*/site-packages"))
        largest: dict[str, float] = {}
        for entry in site.iterdir():
            if entry.is_dir() and not entry.name.endswith((".dist-info", "__pycache__")):
                largest[entry.name] = round(size_mb(entry), 1)
        top = dict(sorted(largest.items(), key=lambda item: -item[1])[:8])
        return {"lock": str(lock.relative_to(ROOT)), "site_packages_mb": round(size_mb(site), 1), "largest_mb": top}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lock", type=Path, default=ROOT / "runtime" / "locks" / "cpu.txt")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = measure(args.lock.resolve())
    print(f"{result['lock']}: {result['site_packages_mb']} MB installed")
    for name, mb in result["largest_mb"].items():
        print(f"  {name}: {mb} MB")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
