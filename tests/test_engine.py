"""Which HTTP/1.1 engine serves: the compiled one where setup.py built it, the pure-Python one
with EDGE_PROXY_NO_EXTENSIONS or without a C compiler, each saying so in one log line, and
either one serving the same answers (the rest of the suite runs on both: see the Makefile)."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from proxy import extensions
from tests.support.engine import ROOT, extension, source
from tests.support.process import EdgeProcess
from tests.support.web import Upstream


def test_this_run_imports_the_engine_it_was_asked_for() -> None:
    assert extensions.engine() == ("pure Python" if extensions.NO_EXTENSIONS else "compiled")
    for name in extensions.COMPILED_MODULES:
        loaded = Path(sys.modules[name].__file__ or "")
        assert loaded == (source(name) if extensions.NO_EXTENSIONS else extension(name)), name


def test_setup_compiles_every_module_the_engine_lists() -> None:
    setup = (ROOT / "setup.py").read_text()
    for name in extensions.COMPILED_MODULES:
        assert f'"{name.replace(".", "/")}.py"' in setup, name
        assert source(name).with_suffix(".pxd").exists(), name


@pytest.mark.slow
@pytest.mark.parametrize(
    ("no_extensions", "line"),
    [("", "HTTP/1.1 engine: compiled"), ("1", "HTTP/1.1 engine: pure Python (EDGE_PROXY_NO_EXTENSIONS is set)")],
)
async def test_the_edge_says_which_engine_serves_and_either_one_proxies(
    tmp_path: Path, up: Upstream, monkeypatch: pytest.MonkeyPatch, no_extensions: str, line: str
) -> None:
    if no_extensions:
        monkeypatch.setenv("EDGE_PROXY_NO_EXTENSIONS", no_extensions)
    else:
        monkeypatch.delenv("EDGE_PROXY_NO_EXTENSIONS", raising=False)
    edge = EdgeProcess(tmp_path, up.port)
    await edge.start()
    try:
        client = ssl.create_default_context()
        client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
        url = f"https://127.0.0.1:{edge.https_port}/echo-headers?q=1"
        async with aiohttp.ClientSession() as session, session.get(url, ssl=client) as response:
            assert response.status == 200
            assert (await response.json())["path"] == "/echo-headers?q=1"
        assert edge.log().count("HTTP/1.1 engine:") == 1
        assert line in edge.log()
    finally:
        await edge.stop()


def test_a_source_edited_after_the_build_is_named_as_stale(tmp_path: Path) -> None:
    if extensions.NO_EXTENSIONS or extension("proxy.http1.client") is None:
        pytest.skip("needs the built extensions")
    shutil.copytree(ROOT / "proxy", tmp_path / "proxy", ignore=shutil.ignore_patterns("__pycache__"))
    assert extensions.stale(tmp_path) == []
    later = time.time() + 5
    os.utime(tmp_path / "proxy" / "http1" / "client.pxd", (later, later))
    assert extensions.stale(tmp_path) == ["proxy.http1.client"]


@pytest.mark.slow
def test_without_a_c_compiler_the_install_keeps_the_pure_python_engine(tmp_path: Path) -> None:
    # A copy of the sources with the C files Cython made (mtimes kept, so it does not translate
    # them again): only the C compiler is missing.
    shutil.copy2(ROOT / "setup.py", tmp_path / "setup.py")
    shutil.copytree(ROOT / "proxy", tmp_path / "proxy", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    started = time.monotonic()
    build = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace"],
        cwd=tmp_path,
        env={**{k: v for k, v in os.environ.items() if k != "EDGE_PROXY_NO_EXTENSIONS"}, "CC": "/bin/false", "LDSHARED": "/bin/false"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    assert "edge-proxy: the HTTP/1.1 engine stays pure Python" in build.stderr
    assert not list((tmp_path / "proxy").rglob("*.so")), f"after {time.monotonic() - started:.0f} s"
