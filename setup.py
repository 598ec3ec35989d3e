"""The compiled HTTP/1.1 engine: Cython builds C extensions from the engine's own .py sources,
with the types declared in the .pxd files beside them (as aiohttp builds its WebSocket reader).

Optional by design: without Cython, without a C compiler, or with EDGE_PROXY_NO_EXTENSIONS set,
the build says so in one line and edge-proxy installs as pure Python, running the same sources.
Everything else about the package is in pyproject.toml.
"""

from __future__ import annotations

import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

# The modules a proxied HTTP/1.1 request runs through, in the order they depend on each other.
COMPILED = [
    "proxy/http1/wire.py",
    "proxy/http1/request.py",
    "proxy/http1/upstream.py",
    "proxy/http1/leg.py",
    "proxy/http1/exchange.py",
    "proxy/http1/client.py",
    "proxy/logwriter.py",
    "proxy/accesslog.py",
    "proxy/connections.py",
]
# Annotations stay Python's: the types Cython compiles with are the .pxd's, so the annotated
# sources never turn into C-level checks that the pure path does not make.
DIRECTIVES = {"language_level": 3, "annotation_typing": False, "embedsignature": False}


def say(message: str) -> None:
    print(f"edge-proxy: {message}", file=sys.stderr)


class OptionalBuildExt(build_ext):
    """A failed compile leaves the pure-Python engine in place instead of failing the install.
    All or nothing: the compiled modules know each other's types, so one built without the
    others would not import."""

    def build_extensions(self) -> None:
        try:
            super().build_extensions()
        except Exception as e:  # noqa: BLE001 - any compiler failure means: no extension
            say(f"the HTTP/1.1 engine stays pure Python (it did not compile: {e})")
            for ext in self.extensions:
                built = self.get_ext_fullpath(ext.name)
                if os.path.exists(built):
                    os.remove(built)
            self.extensions = []


def extensions() -> list[object]:
    if os.environ.get("EDGE_PROXY_NO_EXTENSIONS"):
        say("EDGE_PROXY_NO_EXTENSIONS is set: the HTTP/1.1 engine stays pure Python")
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        say("Cython is not installed: the HTTP/1.1 engine stays pure Python")
        return []
    try:
        return list(cythonize(COMPILED, compiler_directives=DIRECTIVES, quiet=True))
    except Exception as e:  # noqa: BLE001 - a source Cython cannot translate: no extension
        say(f"the HTTP/1.1 engine stays pure Python (Cython failed: {e})")
        return []


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
