"""`make demo`: the demo upstreams, the demo material, and the demo itself with the commands it
prints run exactly as printed."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import grpc
import pytest

from proxy.certstore.pem import Material
from proxy.certstore.validate import NamePolicy, validate_material
from proxy.demo import DemoUpstreams, banner, demo_config, main
from proxy.errors import MaterialError
from tests.support.edge import MISMATCHED_KEY

DEMO_PORTS = (8443, 8080, 9900, 8081, 50051)  # the embedded default config's


async def test_demo_http_app_shows_the_request_it_received(upstreams: DemoUpstreams) -> None:
    url = f"http://127.0.0.1:{upstreams.http_port}/some/path?q=1"
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=b"12345", headers={"X-Forwarded-Proto": "https"}) as response:
            shown = await response.json()
        async with session.get(url, headers={"Accept": "text/plain"}) as response:
            text = await response.text()
    assert shown["method"] == "POST"
    assert shown["path"] == "/some/path?q=1"
    assert shown["headers"]["X-Forwarded-Proto"] == "https"
    assert shown["body_bytes"] == 5
    assert text.startswith("GET /some/path?q=1 HTTP/1.1\n")


async def test_demo_grpc_echo_returns_raw_bytes_for_any_method(upstreams: DemoUpstreams) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{upstreams.grpc_port}") as channel:
        unary = channel.unary_unary("/any.Service/Anything")
        call = unary(b"\x00hello\xff", timeout=5)
        assert await call == b"\x00hello\xff"
        assert ("echo-method", "/any.Service/Anything") in tuple(await call.trailing_metadata())
        bidi = channel.stream_stream("/other.Chat/Talk")
        replies = [reply async for reply in bidi(iter([b"a", b"bb", b"ccc"]), timeout=5)]
        assert replies == [b"a", b"bb", b"ccc"]


async def test_busy_demo_port_is_reported_not_left_half_running() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        upstreams = DemoUpstreams(http_port=0, grpc_port=taken.getsockname()[1])
        with pytest.raises(OSError, match="the demo gRPC upstream cannot listen"):
            await upstreams.start()
    assert upstreams._runner is None


def test_new_cert_drops_material_the_edge_accepts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = demo_config(tmp_path)
    policy = NamePolicy(config.tls.server_name, config.tls.ip_addresses)
    assert main(["new-cert", "--workdir", str(tmp_path)]) == 0
    cert_dir = config.tls.cert_dir
    dropped = Material((cert_dir / "tls.crt").read_bytes(), (cert_dir / "tls.key").read_bytes(), (cert_dir / "ca.crt").read_bytes())
    valid = validate_material(dropped, policy, datetime.now(UTC))
    assert valid.ca, "the chain is checked against the demo CA"
    ca_before = (cert_dir / "ca.crt").read_bytes()

    assert main(["new-cert", "--workdir", str(tmp_path), "--json", "--wrong-key"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["ca"].encode() == ca_before, "one demo CA, so curl --cacert keeps working"
    with pytest.raises(MaterialError) as refused:
        validate_material(Material(body["certificate"].encode(), body["key"].encode(), body["ca"].encode()), policy, datetime.now(UTC))
    assert refused.value.problems == (MISMATCHED_KEY,)


def test_banner_names_every_url_and_the_token_file(tmp_path: Path) -> None:
    text = banner(demo_config(tmp_path))
    for expected in ("https://127.0.0.1:8443/", "http://127.0.0.1:9900/", "admin.token", "Ctrl-C"):
        assert expected in text
    assert "  gRPC      127.0.0.1:8443 " in text, "gRPC clients reach the echo on the HTTPS port"


def _ports_in_use() -> list[int]:
    busy = []
    for port in DEMO_PORTS:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                busy.append(port)
    return busy


async def _read_commands(stdout: asyncio.StreamReader) -> list[str]:
    """The copy-paste commands of the banner, in order."""
    commands: list[str] = []
    while True:
        line = (await stdout.readline()).decode()
        if not line:
            raise AssertionError("the demo ended before printing its commands")
        if line.startswith("  ") and not line.lstrip().startswith("#") and ("curl" in line or "proxy.demo" in line):
            commands.append(line.strip())
            if "/api/v1/certificate" in line:
                return commands


async def _shell(command: str, cwd: Path) -> str:
    process = await asyncio.create_subprocess_shell(
        command, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, executable="/bin/bash"
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, (command, out.decode(), err.decode())
    return out.decode()


async def test_demo_runs_its_printed_commands_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    if busy := _ports_in_use():
        pytest.skip(f"the demo's fixed ports {busy} are in use (is a demo running?)")
    if shutil.which("curl") is None:
        pytest.skip("the demo's commands use curl")
    log = (tmp_path / "demo.log").open("wb")
    unbuffered = {**os.environ, "PYTHONUNBUFFERED": "1"}  # the banner must arrive while the demo runs
    demo = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy.demo", cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=log, env=unbuffered
    )
    try:
        assert demo.stdout is not None
        request, drop, bad_upload = await asyncio.wait_for(_read_commands(demo.stdout), 30)

        shown = json.loads(await _shell(request, tmp_path))
        assert shown["headers"]["X-Forwarded-Proto"] == "https"
        assert shown["path"] == "/hello?from=demo"

        shown = json.loads(await _shell(drop, tmp_path))
        assert shown["path"] == "/hello", "curl trusted only the demo CA, so the dropped certificate served"

        answer = await _shell(bad_upload, tmp_path)
        assert answer.rstrip().endswith("HTTP 422")
        assert json.loads(answer.splitlines()[0])["problems"] == [MISMATCHED_KEY]

        ca = (tmp_path / "state" / "demo-ca" / "ca.crt").read_bytes()
        credentials = grpc.ssl_channel_credentials(ca)
        async with grpc.aio.secure_channel("127.0.0.1:8443", credentials) as channel:  # the HTTPS port: one port
            assert await channel.unary_unary("/demo.Echo/Say")(b"through the edge", timeout=5) == b"through the edge"

        demo.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(demo.wait(), 15) == 0
    finally:
        if demo.returncode is None:
            demo.kill()
            await demo.wait()
        log.close()
    assert "Traceback" not in (tmp_path / "demo.log").read_text()
