"""The compiled HTTP/1.1 engine as the tests see it: where its sources and extensions lie."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def source(module: str) -> Path:
    return ROOT.joinpath(*module.split(".")).with_suffix(".py")


def extension(module: str) -> Path | None:
    """The built extension beside a module's source, if any."""
    found = sorted(source(module).parent.glob(module.rpartition(".")[2] + ".*.so"))
    return found[0] if found else None
