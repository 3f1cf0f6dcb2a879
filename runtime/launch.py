"""Start the runtime so that nothing but the package's listed source runs:

    python -I distillc_runtime/launch.py serve PACKAGE_DIR     (or check, predict: see __main__.py)

Run as a script, not with `-m`: `-m` puts the working folder on sys.path, where a planted `argparse.py`
or `types.py` in the package root would be imported in place of the standard library's. Here:
- no folder of the package, nor the working one, is on sys.path: the runtime is loaded from this folder
  by location, and its modules through the package's own `__path__`;
- no bytecode is read or written: a `__pycache__` planted beside the source, with the source's mtime and
  size, is never consulted (`sys.pycache_prefix` points where nothing is), and none is left behind;
- then `__main__.main` checks every file against the manifest before it loads the model.
`-I` (isolated) also ignores PYTHONPATH, PYTHONSTARTUP and the user's site-packages.
"""

import sys

if not sys.flags.safe_path and sys.path and sys.path[0]:
    del sys.path[0]  # this script's folder: its modules are the runtime's, imported as the package's below
sys.dont_write_bytecode = True
sys.pycache_prefix = "/nonexistent/distillc-no-bytecode"  # bytecode is looked up there only: never found

import importlib.util  # noqa: E402 - after the path is safe
import os  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def load_runtime() -> None:
    """Import this folder as `distillc_runtime`, by location."""
    spec = importlib.util.spec_from_file_location(
        "distillc_runtime", os.path.join(HERE, "__init__.py"), submodule_search_locations=[HERE]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["distillc_runtime"] = module
    spec.loader.exec_module(module)


if __name__ == "__main__":
    load_runtime()
    from distillc_runtime.__main__ import main

    sys.exit(main())
