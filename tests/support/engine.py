"""The compiled HTTP/1.1 engine as the tests see it: where its sources and extensions lie, and
which extensions are older than the sources they were built from."""

from __future__ import annotations

from pathlib import Path

from proxy.extensions import COMPILED_MODULES

ROOT = Path(__file__).resolve().parents[2]


def source(module: str) -> Path:
    return ROOT.joinpath(*module.split(".")).with_suffix(".py")


def extension(module: str) -> Path | None:
    """The built extension beside a module's source, if any."""
    found = sorted(source(module).parent.glob(module.rpartition(".")[2] + ".*.so"))
    return found[0] if found else None


def stale_extensions() -> list[str]:
    """Modules whose extension is older than their .py or .pxd."""
    stale = []
    for module in COMPILED_MODULES:
        built = extension(module)
        if built is None:
            continue
        sources = [source(module), source(module).with_suffix(".pxd")]
        if any(path.exists() and path.stat().st_mtime > built.stat().st_mtime for path in sources):
            stale.append(module)
    return stale
