"""The gRPC relay's TLS and connection life: TLS policy both ways, certificate swaps under open
streams, max_connection_age, idle and handshake timeouts, drain, a TLS upstream, and an upstream
that never answers."""

from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path

import grpc
import pytest

from proxy.h2relay.frames import CLIENT_PREFACE, GOAWAY, SETTINGS, FrameScanner
from tests.support.grpc_echo import EchoUpstream, OpenStreams, method, running_upstream, server_credentials
from tests.support.listeners import GrpcServing, RunningListener, running_grpc_listener
from tests.support.pki import Pki
from tests.support.probes import WAIT


def client_context(edge: RunningListener, alpn: str = "h2") -> ssl.SSLContext:
    context = edge.pki.client_context(alpn)
    context.check_hostname = False  # connected by address; the chain is still verified
    return context


async def test_tls13_only_listener_refuses_a_tls12_client(serving: GrpcServing) -> None:
    async with running_upstream() as upstream, serving(upstream.port, min_version="1.3") as edge:
        old = client_context(edge)
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        # Refused in the handshake: an alert (SSLError) or, when asyncio aborts first, a reset.
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            await asyncio.wait_for(asyncio.open_connection("127.0.0.1", edge.port, ssl=old), WAIT)
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", edge.port, ssl=client_context(edge)), WAIT)
        ssl_object = writer.get_extra_info("ssl_object")
        assert ssl_object.version() == "TLSv1.3"
        assert ssl_object.selected_alpn_protocol() == "h2"
        writer.close()
        async with edge.channel() as channel:  # and a grpc client, which offers 1.2 and 1.3, is served
            assert await channel.unary_unary(method("Unary"))(b"x", timeout=WAIT) == b"x"


async def test_tls12_client_gets_a_modern_aead_suite() -> None:
    async with running_upstream() as upstream, running_grpc_listener(upstream.port) as edge:
        context = client_context(edge)
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", edge.port, ssl=context), WAIT)
        name, version, _ = writer.get_extra_info("ssl_object").cipher()
        writer.close()
    assert version == "TLSv1.2"
    assert name.startswith("ECDHE-") and ("GCM" in name or "CHACHA20" in name)


async def test_client_that_does_not_offer_h2_is_closed() -> None:
    async with running_upstream() as upstream, running_grpc_listener(upstream.port) as edge:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", edge.port, ssl=client_context(edge, "http/1.1")), WAIT)
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() is None
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await asyncio.wait_for(reader.read(), WAIT) == b""  # closed, nothing relayed
        writer.close()


async def test_max_connection_age_makes_an_idle_channel_reconnect_and_see_the_new_certificate(serving: GrpcServing) -> None:
    async with (
        running_upstream() as upstream,
        serving(upstream.port, max_connection_age=0.3) as edge,
        edge.channel() as channel,
    ):
        unary = channel.unary_unary(method("Unary"))
        assert await unary(b"first", timeout=WAIT) == b"first"
        new_fingerprint = await edge.publish_new_certificate()
        reads_before = edge.certificate_reads
        await asyncio.sleep(0.6)  # past the age: the edge sent a GOAWAY, the idle client left
        assert await unary(b"again", timeout=WAIT) == b"again"
        # The channel made a new handshake, and that handshake was given the new certificate.
        assert edge.certificate_reads == reads_before + 1
        assert edge.reader.handed_out[-1] == new_fingerprint


async def test_streams_outlive_max_connection_age_and_the_channel_reconnects() -> None:
    # The GOAWAY goes out while both streams are open: they must still finish, relayed to the end,
    # and the same channel's next call goes out on a new connection.
    async with (
        running_upstream() as upstream,
        running_grpc_listener(upstream.port, max_connection_age=0.3) as edge,
        edge.channel() as channel,
    ):
        streams = await OpenStreams.open(channel, upstream, WAIT)
        assert await streams.exchange(b"early") == (b"early", b"EARLY")
        reads_before = edge.certificate_reads
        await asyncio.sleep(0.6)  # past the age
        for i in range(2, 50):  # the old connection keeps relaying, frame for frame
            assert await streams.exchange(b"late-%d" % i) == (b"late-%d" % i, b"LATE-%d" % i)
        assert await channel.unary_unary(method("Unary"))(b"new", timeout=WAIT) == b"new"
        assert edge.certificate_reads == reads_before + 1  # that call went over a new connection
        await streams.finish()
        assert await streams.codes() == (grpc.StatusCode.OK, grpc.StatusCode.OK)


async def read_frames_until_closed(reader: asyncio.StreamReader) -> list[int]:
    """The types of the frames the edge sends until it closes the connection."""
    kinds: list[int] = []
    scanner = FrameScanner(lambda kind, flags, stream: kinds.append(kind))
    while chunk := await asyncio.wait_for(reader.read(65536), WAIT):
        scanner.feed(chunk)
    assert scanner.at_boundary  # the connection ends between frames
    return kinds


async def test_idle_connection_gets_a_goaway_and_is_closed() -> None:
    async with (
        running_upstream() as upstream,
        running_grpc_listener(upstream.port, idle_timeout=0.2) as edge,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.port, ssl=client_context(edge))
        writer.write(CLIENT_PREFACE + bytes([0, 0, 0, SETTINGS, 0, 0, 0, 0, 0]))
        started = time.monotonic()
        kinds = await read_frames_until_closed(reader)
        writer.close()
    assert kinds[0] == SETTINGS  # the upstream's, relayed
    assert kinds[-1] == GOAWAY  # ours, then the close
    assert time.monotonic() - started < WAIT


async def test_silent_client_is_dropped_at_handshake_timeout() -> None:
    async with running_upstream() as upstream, running_grpc_listener(upstream.port, handshake_timeout=0.2) as edge:
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
        # No ClientHello: the edge gives up on the handshake and closes.
        assert await asyncio.wait_for(reader.read(), WAIT) == b""
        writer.close()


async def test_drain_lets_open_streams_finish_and_refuses_new_connections(serving: GrpcServing) -> None:
    async with running_upstream() as upstream, serving(upstream.port) as edge, edge.channel() as channel:
        ticker = channel.unary_stream(method("Ticker"))(b"", timeout=WAIT)
        await upstream.ticks.put(b"1")
        assert await ticker.read() == b"1"
        port = edge.port
        stopping = asyncio.ensure_future(edge.listener.stop(WAIT))
        await asyncio.sleep(0.2)
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)
        await upstream.ticks.put(b"2")  # the stream opened before the drain still answers
        assert await ticker.read() == b"2"
        await upstream.ticks.put(None)
        assert await ticker.code() == grpc.StatusCode.OK
        await asyncio.wait_for(stopping, WAIT)  # and the drain ends once it has finished


async def test_client_going_away_cancels_the_upstream_call() -> None:
    async with running_upstream() as upstream, running_grpc_listener(upstream.port) as edge:
        channel = edge.channel()
        channel.unary_unary(method("Hang"))(b"")
        while not upstream.deadlines:
            await asyncio.sleep(0.01)
        await channel.close()  # the client's connection ends; the edge closes its upstream one
        await asyncio.wait_for(upstream.cancelled.wait(), WAIT)


async def test_upstream_going_away_mid_stream_ends_the_call_unavailable() -> None:
    async with running_upstream() as upstream, running_grpc_listener(upstream.port) as edge, edge.channel() as channel:
        ticker = channel.unary_stream(method("Ticker"))(b"", timeout=WAIT)
        await upstream.ticks.put(b"1")
        assert await ticker.read() == b"1"
        await upstream.stop()
        with pytest.raises(grpc.aio.AioRpcError):
            await ticker.read()
        assert await ticker.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)


async def test_tls_upstream_is_verified_against_upstream_ca(tmp_path: Path) -> None:
    upstream_pki = Pki("Upstream")
    async with running_upstream(credentials=server_credentials(upstream_pki.leaf())) as upstream:
        tls_upstream = f"grpcs://127.0.0.1:{upstream.port}"
        trusted = str(upstream_pki.write_ca(tmp_path / "ca.pem"))
        async with running_grpc_listener(tls_upstream, upstream_ca=trusted) as edge, edge.channel() as channel:
            call = channel.unary_unary(method("Unary"))(b"over tls", metadata=(("x-k", "v"),), timeout=WAIT)
            assert await call == b"over tls"
            assert tuple(await call.initial_metadata()) == (("x-k", "v"),)
        other = str(Pki("Other").write_ca(tmp_path / "other.pem"))
        async with running_grpc_listener(tls_upstream, upstream_ca=other) as edge, edge.channel() as channel:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await channel.unary_unary(method("Unary"))(b"x", timeout=WAIT)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            assert raised.value.details() == "edge-proxy: the upstream is unavailable"


async def test_upstream_that_never_answers_gives_unavailable_after_connect_timeout() -> None:
    # A TCP server that accepts and says nothing: the TLS handshake to it never completes.
    silent = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        async with running_grpc_listener(f"grpcs://127.0.0.1:{port}", connect_timeout=0.3) as edge, edge.channel() as channel:
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await channel.unary_unary(method("Unary"))(b"x", timeout=WAIT)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            assert time.monotonic() - started < WAIT / 2
    finally:
        silent.close()


async def test_plaintext_echo_upstream_is_h2c() -> None:
    # The upstream in most tests is a plain grpcio server: prior-knowledge HTTP/2 over TCP.
    upstream = EchoUpstream()
    await upstream.start()
    try:
        async with running_grpc_listener(upstream.port) as edge, edge.channel() as channel:
            assert await channel.unary_unary(method("Unary"))(b"h2c", timeout=WAIT) == b"h2c"
    finally:
        await upstream.stop()


# The relay moves bytes without reading them, so these use a raw TCP upstream; 0xff bytes read
# as 16 MiB frames, the worst case for nothing but flow control.
CHUNK = b"\xff" * 65536
# Far more than the kernel buffers on a loopback path hold (a few MiB each way): a relay that
# kept reading while the far side did not would take all of it.
FLOOD = 256 * 1024 * 1024


async def push_until_held_back(writer: asyncio.StreamWriter) -> int:
    """Write until the writes stop draining for half a second; return how much was taken."""
    taken = 0
    while taken < FLOOD:
        writer.write(CHUNK)
        try:
            await asyncio.wait_for(writer.drain(), 0.5)
        except TimeoutError:
            return taken
        taken += len(CHUNK)
    return taken


async def read_exactly(reader: asyncio.StreamReader, size: int) -> bytes:
    return await asyncio.wait_for(reader.readexactly(size), WAIT)


async def test_a_client_that_does_not_read_holds_back_the_upstream(serving: GrpcServing) -> None:
    pushed = asyncio.Queue[int]()

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await pushed.put(await push_until_held_back(writer))
        await asyncio.sleep(WAIT)

    upstream = await asyncio.start_server(flood, "127.0.0.1", 0)
    try:
        async with serving(upstream.sockets[0].getsockname()[1]) as edge:
            reader, writer = await asyncio.open_connection("127.0.0.1", edge.port, ssl=client_context(edge))
            taken = await asyncio.wait_for(pushed.get(), WAIT)
            assert taken < FLOOD // 4  # the edge stopped reading from the upstream
            # Once the client reads, everything the upstream sent arrives (plus the chunk that
            # was waiting when it was held back).
            assert await read_exactly(reader, taken) == CHUNK * (taken // len(CHUNK))
            writer.close()
    finally:
        upstream.close()


async def test_an_upstream_that_does_not_read_holds_back_the_client(serving: GrpcServing) -> None:
    accepted = asyncio.Queue[asyncio.StreamReader]()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put(reader)
        await asyncio.sleep(WAIT)

    upstream = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        async with serving(upstream.sockets[0].getsockname()[1]) as edge:
            _, writer = await asyncio.open_connection("127.0.0.1", edge.port, ssl=client_context(edge))
            taken = await push_until_held_back(writer)
            assert taken < FLOOD // 4  # the edge stopped reading from the client
            upstream_reader = await asyncio.wait_for(accepted.get(), WAIT)
            assert await read_exactly(upstream_reader, taken) == CHUNK * (taken // len(CHUNK))
            writer.close()
    finally:
        upstream.close()


async def test_upstreams_own_goaway_reaches_the_client_and_calls_carry_on() -> None:
    # A grpcio upstream with a connection age of its own sends GOAWAYs too: relayed as they are,
    # alongside the edge's, the client moves to new connections without a failed call.
    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    handler = grpc.method_handlers_generic_handler("echo.Echo", {"Unary": grpc.unary_unary_rpc_method_handler(echo)})
    server = grpc.aio.server(handlers=(handler,), options=[("grpc.max_connection_age_ms", 200), ("grpc.max_connection_age_grace_ms", 5000)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with running_grpc_listener(port, max_connection_age=0.3) as edge, edge.channel() as channel:
            unary = channel.unary_unary(method("Unary"))
            reads_before = edge.certificate_reads
            for i in range(12):
                assert await unary(b"%d" % i, timeout=WAIT) == b"%d" % i
                await asyncio.sleep(0.1)
            assert edge.certificate_reads > reads_before + 1  # it reconnected along the way
    finally:
        await server.stop(0)
