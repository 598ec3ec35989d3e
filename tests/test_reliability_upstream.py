"""Upstream faults behind the whole Edge (issue 6): an upstream restarting under load costs 502s
(gRPC: UNAVAILABLE) only while it is gone, and the edge serves again once it is back, without a
restart of its own; an upstream that accepts and never answers gets 504 at `upstream_timeout`."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import grpc
import pytest

from tests.support.edge import running_edge
from tests.support.grpc_echo import GRPC_UNARY, EchoUpstream
from tests.support.load import new_connection_request
from tests.support.pki import SERVER_IP, Pki
from tests.support.probes import free_port
from tests.support.web import RestartableUpstream, SilentUpstream

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

UPSTREAM_TIMEOUT = 1.0
EARLY = 0.1  # a timer may fire this much before its deadline (event loop clock granularity)
MARGIN = 6.0
PHASE = 1.5  # seconds of load before the upstream stops, while it is gone, and after it is back
# The client's channel waits before reconnecting after its connection to the edge was refused
# (grpc's backoff, up to some seconds); calls fail fast with UNAVAILABLE meanwhile.
GRPC_RECOVERY = 15.0


@dataclass
class Outcome:
    started: float
    ended: float
    result: str  # "200", "502", "OK", "UNAVAILABLE", ... or the exception that ended the request


@dataclass
class Timeline:
    """Every request of a load run, and when the upstream went away and came back."""

    outcomes: list[Outcome] = field(default_factory=list)
    gone: float = float("inf")
    back: float = float("inf")

    async def record(self, attempt: Callable[[], Awaitable[str]]) -> None:
        started = time.monotonic()
        try:
            result = await attempt()
        except Exception as e:  # noqa: BLE001 - every way a request can end is an outcome to judge
            result = repr(e)
        self.outcomes.append(Outcome(started, time.monotonic(), result))

    def phases(self, recovered: float) -> tuple[set[str], set[str], set[str]]:
        """The results of requests that ended before the upstream went away, of those that ran
        from then until `recovered`, and of those that started after."""
        before = {o.result for o in self.outcomes if o.ended < self.gone}
        between = {o.result for o in self.outcomes if o.ended >= self.gone and o.started < recovered}
        after = {o.result for o in self.outcomes if o.started >= recovered}
        return before, between, after

    def first_ok_after(self, moment: float) -> float:
        return min(o.started for o in self.outcomes if o.started > moment and o.result in ("200", "OK"))

    def summary(self) -> Counter[str]:
        return Counter(o.result for o in self.outcomes)


async def https_keep_alive_load(port: int, pki: Pki, stop: asyncio.Event, timeline: Timeline) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1, ssl=pki.client_context())) as session:

        async def get() -> str:
            async with session.get(f"https://{SERVER_IP}:{port}/load", timeout=aiohttp.ClientTimeout(total=10)) as response:
                await response.read()
                return str(response.status)

        while not stop.is_set():
            await timeline.record(get)
            await asyncio.sleep(0.01)


async def https_new_connection_load(port: int, pki: Pki, stop: asyncio.Event, timeline: Timeline) -> None:
    async def get() -> str:
        status, _ = await new_connection_request(port, pki, "/load")
        return str(status)

    while not stop.is_set():
        await timeline.record(get)
        await asyncio.sleep(0.01)


async def grpc_load(port: int, pki: Pki, stop: asyncio.Event, timeline: Timeline) -> None:
    async with pki.grpc_channel(port) as channel:
        call = channel.unary_unary(GRPC_UNARY)

        async def unary() -> str:
            try:
                answer = await call(b"ping", timeout=10)
            except grpc.aio.AioRpcError as e:
                return str(e.code().name)
            return "OK" if answer == b"ping" else f"wrong answer {answer!r}"

        while not stop.is_set():
            await timeline.record(unary)
            await asyncio.sleep(0.01)


async def test_an_upstream_restart_under_load_costs_502_only_while_it_is_gone_and_the_edge_recovers(tmp_path: Path) -> None:
    pki = Pki()
    http = RestartableUpstream()
    await http.start()
    grpc_upstream = EchoUpstream()
    await grpc_upstream.start()
    server = {"connect_timeout": 1, "upstream_timeout": 5}
    try:
        async with running_edge(tmp_path, pki=pki, http_upstream=http.port, grpc_upstream=grpc_upstream.port, server=server) as running:
            https, grpcs = Timeline(), Timeline()
            timelines = [https, grpcs]
            stop = asyncio.Event()
            async with asyncio.TaskGroup() as load:
                for _ in range(2):
                    load.create_task(https_keep_alive_load(running.https_port, pki, stop, https))
                    load.create_task(https_new_connection_load(running.https_port, pki, stop, https))
                load.create_task(grpc_load(running.grpc_port, pki, stop, grpcs))
                try:
                    await asyncio.sleep(PHASE)
                    gone = time.monotonic()
                    await http.stop()
                    await grpc_upstream.stop()
                    await asyncio.sleep(PHASE)
                    await http.start()  # the same ports: nothing in the edge is told
                    grpc_upstream = EchoUpstream(port=grpc_upstream.port)
                    await grpc_upstream.start()
                    back = time.monotonic()
                    for timeline in timelines:
                        timeline.gone, timeline.back = gone, back
                    await asyncio.sleep(PHASE)
                    await _wait_for_grpc_recovery(grpcs)
                finally:
                    stop.set()

            print(f"\nhttps: {https.summary()}, grpc: {grpcs.summary()}")
            # HTTPS: a 502 only while the upstream was gone, a 200 for everything else, never a
            # dropped connection; and the gap was really hit.
            before, during, after = https.phases(https.back)
            assert (before, after) == ({"200"}, {"200"})
            assert "502" in during and during <= {"200", "502"}
            # gRPC: UNAVAILABLE from the moment the upstream went away until the listener has
            # reconnected; OK before, and OK for every call after the first OK after the gap. A
            # call in flight at the moment the upstream stops may end CANCELLED, as the stopping
            # upstream cancels it (a client connected to it directly sees the same).
            before, until_recovered, after = grpcs.phases(grpcs.first_ok_after(grpcs.back))
            assert (before, after) == ({"OK"}, {"OK"})
            assert "UNAVAILABLE" in until_recovered
            assert until_recovered <= {"OK", "UNAVAILABLE", "CANCELLED"}
            # The same edge serves afterwards, on new connections too.
            for _ in range(5):
                assert (await new_connection_request(running.https_port, pki, "/after"))[0] == 200
    finally:
        await http.stop()
        await grpc_upstream.stop()


async def _wait_for_grpc_recovery(timeline: Timeline) -> None:
    deadline = time.monotonic() + GRPC_RECOVERY
    while not any(o.started > timeline.back and o.result == "OK" for o in timeline.outcomes):
        assert time.monotonic() < deadline, "the gRPC listener never reached the restarted upstream"
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # and some calls after the first success


async def test_an_upstream_that_accepts_and_never_answers_gets_504_at_upstream_timeout(tmp_path: Path) -> None:
    pki = Pki()
    async with (
        SilentUpstream() as silent,
        running_edge(
            tmp_path, pki=pki, http_upstream=silent.port, grpc_upstream=free_port(), server={"upstream_timeout": UPSTREAM_TIMEOUT}
        ) as running,
    ):
        connector = aiohttp.TCPConnector(limit=1, ssl=pki.client_context())
        async with aiohttp.ClientSession(connector=connector) as session:
            for attempt in range(2):  # the second on the same kept-alive client connection
                started = time.monotonic()
                async with session.get(f"https://{SERVER_IP}:{running.https_port}/hang/{attempt}") as response:
                    body = await response.text()
                waited = time.monotonic() - started
                assert response.status == 504, body
                assert UPSTREAM_TIMEOUT - EARLY <= waited <= UPSTREAM_TIMEOUT + MARGIN, waited
                assert 0 < len(body) < 200
        assert silent.connections == 2
        # The edge gave up on each upstream connection too: nothing is left waiting for nobody.
        deadline = time.monotonic() + MARGIN
        while silent.closed_by_edge < 2:
            assert time.monotonic() < deadline, "the edge left its upstream connections open"
            await asyncio.sleep(0.05)
