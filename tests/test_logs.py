"""The logs an operator reads: access lines for what real clients do (HTTP/1.1, WebSocket, gRPC on
a grpc listener and on the HTTPS port, a redirect, a 502), the audit trail of certificate
changes, expiry warnings, the JSON format of the edge's own lines, and SIGUSR1 with a real
process."""

from __future__ import annotations

import json
import logging
import signal
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import aiohttp
import grpc
import pytest

from proxy.accesslog import AccessLog
from proxy.certstore.expiry import ExpiryWarnings
from proxy.logwriter import LineMaker, LineWriter
from tests.support.edge import RunningEdge, new_upload, running_edge
from tests.support.grpc_echo import EchoUpstream, method
from tests.support.h2client import GRPC_HEADERS, H2Client, curl, curl_available, grpc_message
from tests.support.pki import SERVER_IP, SERVER_NAME, Pki
from tests.support.probes import WAIT, eventually, free_port
from tests.support.process import EdgeProcess
from tests.support.web import Upstream

REQUIRED = (
    "ts",
    "listener",
    "client",
    "protocol",
    "method",
    "host",
    "path",
    "status",
    "bytes_in",
    "bytes_out",
    "duration_ms",
    "upstream",
    "tls_version",
)
RFC3339_MS = "%Y-%m-%dT%H:%M:%S.%fZ"


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of `path`, each parsed as one JSON object (a line that is not fails the test)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


async def lines_where(log_file: Path, count: int = 1, **match: Any) -> list[dict[str, Any]]:
    """The access lines in `log_file` whose fields equal `match`, once there are `count` of them."""
    found: list[dict[str, Any]] = []

    def enough() -> bool:
        found[:] = [line for line in read_json_lines(log_file) if all(line.get(k) == v for k, v in match.items())]
        return len(found) >= count

    await eventually(enough, WAIT)
    return found


@pytest.fixture
async def logged_edge(tmp_path: Path, up: Upstream, grpc_up: EchoUpstream) -> AsyncIterator[RunningEdge]:
    """The whole edge with the JSON access log in access.log: "web" also serves gRPC (one port)
    and routes /dead/ to a port nobody listens on; "grpc" relays gRPC; "redirect" redirects."""
    web = {
        "grpc_upstream": f"{SERVER_IP}:{grpc_up.port}",
        "routes": [{"path_prefix": "/dead/", "upstream": f"http://{SERVER_IP}:{free_port()}"}],
    }
    redirect = {"name": "redirect", "protocol": "http-redirect", "listen": f"{SERVER_IP}:0", "redirect_port": 8443}
    async with running_edge(
        tmp_path,
        http_upstream=up.port,
        grpc_upstream=grpc_up.port,
        pki=Pki(),
        log={"access": "json", "access_file": "access.log"},
        web=web,
        listeners=[redirect],
    ) as edge:
        yield edge


def access_file(edge: RunningEdge) -> Path:
    path = edge.edge.config.log.access_file
    assert path is not None
    return path


async def test_http_request_gets_one_json_line_with_every_field(logged_edge: RunningEdge) -> None:
    assert logged_edge.pki is not None
    connector = aiohttp.TCPConnector(ssl=logged_edge.pki.client_context())
    async with aiohttp.ClientSession(connector=connector) as session:
        url = f"https://{SERVER_IP}:{logged_edge.https_port}/echo-headers/a?b=1&c=%20"
        async with session.post(url, data=b"x" * 1000, headers={"Authorization": "Bearer secret-token"}) as response:
            assert response.status == 200
            body = await response.read()
    [line] = await lines_where(access_file(logged_edge), path="/echo-headers/a?b=1&c=%20")
    assert set(REQUIRED) <= set(line)
    assert line["listener"] == "web"
    assert line["client"] == SERVER_IP
    assert line["protocol"] == "HTTP/1.1"
    assert line["method"] == "POST"
    assert line["host"] == f"{SERVER_IP}:{logged_edge.https_port}"
    assert line["status"] == 200
    assert line["bytes_in"] > 1000
    assert line["bytes_out"] > len(body)
    assert line["duration_ms"] >= 0
    assert line["upstream"].startswith(f"http://{SERVER_IP}:")
    assert line["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert "reason" not in line
    datetime.strptime(line["ts"], RFC3339_MS)  # RFC 3339, UTC, milliseconds
    assert len(line["ts"]) == len("2026-11-28T17:00:00.123Z")
    assert "secret-token" not in access_file(logged_edge).read_text()  # no header values


async def test_upstream_down_gives_502_line_with_its_reason(logged_edge: RunningEdge) -> None:
    assert logged_edge.pki is not None
    connector = aiohttp.TCPConnector(ssl=logged_edge.pki.client_context())
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(f"https://{SERVER_IP}:{logged_edge.https_port}/dead/x") as response,
    ):
        assert response.status == 502
    [line] = await lines_where(access_file(logged_edge), path="/dead/x")
    assert line["status"] == 502
    assert line["reason"] == "upstream_unreachable"
    assert line["upstream"].startswith(f"http://{SERVER_IP}:")


async def test_websocket_session_is_one_line_when_it_ends(logged_edge: RunningEdge) -> None:
    assert logged_edge.pki is not None
    connector = aiohttp.TCPConnector(ssl=logged_edge.pki.client_context())
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.ws_connect(f"https://{SERVER_IP}:{logged_edge.https_port}/ws") as ws,
    ):
        await ws.send_str("hello through the edge")
        assert (await ws.receive(timeout=WAIT)).data == "echo: hello through the edge"
    [line] = await lines_where(access_file(logged_edge), path="/ws")
    assert line["status"] == 101
    assert line["method"] == "GET"
    assert line["bytes_in"] > len("hello through the edge")
    assert line["bytes_out"] > len("hello through the edge")


@pytest.mark.parametrize("listener", ["grpc", "web"])
async def test_relayed_grpc_connection_is_one_line(logged_edge: RunningEdge, grpc_up: EchoUpstream, listener: str) -> None:
    assert logged_edge.pki is not None
    port = logged_edge.grpc_port if listener == "grpc" else logged_edge.https_port
    async with logged_edge.pki.grpc_channel(port) as channel:
        for i in range(3):
            assert await channel.unary_unary(method("Unary"))(b"ping %d" % i, timeout=WAIT) == b"ping %d" % i
    [line] = await lines_where(access_file(logged_edge), listener=listener, protocol="gRPC")
    assert set(REQUIRED) <= set(line)
    assert line["streams"] == 3
    assert line["method"] is None and line["path"] is None and line["status"] is None
    assert line["bytes_in"] > 0 and line["bytes_out"] > 0
    assert line["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert line["upstream"] == f"{SERVER_IP}:{grpc_up.port}"


async def test_grpc_connection_to_an_unreachable_upstream_says_unavailable(tmp_path: Path, up: Upstream) -> None:
    pki = Pki()
    log = {"access": "json", "access_file": "access.log"}
    async with running_edge(tmp_path, http_upstream=up.port, grpc_upstream=free_port(), pki=pki, log=log) as edge:
        async with pki.grpc_channel(edge.grpc_port) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await channel.unary_unary(method("Unary"))(b"ping", timeout=WAIT)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        [line] = await lines_where(tmp_path / "access.log", listener="grpc")
    assert line["status"] == "UNAVAILABLE" and line["reason"] == "upstream_unreachable"
    assert line["streams"] >= 1


async def test_redirect_is_one_line(logged_edge: RunningEdge) -> None:
    port = logged_edge.edge.listeners["redirect"].port
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://{SERVER_IP}:{port}/login?next=/", allow_redirects=False) as response,
    ):
        assert response.status == 308
    [line] = await lines_where(access_file(logged_edge), listener="redirect")
    assert line["status"] == 308
    assert line["reason"] == "https_redirect"
    assert line["path"] == "/login?next=/"
    assert line["tls_version"] is None and line["upstream"] is None


async def test_text_access_lines_are_key_value_pairs(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog("text", LineWriter(path))
    log.for_listener("web").request(
        "HTTP/1.1", "10.0.0.7", "TLSv1.3", "GET", "a.example", '/x?q="a b"', 404, 80, 120, 0.0, None, "no_route"
    )
    line = path.read_text()
    assert line.endswith("\n") and line.count("\n") == 1
    assert " listener=web client=10.0.0.7 protocol=HTTP/1.1 method=GET host=a.example " in line
    assert ' path="/x?q=\\"a b\\"" status=404 bytes_in=80 bytes_out=120 ' in line
    assert line.rstrip().endswith("upstream=- tls_version=TLSv1.3 reason=no_route")


async def test_full_disk_is_reported_once_and_requests_still_succeed(
    tmp_path: Path, up: Upstream, capfd: pytest.CaptureFixture[str]
) -> None:
    pki = Pki()
    async with running_edge(
        tmp_path, http_upstream=up.port, grpc_upstream=free_port(), pki=pki, log={"access": "json", "access_file": "/dev/full"}
    ) as edge:
        errors: list[str] = []

        def reported() -> bool:
            errors.append(capfd.readouterr().err)
            return "cannot write log lines to /dev/full" in "".join(errors)

        connector = aiohttp.TCPConnector(ssl=pki.client_context())
        async with aiohttp.ClientSession(connector=connector) as session:
            for i in range(5):
                async with session.get(f"https://{SERVER_IP}:{edge.https_port}/n/{i}") as response:
                    assert response.status == 200
                if i == 0:
                    await eventually(reported, WAIT)
    # The edge has stopped, so every line was tried: the failure was said once.
    errors.append(capfd.readouterr().err)
    assert "".join(errors).count("cannot write log lines to /dev/full") == 1


# --- the audit trail -------------------------------------------------------------------------


def audit_fields(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [r.__dict__["fields"] for r in caplog.records if r.name == "proxy.audit"]


async def test_upload_refusal_drop_and_reload_each_leave_an_audit_line(
    tmp_path: Path, up: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="proxy.audit")
    async with running_edge(tmp_path, http_upstream=up.port, grpc_upstream=free_port()) as edge:
        start = audit_fields(caplog)[-1]
        assert start["event"] == "certificate_swapped" and start["source"] == "start"
        assert start["new_version"] == 1 and start["certificate_source"] == "self-signed"
        first = edge.serving_fingerprint

        upload = new_upload()
        status, _ = await edge.admin.upload(upload.body())
        assert status == 200
        uploaded = audit_fields(caplog)[-1]
        assert uploaded["event"] == "certificate_swapped"
        assert uploaded["source"] == "upload" and uploaded["client"] == SERVER_IP
        assert (uploaded["old_version"], uploaded["old_fingerprint"]) == (1, first)
        assert (uploaded["new_version"], uploaded["new_fingerprint"]) == (2, upload.fingerprint)

        status, _ = await edge.admin.upload(new_upload().with_wrong_key())
        assert status == 422
        refused = audit_fields(caplog)[-1]
        assert refused["event"] == "certificate_refused" and refused["client"] == SERVER_IP
        assert refused["old_version"] == 2 and "the private key does not match the certificate" in refused["problems"]

        dropped = new_upload()
        dropped.write_into(edge.cert_dir)
        await eventually(lambda: edge.serving_fingerprint == dropped.fingerprint, WAIT)
        drop = [f for f in audit_fields(caplog) if f["source"] == "directory"][-1]
        assert drop["event"] == "certificate_swapped" and drop["client"] is None
        assert (drop["old_version"], drop["new_version"], drop["new_fingerprint"]) == (2, 3, dropped.fingerprint)

        status, _ = await edge.admin.post("/api/v1/reload", headers=edge.admin.auth)
        assert status == 200
        reload = audit_fields(caplog)[-1]
        assert reload == {**reload, "event": "certificate_unchanged", "source": "reload", "client": SERVER_IP, "new_version": 3}

    text = "\n".join(r.getMessage() + json.dumps(r.__dict__.get("fields")) for r in caplog.records)
    for secret in (upload.leaf.key_pem.decode().splitlines()[1], "BEGIN", edge.admin.token):
        assert secret not in text


# --- expiry warnings ---------------------------------------------------------------------------


@pytest.mark.parametrize(("days", "level"), [(20, logging.WARNING), (3, logging.ERROR)])
async def test_a_certificate_close_to_expiry_is_warned_about_at_start(
    tmp_path: Path, up: Upstream, caplog: pytest.LogCaptureFixture, days: int, level: int
) -> None:
    caplog.set_level(logging.INFO, logger="proxy.certstore.expiry")
    pki = Pki()
    leaf = pki.leaf(not_after=datetime.now(UTC) + timedelta(days=days, hours=1))
    async with running_edge(tmp_path, http_upstream=up.port, grpc_upstream=free_port(), pki=pki, first=leaf):
        [record] = [r for r in caplog.records if r.name == "proxy.certstore.expiry"]
    assert record.levelno == level
    fields = record.__dict__["fields"]
    assert fields["fingerprint"] == leaf.fingerprint and fields["days_left"] == days
    assert fields["subject"] in record.getMessage() and leaf.fingerprint in record.getMessage()
    assert f"in {days} days" in record.getMessage()


async def test_an_expiry_warning_comes_again_once_its_day_has_passed(
    tmp_path: Path, up: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="proxy.certstore.expiry")
    pki = Pki()
    leaf = pki.leaf(not_after=datetime.now(UTC) + timedelta(days=20, hours=1))
    day = timedelta(seconds=0.5)  # the edge's rule with a half-second "day", looked at 20 times in it
    expiry = ExpiryWarnings(repeat_every=day, check_every=day / 20)

    def warnings() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "proxy.certstore.expiry"]

    async with running_edge(tmp_path, http_upstream=up.port, grpc_upstream=free_port(), pki=pki, first=leaf, expiry=expiry):
        await eventually(lambda: len(warnings()) >= 2, WAIT)
    first, second = warnings()[:2]
    assert second.created - first.created > (day - expiry.check_every / 2).total_seconds()  # not at an earlier look
    assert (second.levelno, second.getMessage()) == (logging.WARNING, first.getMessage())
    assert leaf.fingerprint in second.getMessage()


async def test_self_signed_default_gets_a_warning_of_its_own(tmp_path: Path, up: Upstream, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="proxy.certstore.expiry")
    async with running_edge(tmp_path, http_upstream=up.port, grpc_upstream=free_port()) as edge:
        [record] = [r for r in caplog.records if r.name == "proxy.certstore.expiry"]
        assert record.levelno == logging.WARNING
        assert "self-signed default certificate" in record.getMessage()
        assert record.__dict__["fields"]["fingerprint"] == edge.serving_fingerprint


async def test_a_certificate_far_from_expiry_gets_no_warning(tmp_path: Path, up: Upstream, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="proxy.certstore.expiry")
    async with running_edge(tmp_path, http_upstream=up.port, grpc_upstream=free_port(), pki=Pki()):
        pass
    assert not [r for r in caplog.records if r.name == "proxy.certstore.expiry"]


# --- a real process: JSON lines on stderr, SIGUSR1 -------------------------------------------


async def get_on_new_connection(port: int, path: str) -> None:
    """One request on a connection of its own to an edge process serving its self-signed default."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    connector = aiohttp.TCPConnector(ssl=context, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session, session.get(f"https://{SERVER_IP}:{port}{path}") as response:
        assert response.status == 200


async def test_a_closed_stdout_is_reported_once_and_requests_still_succeed(tmp_path: Path, up: Upstream) -> None:
    process = EdgeProcess(tmp_path, up.port, log_settings={"access": "json"}, closed_stdout=True)
    report = "cannot write log lines to standard output"
    await process.start()
    try:
        await get_on_new_connection(process.https_port, "/first")
        await eventually(lambda: report in process.log(), WAIT)
        for i in range(5):
            await get_on_new_connection(process.https_port, f"/after-the-report/{i}")
    finally:
        await process.stop()
    assert process.process is not None and process.process.returncode == 0
    # The edge has stopped, so every line was tried: the failure was said once.
    assert process.log().count(report) == 1


async def test_sigusr1_reopens_the_access_file_and_edge_lines_are_json(tmp_path: Path, up: Upstream) -> None:
    process = EdgeProcess(tmp_path, up.port, log_settings={"format": "json", "access": "json", "access_file": "access.log"})
    await process.start()
    try:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:

            async def get(path: str) -> None:
                async with session.get(f"https://{SERVER_IP}:{process.https_port}{path}") as response:
                    assert response.status == 200

            await get("/before-rotation")
            access = tmp_path / "access.log"
            await lines_where(access, path="/before-rotation")
            access.rename(tmp_path / "access.log.1")
            process.signal(signal.SIGUSR1)
            await eventually(access.exists, WAIT)
            await get("/after-rotation")
            [line] = await lines_where(access, path="/after-rotation")
        assert [x["path"] for x in read_json_lines(tmp_path / "access.log.1")] == ["/before-rotation"]
        assert line["status"] == 200
    finally:
        await process.stop()
    assert process.process is not None and process.process.returncode == 0
    edge_lines = [json.loads(text) for text in process.log().splitlines()]  # every line is JSON
    assert all({"ts", "level", "logger", "msg"} <= set(x) for x in edge_lines)
    [start] = [x for x in edge_lines if x.get("event") == "certificate_swapped"]
    assert start["source"] == "start" and start["new_version"] == 1
    assert any(x.get("event") == "certificate_expiry" and x["level"] == "warning" for x in edge_lines)


async def test_sigusr1_moves_every_worker_to_the_new_access_file(tmp_path: Path, up: Upstream) -> None:
    settings = {"format": "json", "access": "json", "access_file": "access.log"}
    process = EdgeProcess(tmp_path, up.port, workers=2, log_settings=settings)
    access, rotated = tmp_path / "access.log", tmp_path / "access.log.1"
    before, after = [f"/before/{i}" for i in range(20)], [f"/after/{i}" for i in range(20)]

    def reopened_by() -> set[int]:
        return {x["pid"] for x in map(json.loads, process.log().splitlines()) if x.get("event") == "access_log_reopened"}

    await process.start()
    try:
        for path in before:  # a connection each: the kernel spreads them over both processes
            await get_on_new_connection(process.https_port, path)
        await lines_where(access, count=len(before))
        access.rename(rotated)
        process.signal(signal.SIGUSR1)
        await eventually(lambda: len(reopened_by()) == 2, WAIT)  # the first process and its worker
        for path in after:
            await get_on_new_connection(process.https_port, path)
    finally:
        await process.stop()
    assert sorted(x["path"] for x in read_json_lines(rotated)) == sorted(before)
    assert sorted(x["path"] for x in read_json_lines(access)) == sorted(after)


async def test_http2_requests_get_one_line_each_with_protocol_http2(tmp_path: Path, up: Upstream) -> None:
    if not curl_available():
        pytest.skip("curl is not installed")
    pki = Pki()
    web = {"http2": True, "routes": [{"path_prefix": "/dead/", "upstream": f"http://{SERVER_IP}:{free_port()}"}]}
    log = {"access": "json", "access_file": "access.log"}
    async with running_edge(tmp_path / "edge", http_upstream=up.port, grpc_upstream=1, pki=pki, log=log, web=web) as edge:
        assert await curl(edge.https_port, pki, tmp_path, "/echo-headers/h2?q=1", "--data-binary", "x" * 500) == ("2 200", ANY)
        version, _ = await curl(edge.https_port, pki, tmp_path, "/dead/h2")
        assert version == "2 502"
        [ok] = await lines_where(access_file(edge), path="/echo-headers/h2?q=1")
        [failed] = await lines_where(access_file(edge), path="/dead/h2")
        port = edge.https_port
    assert set(REQUIRED) <= set(ok)
    assert (ok["protocol"], ok["method"], ok["status"]) == ("HTTP/2", "POST", 200)
    assert ok["host"] == f"{SERVER_NAME}:{port}"
    assert ok["bytes_in"] >= 500 and ok["bytes_out"] > 0 and ok["tls_version"] == "TLSv1.3" and "reason" not in ok
    assert ok["upstream"] == f"http://{SERVER_IP}:{up.port}"
    assert (failed["protocol"], failed["status"], failed["reason"]) == ("HTTP/2", 502, "upstream_unreachable")


async def test_grpc_calls_the_http2_engine_answers_get_a_grpc_line_with_the_status_name(tmp_path: Path, up: Upstream) -> None:
    pki = Pki()
    log = {"access": "json", "access_file": "access.log"}
    async with running_edge(tmp_path, http_upstream=up.port, grpc_upstream=1, pki=pki, log=log, web={"http2": True}) as edge:
        async with pki.grpc_channel(edge.https_port) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await channel.unary_unary(method("Unary"))(b"x", timeout=WAIT)
        assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
        [line] = await lines_where(access_file(edge), protocol="gRPC")
    assert (line["method"], line["path"], line["status"], line["reason"]) == ("POST", method("Unary"), "UNIMPLEMENTED", "no_grpc_upstream")


async def test_grpc_calls_decoded_by_the_http2_engine_get_one_grpc_line_each(tmp_path: Path, up: Upstream, grpc_up: EchoUpstream) -> None:
    """A connection that began with an HTTP/2 request: its gRPC calls are decoded by the edge,
    so each gets a line of its own with the grpc-status name."""
    pki = Pki()
    log = {"access": "json", "access_file": "access.log"}
    web = {"http2": True, "grpc_upstream": f"{SERVER_IP}:{grpc_up.port}"}
    async with running_edge(tmp_path, http_upstream=up.port, grpc_upstream=grpc_up.port, pki=pki, log=log, web=web) as edge:
        client = await H2Client.connect(edge.https_port, pki)
        assert (await client.answer(client.request("/echo-headers/first"))).status == 200
        ok = client.request(method("Unary"), "POST", GRPC_HEADERS, body=grpc_message(b"hi"))
        failing = client.request(method("Fail"), "POST", GRPC_HEADERS, body=grpc_message(b"it"))
        for sid in (ok, failing):
            await client.answer(sid)
        await client.close()
        lines = await lines_where(access_file(edge), protocol="gRPC", count=2)
    assert {line["path"]: line["status"] for line in lines} == {method("Unary"): "OK", method("Fail"): "NOT_FOUND"}
    assert all(line["upstream"] == f"{SERVER_IP}:{grpc_up.port}" and line["bytes_in"] > 0 for line in lines)


class _Maker(LineMaker):
    """Makes the text of an item that has one, fails on the others."""

    def line(self, item: object) -> str:
        if not isinstance(item, tuple):
            raise ValueError("no text")
        return f"{item[0]}\n"


def test_a_line_that_cannot_be_made_is_reported_and_the_others_are_still_written(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "lines.log"
    writer = LineWriter(path)
    writer.maker = _Maker()
    writer.start()
    for line in ("first\n", object(), ("made later",), "last\n"):
        writer.write(line)
    writer.close()
    assert path.read_text() == "first\nmade later\nlast\n"
    assert "edge-proxy: a log line could not be made and is left out: ValueError: no text" in capfd.readouterr().err
