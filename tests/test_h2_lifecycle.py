"""An `http2 = true` listener's life with HTTP/2 clients: certificate swaps under load (new
handshakes get the new certificate, open connections and streams go on), drain (GOAWAY, open
streams finish) and the listener's metrics."""

from __future__ import annotations

import asyncio

from h2.errors import ErrorCodes
from prometheus_client import generate_latest

from proxy import metrics
from tests.support.h2client import H2Client
from tests.support.listeners import https, route, running_listener
from tests.support.probes import metric
from tests.support.web import upstream


async def test_swaps_under_http2_load_fail_no_request_and_new_handshakes_see_the_new_certificate() -> None:
    async with upstream() as web, running_listener(https(route(web.port), http2=True)) as edge:
        stop = asyncio.Event()
        done: list[int] = []
        failed: list[str] = []

        async def keep_asking() -> None:
            client = await H2Client.connect(edge.port, edge.pki)
            try:
                while not stop.is_set():
                    sids = [client.request(f"/echo-headers/{i}") for i in range(5)]
                    for sid in sids:
                        answer = await client.answer(sid)
                        (done if answer.status == 200 else failed).append(answer.status)
            except Exception as e:  # noqa: BLE001 - any failure is what the test counts
                failed.append(repr(e))
            finally:
                await client.close()

        async def fresh_connections() -> None:
            while not stop.is_set():
                try:
                    client = await H2Client.connect(edge.port, edge.pki)
                    answer = await client.answer(client.request("/echo-headers/fresh"))
                    (done if answer.status == 200 else failed).append(answer.status)
                    await client.close()
                except Exception as e:  # noqa: BLE001
                    failed.append(repr(e))

        tasks = [asyncio.create_task(keep_asking()) for _ in range(4)] + [asyncio.create_task(fresh_connections())]
        seen = set()
        for _ in range(8):
            fingerprint = await edge.publish_new_certificate()
            assert await edge.handshake_fingerprint("h2") == fingerprint
            seen.add(fingerprint)
            await asyncio.sleep(0.15)
        stop.set()
        await asyncio.gather(*tasks)
    assert failed == []
    assert len(done) > 50 and len(seen) == 8


async def test_drain_sends_goaway_and_open_streams_finish() -> None:
    async with upstream() as web, running_listener(https(route(web.port), http2=True)) as edge:
        client = await H2Client.connect(edge.port, edge.pki)
        held = client.request("/hold")
        await client.until(lambda: bytes(client.answers[held].body) == b"first\n")
        stopping = asyncio.create_task(edge.listener.stop(10.0))
        await client.until(lambda: client.goaway is not None)
        assert client.goaway == ErrorCodes.NO_ERROR and client.goaway_last_stream == held
        web.release.set()
        answer = await client.answer(held)
        assert answer.status == 200 and bytes(answer.body) == b"first\nlast\n"
        await client.until(lambda: False)  # the edge closes once the stream is done
        assert client.closed
        await stopping


async def test_requests_handshakes_and_latency_are_counted_by_listener() -> None:
    name = "h2metrics"
    async with upstream() as web, running_listener(https(route(web.port, "/echo"), name=name, http2=True)) as edge:
        client = await H2Client.connect(edge.port, edge.pki)
        for path in ("/echo-headers", "/echo-headers", "/missing"):
            await client.answer(client.request(path))
        assert edge.listener.open_connections == 1
        await client.close()
        assert edge.listener.shared is not None
        edge.listener.shared.tally.flush()
        text = generate_latest(metrics.REGISTRY).decode()
    assert metric(text, "edge_requests_total", listener=name, code_class="2xx") == 2
    assert metric(text, "edge_requests_total", listener=name, code_class="4xx") == 1
    assert metric(text, "edge_tls_handshakes_total", listener=name) == 1
    assert metric(text, "edge_upstream_latency_seconds_count", listener=name) == 2
