"""Which HTTP/1.1 engine runs: the compiled one (setup.py builds it with Cython from the same
sources) or the pure-Python one, and the switch that forces the latter.

`EDGE_PROXY_NO_EXTENSIONS=1` in the environment makes every import of a compiled module load its
.py source instead, as `AIOHTTP_NO_EXTENSIONS` does for aiohttp: the one way to run the pure path
on a machine where the extensions are built. Knows nothing of what the modules do.
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

# Kept in step with setup.py's COMPILED list.
COMPILED_MODULES = (
    "proxy.http1.wire",
    "proxy.http1.request",
    "proxy.http1.upstream",
    "proxy.http1.leg",
    "proxy.http1.exchange",
    "proxy.http1.client",
    "proxy.logwriter",
    "proxy.accesslog",
    "proxy.connections",
)
NO_EXTENSIONS = bool(os.environ.get("EDGE_PROXY_NO_EXTENSIONS"))
ROOT = Path(__file__).resolve().parent.parent  # the directory holding the `proxy` package


class _SourcesFirst:
    """A meta path finder that finds the compiled modules' .py sources and nothing else."""

    _loader = (importlib.machinery.SourceFileLoader, importlib.machinery.SOURCE_SUFFIXES)

    def find_spec(self, name: str, path: Sequence[str] | None, target: ModuleType | None = None) -> ModuleSpec | None:
        if name not in COMPILED_MODULES or not path:
            return None
        for entry in path:
            spec = importlib.machinery.FileFinder(entry, self._loader).find_spec(name)
            if spec is not None:
                return spec
        return None


def prefer_sources() -> None:
    """From now on the compiled modules are imported from their sources (before any is imported)."""
    if not any(isinstance(finder, _SourcesFirst) for finder in sys.meta_path):
        sys.meta_path.insert(0, _SourcesFirst())


def stale(root: Path = ROOT) -> list[str]:
    """The compiled modules whose extension is older than their .py or .pxd beside it: a source
    edited without `make engine` (the extension, not the edit, would run). `root`: the directory
    holding the `proxy` package."""
    found = []
    for name in COMPILED_MODULES:
        source = root.joinpath(*name.split(".")).with_suffix(".py")
        built = sorted(source.parent.glob(source.stem + ".*.so"))
        if not built:
            continue
        mtime = built[0].stat().st_mtime
        if any(path.exists() and path.stat().st_mtime > mtime for path in (source, source.with_suffix(".pxd"))):
            found.append(name)
    return found


def engine() -> str:
    """'compiled' when every compiled module was loaded from its extension, else 'pure Python'."""
    import proxy.http1.client  # noqa: F401 - imports the engine's modules

    loaded = [sys.modules.get(name) for name in COMPILED_MODULES]
    compiled = all(module is not None and not (module.__file__ or "").endswith(".py") for module in loaded)
    return "compiled" if compiled else "pure Python"
