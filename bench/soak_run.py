"""The soak (issue 6): `edge-proxy run` under wrk and gRPC load for SOAK_SECONDS while its
certificate is swapped every SOAK_SWAP_INTERVAL seconds, by API upload and by directory drop in
turn. Prints requests, errors, swaps and the edge's RSS at start and end; exits 1 on any error.

Everything listens on 127.0.0.1; the load is bounded in time. Only the processes started here are
stopped, by the handles held here. Run through bench/soak.sh.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import trustme
from ports import free_ports

ROOT = Path(__file__).resolve().parent.parent
SECONDS = int(os.environ.get("SOAK_SECONDS", "300"))
SWAP_INTERVAL = float(os.environ.get("SOAK_SWAP_INTERVAL", "1.0"))
GRPC_LOOPS = int(os.environ.get("SOAK_GRPC_LOOPS", "4"))
WRK_CONNECTIONS = int(os.environ.get("SOAK_WRK_CONNECTIONS", "32"))
GRPC_METHOD = "/demo.Echo/Say"  # the demo upstream echoes every method
PROGRESS_EVERY = 30.0
# Before its threads start, each wrk process opens one plain TCP connection to check the address
# and closes it (wrk.lua's lookup): the edge rightly counts those as failed TLS handshakes.
WRK_PROBES = 2


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+)", status, re.MULTILINE).group(1)) / 1024  # type: ignore[union-attr]


@dataclass
class Ports:
    http_upstream: int
    grpc_upstream: int
    https: int
    grpc: int
    admin: int


def edge_config(work: Path, ports: Ports) -> Path:
    path = work / "edge.toml"
    path.write_text(f"""
[server]
drain_seconds = 2

[tls]
cert_dir = "certs"
state_dir = "state"
server_name = "localhost"
ip_addresses = ["127.0.0.1"]

[admin]
listen = "127.0.0.1:{ports.admin}"
token_file = "state/admin.token"

[[listeners]]
name = "web"
protocol = "https"
listen = "127.0.0.1:{ports.https}"
upstream = "http://127.0.0.1:{ports.http_upstream}"

[[listeners]]
name = "grpc"
protocol = "grpc"
listen = "127.0.0.1:{ports.grpc}"
upstream = "127.0.0.1:{ports.grpc_upstream}"
""")
    return path


class Pki:
    """One CA; every leaf covers localhost and 127.0.0.1, so gRPC clients verify each one."""

    def __init__(self) -> None:
        self.ca = trustme.CA()

    def material(self) -> dict[str, str]:
        leaf = self.ca.issue_cert("localhost", "127.0.0.1")
        return {
            "certificate": "".join(p.bytes().decode() for p in leaf.cert_chain_pems),
            "key": leaf.private_key_pem.bytes().decode(),
            "ca": self.ca.cert_pem.bytes().decode(),
        }


def drop(cert_dir: Path, material: dict[str, str]) -> None:
    """Files renamed into place one by one, the key first: how an operator's script drops them."""
    for name, text in (("tls.key", material["key"]), ("tls.crt", material["certificate"]), ("ca.crt", material["ca"])):
        temp = cert_dir / f".{name}.soak"
        temp.write_text(text)
        os.replace(temp, cert_dir / name)


@dataclass
class Tally:
    calls: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    swaps_asked: Counter[str] = field(default_factory=Counter)
    swap_errors: list[str] = field(default_factory=list)


async def grpc_loop(port: int, pki: Pki, deadline: float, tally: Tally, *, new_channel_each_call: bool) -> None:
    credentials = grpc.ssl_channel_credentials(pki.ca.cert_pem.bytes())
    options = [("grpc.use_local_subchannel_pool", 1)]  # a connection of its own, not a shared one
    channel = grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials, options=options)
    try:
        while time.monotonic() < deadline:
            if new_channel_each_call:
                await channel.close()
                channel = grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials, options=options)
            try:
                answer = await channel.unary_unary(GRPC_METHOD)(b"soak", timeout=10)
                if answer != b"soak":
                    tally.errors["wrong answer"] += 1
                tally.calls += 1
            except grpc.aio.AioRpcError as e:
                tally.calls += 1
                tally.errors[e.code().name] += 1
    finally:
        await channel.close()


async def swapper(work: Path, ports: Ports, pki: Pki, token: str, deadline: float, tally: Tally) -> None:
    """A new certificate every SWAP_INTERVAL: an upload, then a drop, and so on."""
    headers = {"Authorization": f"Bearer {token}"}
    next_at = time.monotonic()
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            material = pki.material()
            if sum(tally.swaps_asked.values()) % 2 == 0:
                url = f"http://127.0.0.1:{ports.admin}/api/v1/certificate"
                async with session.post(url, json=material, headers=headers) as response:
                    if response.status != 200:
                        tally.swap_errors.append(f"upload: {response.status} {await response.text()}")
                tally.swaps_asked["upload"] += 1
            else:
                await asyncio.to_thread(drop, work / "certs", material)
                tally.swaps_asked["directory drop"] += 1
            next_at += SWAP_INTERVAL
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def admin_get(ports: Ports, path: str, token: str) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{ports.admin}{path}", headers={"Authorization": f"Bearer {token}"}) as response,
    ):
        return await response.text()


def metric_sum(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def parse_wrk(output: str) -> tuple[int, int, int]:
    """(requests, non-2xx/3xx responses, socket errors) from wrk's report."""
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    errors = sum(int(n) for n in socket_errors.groups()) if socket_errors else 0
    return requests, int(non_2xx.group(1)) if non_2xx else 0, errors


async def wrk(port: int, connections: int, threads: int, extra: list[str]) -> str:
    process = await asyncio.create_subprocess_exec(
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{SECONDS}s", "--timeout", "10s", *extra,
        f"https://127.0.0.1:{port}/soak",
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await process.communicate()
    return output.decode()


async def progress(edge_pid: int, started: float, deadline: float, tally: Tally) -> None:
    while time.monotonic() < deadline:
        await asyncio.sleep(min(PROGRESS_EVERY, max(0.0, deadline - time.monotonic())))
        swaps = sum(tally.swaps_asked.values())
        print(
            f"  {time.monotonic() - started:5.0f} s: edge RSS {rss_mib(edge_pid):.1f} MiB, swaps asked {swaps}, "
            f"gRPC calls {tally.calls}, gRPC errors {sum(tally.errors.values())}",
            flush=True,
        )


@dataclass
class EdgeState:
    """What the edge reports about itself at one moment."""

    certificate: dict[str, Any]
    metrics: str
    rss_mib: float

    @classmethod
    async def read(cls, ports: Ports, token: str, pid: int) -> EdgeState:
        certificate = json.loads(await admin_get(ports, "/api/v1/certificate", token))
        return cls(certificate, await admin_get(ports, "/metrics", ""), rss_mib(pid))

    def counted(self, since: EdgeState, name: str, **labels: str) -> float:
        return metric_sum(self.metrics, name, **labels) - metric_sum(since.metrics, name, **labels)


async def soak(work: Path, ports: Ports, edge: subprocess.Popen[bytes], pki: Pki) -> int:
    token = (work / "state" / "admin.token").read_text().strip()
    start = await EdgeState.read(ports, token, edge.pid)
    print(f"edge pid {edge.pid}: RSS at start {start.rss_mib:.1f} MiB, certificate version {start.certificate['version']}", flush=True)
    print(f"soaking for {SECONDS} s: wrk keep-alive ({WRK_CONNECTIONS} connections), wrk new connection per request (4),", flush=True)
    print(
        f"  {GRPC_LOOPS} gRPC unary loops (one a new channel per call), a new certificate every {SWAP_INTERVAL:g} s",
        flush=True,
    )
    started = time.monotonic()
    deadline = started + SECONDS
    tally = Tally()
    keep_alive = asyncio.create_task(wrk(ports.https, WRK_CONNECTIONS, 2, []))
    per_request = asyncio.create_task(wrk(ports.https, 4, 1, ["-H", "Connection: close"]))
    async with asyncio.TaskGroup() as group:
        for n in range(GRPC_LOOPS):
            group.create_task(grpc_loop(ports.grpc, pki, deadline, tally, new_channel_each_call=n == 0))
        group.create_task(swapper(work, ports, pki, token, deadline, tally))
        group.create_task(progress(edge.pid, started, deadline, tally))
    wrk_outputs = await keep_alive, await per_request
    await asyncio.sleep(2.0)  # the last drop settles and is served
    end = await EdgeState.read(ports, token, edge.pid)
    return report(edge.pid, start, end, wrk_outputs, tally)


def report(pid: int, start: EdgeState, end: EdgeState, wrk_outputs: tuple[str, str], tally: Tally) -> int:
    """Print the outcome; 1 when anything failed, else 0."""
    (ka_requests, ka_bad, ka_socket), (pr_requests, pr_bad, pr_socket) = map(parse_wrk, wrk_outputs)
    https_errors = ka_bad + ka_socket + pr_bad + pr_socket
    grpc_errors = sum(tally.errors.values())
    rejected = end.counted(start, "edge_certificate_rejections_total")
    edge_errors = end.counted(start, "edge_errors_total")
    failed_https = end.counted(start, "edge_tls_handshake_failures_total", listener="web")
    failed_grpc = end.counted(start, "edge_tls_handshake_failures_total", listener="grpc")
    first, last = start.certificate["version"], end.certificate["version"]
    asked = ", ".join(f"{n} {how}" for how, n in tally.swaps_asked.items())
    print()
    print(f"soak: {SECONDS} s against edge-proxy pid {pid} on 127.0.0.1")
    print(f"requests: https keep-alive {ka_requests}, https new connection {pr_requests}, grpc {tally.calls}")
    print(
        f"errors:   https {https_errors} (keep-alive: {ka_bad} non-2xx, {ka_socket} socket; "
        f"new connection: {pr_bad} non-2xx, {pr_socket} socket), grpc {grpc_errors}{f' {dict(tally.errors)}' if grpc_errors else ''}"
    )
    print(
        f"          counted by the edge: errors {edge_errors:.0f}, failed TLS handshakes {failed_https:.0f} https "
        f"(wrk's {WRK_PROBES} address checks among them), {failed_grpc:.0f} grpc"
    )
    print(f"swaps:    asked {sum(tally.swaps_asked.values())} ({asked}), served {last - first} (version {first} -> {last}),")
    print(f"          rejected {rejected:.0f}, last_error {end.certificate['last_error']}")
    print(f"edge RSS: start {start.rss_mib:.1f} MiB, end {end.rss_mib:.1f} MiB ({(end.rss_mib - start.rss_mib) / start.rss_mib:+.1%})")
    for message in tally.swap_errors[:5]:
        print(f"swap error: {message}")
    failed = https_errors or grpc_errors or tally.swap_errors or rejected or edge_errors or failed_grpc or failed_https > WRK_PROBES
    return 1 if failed else 0


class Processes:
    """The child processes of this run, stopped by the handles held here, in reverse order."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            process = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in reversed(self.started):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in reversed(self.started):
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


async def wait_healthy(ports: Ports, edge: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if edge.poll() is not None:
                raise SystemExit(f"the edge exited with {edge.returncode}:\n{log.read_text()}")
            try:
                async with session.get(f"http://127.0.0.1:{ports.admin}/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit(f"the edge was not healthy within 30 s:\n{log.read_text()}")


def run_upstreams(http_port: int, grpc_port: int) -> None:
    """The demo HTTP app and gRPC echo, in a process of their own, until SIGTERM."""
    from proxy.demo import DemoUpstreams

    async def serve() -> None:
        upstreams = DemoUpstreams(http_port=http_port, grpc_port=grpc_port)
        await upstreams.start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await upstreams.stop()

    asyncio.run(serve())


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "upstreams":
        run_upstreams(int(sys.argv[2]), int(sys.argv[3]))
        return 0
    ports = Ports(*free_ports(5))
    work = Path(tempfile.mkdtemp(prefix="edge-soak-"))
    processes = Processes()
    try:
        pki = Pki()
        (work / "certs").mkdir()
        drop(work / "certs", pki.material())
        config = edge_config(work, ports)
        python = sys.executable
        processes.start([python, __file__, "upstreams", str(ports.http_upstream), str(ports.grpc_upstream)], work, work / "upstreams.log")
        edge = processes.start([python, "-m", "proxy", "run", "--config", str(config)], ROOT, work / "edge.log")
        asyncio.run(wait_healthy(ports, edge, work / "edge.log"))
        return asyncio.run(soak(work, ports, edge, pki))
    finally:
        processes.stop_all()
        if os.environ.get("KEEP_WORK"):
            print(f"logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
