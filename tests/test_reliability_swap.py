"""Certificate swaps under load (issue 6): HTTPS keep-alive clients, HTTPS clients with a new TLS
connection per request and gRPC unary loops run through the
whole Edge while a new certificate arrives every 250 ms, by directory drop and by API upload in
turn. Nothing may fail, and new handshakes must see the certificates from both paths on every
listener, never anything that was not published."""

from __future__ import annotations

import asyncio
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from proxy.certstore.store import Serving
from proxy.tlsmaterial import TlsObjects
from tests.support.config import one_port
from tests.support.edge import RunningEdge, copy_files, drop_files, running_edge, upload_body
from tests.support.grpc_echo import running_upstream
from tests.support.load import Tally, grpc_new_channel_loop, grpc_unary_loop, handshake_loop, keep_alive_client, new_connection_client
from tests.support.pki import Leaf, Pki
from tests.support.probes import eventually
from tests.support.web import upstream

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

LOAD_SECONDS = 10.5
SWAP_INTERVAL = 0.25


async def swap_in_turn(running: RunningEdge, leaves: list[Leaf]) -> Counter[str]:
    """One new leaf every SWAP_INTERVAL: an API upload, then a directory drop, and so on. Drops
    alternate between files renamed into place one by one (`mv`) and files rewritten in place
    (`cp`, which a reader can catch half-written). Returns how many swaps each way was asked for."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    asked: Counter[str] = Counter()
    for i, leaf in enumerate(leaves):
        await asyncio.sleep(max(0.0, start + i * SWAP_INTERVAL - loop.time()))
        if i % 2 == 0:
            status, body = await running.admin.upload(upload_body(running.pki.material(leaf)))
            assert status == 200, body
            asked["upload"] += 1
        elif i % 4 == 1:
            await asyncio.to_thread(drop_files, running.cert_dir, running.pki.material(leaf))
            asked["files renamed in"] += 1
        else:
            await asyncio.to_thread(copy_files, running.cert_dir, running.pki.material(leaf))
            asked["files copied over"] += 1
    return asked


@pytest.mark.parametrize("grpc_on", ["grpc listener", "https port"])
async def test_swaps_every_250_ms_under_load_fail_no_request_and_no_handshake(tmp_path: Path, grpc_on: str) -> None:
    """`grpc_on`: where the gRPC load goes, the gRPC listener's own port or the HTTPS port of an
    https listener with `grpc_upstream` (one port: HTTP/1.1 and gRPC side by side on it)."""
    pki = Pki()
    leaves = [pki.leaf() for _ in range(int(LOAD_SECONDS / SWAP_INTERVAL))]
    async with (
        upstream() as http_upstream,
        running_upstream() as grpc_upstream,
        running_edge(
            tmp_path,
            pki=pki,
            http_upstream=http_upstream.port,
            grpc_upstream=grpc_upstream.port,
            web=one_port(grpc_upstream.port) if grpc_on == "https port" else None,
        ) as running,
        AsyncExitStack() as channels,
    ):
        grpc_port = running.https_port if grpc_on == "https port" else running.grpc_port
        published = {running.serving_fingerprint: running.edge.store.current.snapshot.source}

        def record(serving: Serving[TlsObjects]) -> None:
            published[serving.snapshot.fingerprint] = serving.snapshot.source

        running.edge.store.subscribe(record)
        failed_handshakes_before = await running.metric("edge_tls_handshake_failures_total", listener="web")
        rejections_before = await running.metric("edge_certificate_rejections_total", source="directory")
        keep_alive = [Tally(f"https keep-alive {i}") for i in range(3)]
        per_request = [Tally(f"https new connection {i}") for i in range(2)]
        grpc_calls: list[Tally] = []
        probes = {"web": Tally("https handshakes"), "grpc": Tally("grpc handshakes")}
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as load:
            for tally in keep_alive:
                load.create_task(keep_alive_client(running.https_port, pki, stop, tally))
            for tally in per_request:
                load.create_task(new_connection_client(running.https_port, pki, stop, tally))
            # Two call loops share one long-lived channel; a third makes a new channel per call.
            channel = await channels.enter_async_context(pki.grpc_channel(grpc_port))
            grpc_calls += [Tally(f"grpc unary {i}") for i in range(2)] + [Tally("grpc new channel per call")]
            load.create_task(grpc_unary_loop(channel, stop, grpc_calls[0]))
            load.create_task(grpc_unary_loop(channel, stop, grpc_calls[1]))
            load.create_task(grpc_new_channel_loop(grpc_port, pki, stop, grpc_calls[2]))
            load.create_task(handshake_loop(grpc_port, pki, stop, probes["grpc"], alpn="h2"))
            load.create_task(handshake_loop(running.https_port, pki, stop, probes["web"], alpn="http/1.1"))
            try:
                asked = await swap_in_turn(running, leaves)
                # The last drop settles, then the load runs on a moment with the final leaf.
                await eventually(lambda: running.serving_fingerprint == leaves[-1].fingerprint, timeout=10)
                await asyncio.sleep(0.5)
            finally:
                stop.set()

        tallies = [*keep_alive, *per_request, *grpc_calls, *probes.values()]
        failures = [failure for tally in tallies for failure in tally.failures]
        assert failures == [], f"{len(failures)} failed: {failures[:20]}"
        assert all(tally.ok > 0 for tally in tallies), {tally.name: tally.ok for tally in tallies}
        assert await running.metric("edge_tls_handshake_failures_total", listener="web") == failed_handshakes_before
        # A drop caught half-written is waited for, never reported: every drop here was good.
        assert await running.metric("edge_certificate_rejections_total", source="directory") == rejections_before
        assert (await running.admin.certificate())["last_error"] is None

        # Swaps never close open connections: each keep-alive client kept its first one.
        assert [tally.connections for tally in keep_alive] == [1] * len(keep_alive)

        # Every leaf a new handshake was shown was published as a whole (never a mix, never stale
        # material), and new handshakes saw the certificates of both paths on every listener.
        for shown in [*(probe.fingerprints for probe in probes.values()), *(tally.fingerprints for tally in per_request)]:
            assert set(shown) <= set(published), "a handshake was shown a leaf that was never published"
        for listener, probe in probes.items():
            sources = Counter(published[fingerprint] for fingerprint in probe.fingerprints)
            assert sources["directory"] > 0 and sources["upload"] > 0, (listener, sources, asked)
        print(
            f"\nswaps asked {dict(asked)}, published {len(published) - 1};",
            {tally.name: tally.ok for tally in tallies},
            {listener: len(probe.fingerprints) for listener, probe in probes.items()},
        )
