"""The process model of `edge-proxy run`: worker processes sharing ports, drain on SIGTERM,
clear failures at start. Each test runs the real program as a child process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import ssl
import time
from pathlib import Path

import aiohttp
import pytest

from proxy.workers import ORPHAN_CHECK_SECONDS
from tests.support.pki import Issuer
from tests.support.probes import eventually, handshake_fingerprint
from tests.support.process import EdgeProcess
from tests.support.web import Upstream

pytestmark = pytest.mark.slow


async def test_two_workers_both_serve_the_new_certificate_after_a_swap(tmp_path: Path, up: Upstream, root: Issuer) -> None:
    edge = EdgeProcess(tmp_path, up.port, workers=2)
    await edge.start()
    try:
        # start() returned on /healthz 200: with workers, that is every worker serving.
        before = await handshake_fingerprint(edge.https_port)
        leaf = root.leaf("edge.example", ips=("127.0.0.1",))
        leaf.write(edge.cert_dir)
        deadline = time.monotonic() + 10
        while await handshake_fingerprint(edge.https_port) != leaf.fingerprint:
            assert time.monotonic() < deadline, edge.log()
            await asyncio.sleep(0.1)
        # Both processes must log the swap; the wait is generous for a loaded machine.
        while edge.log().count(f"from directory: fingerprint {leaf.fingerprint}") < 2:
            assert time.monotonic() < deadline + 10, edge.log()
            await asyncio.sleep(0.1)
        # SO_REUSEPORT spreads connections by their addresses: 40 fresh connections from
        # different source ports reach both processes (all on one: odds of 2^-39).
        seen = {await handshake_fingerprint(edge.https_port) for _ in range(40)}
        assert seen == {leaf.fingerprint}, f"still serving {before} somewhere"
    finally:
        await edge.stop()


def _request_with_session(context: ssl.SSLContext, port: int, session: ssl.SSLSession | None) -> tuple[bool, ssl.SSLSession]:
    """One request on a new TLS connection offering `session`; whether it was resumed, and the
    session to offer next (TLS 1.3 tickets arrive after the handshake, so the answer is read)."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="edge.example", session=session) as tls,
    ):
        tls.sendall(b"GET / HTTP/1.1\r\nHost: edge.example\r\nConnection: close\r\n\r\n")
        while tls.recv(65536):
            pass
        assert tls.session is not None
        return tls.session_reused, tls.session


async def test_a_client_resumes_its_tls_session_on_any_worker(tmp_path: Path, up: Upstream) -> None:
    edge = EdgeProcess(tmp_path, up.port, workers=2)
    await edge.start()
    try:
        # start() returned on /healthz 200: with workers, that is every worker serving.
        context = ssl.create_default_context()  # a session is only offered by the context it came from
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        resumed, session = await asyncio.to_thread(_request_with_session, context, edge.https_port, None)
        assert not resumed
        # 40 connections from different source ports reach both workers (all on one: odds of
        # 2^-39); each resumes only if every worker can open the ticket the first one issued.
        outcomes = [(await asyncio.to_thread(_request_with_session, context, edge.https_port, session))[0] for _ in range(40)]
        assert outcomes == [True] * 40
        # The same on the gRPC listener (relay mode, ALPN h2), which has ticket keys of its own.
        h2 = ssl.create_default_context()
        h2.check_hostname = False
        h2.verify_mode = ssl.CERT_NONE
        h2.set_alpn_protocols(["h2"])
        resumed, session = await asyncio.to_thread(_handshake_with_session, h2, edge.grpc_port, None)
        assert not resumed
        outcomes = [(await asyncio.to_thread(_handshake_with_session, h2, edge.grpc_port, session))[0] for _ in range(40)]
        assert outcomes == [True] * 40
    finally:
        await edge.stop()


def _handshake_with_session(context: ssl.SSLContext, port: int, session: ssl.SSLSession | None) -> tuple[bool, ssl.SSLSession]:
    """A TLS handshake offering `session`, then a short read so the tickets that follow arrive."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="edge.example", session=session) as tls,
    ):
        tls.settimeout(0.5)
        with contextlib.suppress(TimeoutError, ssl.SSLError, ConnectionError):
            tls.recv(65536)  # nothing is sent before an HTTP/2 preface: waits out the timeout
        assert tls.session is not None
        return tls.session_reused, tls.session


def _worker_pids(edge: EdgeProcess) -> set[int]:
    """The forked workers' PIDs, read from their log lines (the log format carries the PID)."""
    assert edge.process is not None
    serving = {int(pid) for pid in re.findall(r"\[(\d+)\] proxy: web \(https\) serving on", edge.log())}
    return serving - {edge.process.pid}


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


async def test_healthz_answers_503_once_a_worker_has_died(tmp_path: Path, up: Upstream) -> None:
    edge = EdgeProcess(tmp_path, up.port, workers=2)
    await edge.start()  # 200 only once the first process and its worker both serve
    try:
        (worker,) = _worker_pids(edge)
        os.kill(worker, signal.SIGKILL)
        deadline = time.monotonic() + 10
        async with aiohttp.ClientSession() as session:
            while True:
                async with session.get(f"http://127.0.0.1:{edge.admin_port}/healthz") as response:
                    if response.status == 503:
                        assert await response.json() == {"status": "degraded"}
                        break
                assert time.monotonic() < deadline, edge.log()
                await asyncio.sleep(0.1)
        assert f"worker process {worker} exited" in edge.log()
        # The first process still serves what it can.
        assert await handshake_fingerprint(edge.https_port)
    finally:
        await edge.stop()


async def test_a_worker_stops_once_its_first_process_is_gone(tmp_path: Path, up: Upstream) -> None:
    edge = EdgeProcess(tmp_path, up.port, workers=2)
    await edge.start()
    (worker,) = _worker_pids(edge)
    assert edge.process is not None
    edge.process.kill()  # no chance to stop its workers itself
    await asyncio.to_thread(edge.process.wait, 10)
    deadline = time.monotonic() + 20
    while _running(worker):
        assert time.monotonic() < deadline, edge.log()
        await asyncio.sleep(0.1)
    assert "is gone: stopping this worker" in edge.log()


async def test_a_single_process_edge_is_nobody_s_worker_and_keeps_serving(tmp_path: Path, up: Upstream) -> None:
    edge = EdgeProcess(tmp_path, up.port)
    await edge.start()
    try:
        await asyncio.sleep(ORPHAN_CHECK_SECONDS * 2.5)  # past the checks a forked worker makes
        assert edge.process is not None and edge.process.poll() is None, edge.log()
        assert await handshake_fingerprint(edge.https_port)
        assert "stopping" not in edge.log()
    finally:
        await edge.stop()


async def test_on_a_first_start_every_worker_serves_the_one_self_signed_default(tmp_path: Path, up: Upstream) -> None:
    edge = EdgeProcess(tmp_path, up.port, workers=2)  # no certificate anywhere yet
    await edge.start()
    try:
        # Workers start once the first process serves, and load the default it generated.
        seen = {await handshake_fingerprint(edge.https_port) for _ in range(40)}
        assert len(seen) == 1, edge.log()
        assert edge.log().count("generated a self-signed certificate") == 1, edge.log()
    finally:
        await edge.stop()


async def test_sigterm_lets_an_in_flight_response_finish_then_exits_0(tmp_path: Path, up: Upstream) -> None:
    edge = EdgeProcess(tmp_path, up.port, drain_seconds=10)
    await edge.start()

    async def draining() -> bool:
        return not await edge.healthy()

    connector = aiohttp.TCPConnector(ssl=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(f"https://127.0.0.1:{edge.https_port}/hold") as response:
            assert response.status == 200
            first = await response.content.readline()
            edge.signal(signal.SIGTERM)
            await eventually(draining)  # /healthz says 503 once the edge has begun to drain
            up.release.set()
            rest = await response.read()
        assert first + rest == b"first\nlast\n"
    assert await edge.wait() == 0
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", edge.https_port), timeout=2):
        pass


async def test_a_port_in_use_exits_1_with_a_clear_message(tmp_path: Path, up: Upstream) -> None:
    edge = EdgeProcess(tmp_path, up.port)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", edge.https_port))
        taken.listen()
        edge.write_config()
        with pytest.raises(AssertionError, match="edge exited with 1"):
            await edge.start(timeout=20)
    assert "Traceback" not in edge.log()
    assert f"127.0.0.1:{edge.https_port}" in edge.log()
