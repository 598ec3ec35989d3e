"""The gRPC benchmark: unary calls/s through edge-proxy and through nginx `grpc_pass`, with the
same certificate and the same upstreams, in one run; prints calls/s, the ratio and CPU per call.
Each is measured on a gRPC-only port and on one port that also serves HTTP/1.1 (edge-proxy: an
https listener with `grpc_upstream`; nginx: `grpc_pass` for `application/grpc`, `proxy_pass` else).

Two upstreams: a grpcio echo server (grpc_upstream.py), and nginx answering a canned gRPC reply
(grpc-status 0 in the trailers), which is never the bottleneck. Everything listens on 127.0.0.1.
It stops only the processes it started, by the handles it holds. Run through bench/grpc.sh.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import trustme
from ports import free_ports

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
METHOD = "/bench.Echo/Unary"
PAYLOAD = bytes(range(100))  # a small protobuf-sized message; its content is opaque to both proxies
DURATION = int(os.environ.get("DURATION", "10"))
WARM_UP = int(os.environ.get("WARM_UP", "2"))
CONNECTIONS = int(os.environ.get("CONNECTIONS", "4"))
STREAMS = int(os.environ.get("STREAMS", "16"))


def grpc_frame(message: bytes) -> bytes:
    """One length-prefixed gRPC message: no compression flag, 4-byte big-endian length."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


@dataclass
class Ports:
    echo_upstream: int
    canned_upstream: int
    nginx_echo: int
    nginx_canned: int
    admin: int
    relay_echo: int
    relay_canned: int
    one_port_echo: int
    one_port_canned: int
    nginx_one_port_echo: int
    nginx_one_port_canned: int

    @property
    def edge_ports(self) -> tuple[int, ...]:
        return self.relay_echo, self.relay_canned, self.one_port_echo, self.one_port_canned

    @property
    def nginx_ports(self) -> tuple[int, ...]:
        return self.nginx_echo, self.nginx_canned, self.nginx_one_port_echo, self.nginx_one_port_canned


def write_material(work: Path) -> Path:
    ca = trustme.CA()
    leaf = ca.issue_cert("edge.example", "127.0.0.1")
    certs = work / "certs"
    certs.mkdir()
    (certs / "tls.crt").write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
    (certs / "tls.key").write_bytes(leaf.private_key_pem.bytes())
    # The root as ca.crt: the edge refuses a chain that ends short of a root it can see.
    (certs / "ca.crt").write_bytes(ca.cert_pem.bytes())
    (work / "ca.pem").write_bytes(ca.cert_pem.bytes())
    return work / "ca.pem"


def write_edge_config(work: Path, admin_port: int, listeners: str) -> Path:
    """work/edge.toml: one process, the material write_material made, no watcher, the admin API
    on `admin_port`, and `listeners` ([[listeners]] tables as TOML)."""
    path = work / "edge.toml"
    path.write_text(f"""
[server]
workers = 1
drain_seconds = 1

[tls]
cert_dir = "certs"
state_dir = "state"
server_name = "edge.example"
ip_addresses = ["127.0.0.1"]
watch = "off"

[admin]
listen = "127.0.0.1:{admin_port}"
token_file = "state/admin.token"
{listeners}""")
    return path


def edge_config(work: Path, ports: Ports) -> Path:
    return write_edge_config(
        work,
        ports.admin,
        f"""
[[listeners]]
name = "relay-echo"
protocol = "grpc"
listen = "127.0.0.1:{ports.relay_echo}"
upstream = "127.0.0.1:{ports.echo_upstream}"

[[listeners]]
name = "relay-canned"
protocol = "grpc"
listen = "127.0.0.1:{ports.relay_canned}"
upstream = "127.0.0.1:{ports.canned_upstream}"

[[listeners]]
name = "one-port-echo"
protocol = "https"
listen = "127.0.0.1:{ports.one_port_echo}"
upstream = "http://127.0.0.1:{ports.canned_upstream}"
grpc_upstream = "127.0.0.1:{ports.echo_upstream}"

[[listeners]]
name = "one-port-canned"
protocol = "https"
listen = "127.0.0.1:{ports.one_port_canned}"
upstream = "http://127.0.0.1:{ports.canned_upstream}"
grpc_upstream = "127.0.0.1:{ports.canned_upstream}"
""",
    )


def _nginx_main(work: Path, name: str, servers: str) -> Path:
    temp = work / f"{name}-temp"
    temp.mkdir()
    path = work / f"{name}.conf"
    path.write_text(f"""
worker_processes 1;
pid {work}/{name}.pid;
error_log {work}/{name}-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    # nginx closes a client connection after 1000 requests by default; edge-proxy does not.
    keepalive_requests 1000000;
{servers}
}}
""")
    return path


def canned_upstream_config(work: Path, ports: Ports) -> Path:
    """nginx as the upstream that is never the bottleneck: a fixed gRPC reply with grpc-status 0
    in the trailers, over plaintext h2c. A process of its own, so the nginx edge's CPU is the
    edge's only.

    The static module answers POST with 405; error_page turns that into the file. The mirror
    makes nginx read the request body before it answers: answering first leaves a late frame for
    the finished stream, which nginx's grpc_pass rejects ("upstream sent frame for unknown
    stream") with a 502. grpc clients, edge-proxy's included, ignore such a frame."""
    (work / "www").mkdir()
    (work / "www" / "reply.bin").write_bytes(grpc_frame(PAYLOAD))
    return _nginx_main(
        work,
        "nginx-upstream",
        f"""
    server {{
        listen 127.0.0.1:{ports.canned_upstream} http2;
        location = /read-body {{ internal; return 204; }}
        location / {{
            mirror /read-body;
            mirror_request_body on;
            root {work}/www;
            default_type application/grpc;
            rewrite ^ /reply.bin break;
            error_page 405 =200 /reply.bin;
            add_trailer grpc-status 0 always;
        }}
    }}""",
    )


def nginx_edge_config(work: Path, ports: Ports) -> Path:
    """nginx as the TLS edge: same certificate as edge-proxy, upstream connections kept alive."""
    return _nginx_main(
        work,
        "nginx-edge",
        f"""
    upstream echo {{ server 127.0.0.1:{ports.echo_upstream}; keepalive 64; keepalive_requests 1000000; }}
    upstream canned {{ server 127.0.0.1:{ports.canned_upstream}; keepalive 64; keepalive_requests 1000000; }}
    ssl_certificate {work}/certs/tls.crt;
    ssl_certificate_key {work}/certs/tls.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    server {{
        listen 127.0.0.1:{ports.nginx_echo} ssl http2;
        location / {{ grpc_pass grpc://echo; }}
    }}
    server {{
        listen 127.0.0.1:{ports.nginx_canned} ssl http2;
        location / {{ grpc_pass grpc://canned; }}
    }}
    server {{
        listen 127.0.0.1:{ports.nginx_one_port_echo} ssl http2;
        location / {{
            if ($http_content_type ~ "^application/grpc") {{ grpc_pass grpc://echo; }}
            proxy_pass http://canned;
        }}
    }}
    server {{
        listen 127.0.0.1:{ports.nginx_one_port_canned} ssl http2;
        location / {{
            if ($http_content_type ~ "^application/grpc") {{ grpc_pass grpc://canned; }}
            proxy_pass http://canned;
        }}
    }}""",
    )


class Processes:
    """The processes this run started, stopped in reverse order by the handles held here."""

    def __init__(self) -> None:
        self.started: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            process = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        self.started.append((name, process))
        return process

    def stop_all(self) -> None:
        # SIGTERM: a fast stop for nginx's master (it ends its worker), a clean one for the rest.
        for _, process in reversed(self.started):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for _, process in reversed(self.started):
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and its live children, from /proc:
    nginx does its work in a worker, a child of the master this run started."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        fields = Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def wait_until_ok(port: int, ca: Path, deadline: float = 30.0) -> None:
    check = [sys.executable, str(BENCH / "grpc_check.py"), str(port), str(ca), METHOD, PAYLOAD.hex()]
    end = time.monotonic() + deadline
    while True:
        result = subprocess.run(check, capture_output=True, text=True)
        if result.returncode == 0:
            return
        if time.monotonic() > end:
            raise SystemExit(f"no gRPC OK on 127.0.0.1:{port}: {result.stdout.strip()} {result.stderr.strip()[-300:]}")
        time.sleep(0.3)


@dataclass
class Result:
    calls_per_second: float
    cpu_us_per_call: dict[int, float]  # by PID
    note: str  # failed or errored calls, if any


def h2load(port: int, body: Path, pids: list[int]) -> Result:
    """One bounded h2load run: calls/s, and the CPU microseconds per call each of `pids` spent."""
    argv = ["h2load", f"--duration={DURATION}", f"--warm-up-time={WARM_UP}", "-c", str(CONNECTIONS), "-m", str(STREAMS)]
    # ALPN h2 only, as every gRPC library offers it: a port that also serves HTTP/1.1 prefers that.
    argv += ["-t", "1", "--npn-list=h2", f"--data={body}", "-H", "content-type: application/grpc", "-H", "te: trailers"]
    argv += [f"https://127.0.0.1:{port}{METHOD}"]
    cpu_before = {pid: cpu_seconds(pid) for pid in pids}
    result = subprocess.run(argv, capture_output=True, text=True, timeout=DURATION + WARM_UP + 60)
    cpu = {pid: cpu_seconds(pid) - before for pid, before in cpu_before.items()}
    out = result.stdout
    rate = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    if result.returncode != 0 or rate is None or done is None:
        raise SystemExit(f"h2load failed on port {port}:\n{out}\n{result.stderr}")
    note = "" if done.group(3) == done.group(4) == "0" else f" ({done.group(3)} failed, {done.group(4)} errored)"
    # The CPU window includes the warm-up, so CPU per call is over every call made in it
    # (assuming the warm-up ran at the measured rate).
    total_calls = max(int(done.group(2)) * (DURATION + WARM_UP) / DURATION, 1)
    return Result(float(rate.group(1)), {pid: seconds / total_calls * 1e6 for pid, seconds in cpu.items()}, note)


@contextmanager
def workdir() -> Iterator[Path]:
    work = Path(tempfile.mkdtemp(prefix="edge-grpc-bench-"))
    work.chmod(0o755)  # nginx's worker (not root) reads the canned reply from here
    try:
        yield work
    finally:
        if os.environ.get("KEEP_WORK"):
            print(f"work directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def run_in_workdir(run: Callable[[Path, Processes], int]) -> int:
    """`run` in a fresh work directory; every process it started is stopped afterwards."""
    processes = Processes()
    with workdir() as work:
        try:
            return run(work, processes)
        finally:
            processes.stop_all()


def main() -> int:
    return run_in_workdir(run)


def run(work: Path, processes: Processes) -> int:
    ports = Ports(*free_ports(11))
    ca = write_material(work)
    body = work / "request.bin"
    body.write_bytes(grpc_frame(PAYLOAD))
    upstream_argv = [sys.executable, str(BENCH / "grpc_upstream.py"), str(ports.echo_upstream)]
    upstream = processes.start("echo upstream", upstream_argv, work, work / "upstream.log")
    nginx_argv = ["nginx", "-p", str(work), "-g", "daemon off;", "-c"]
    processes.start("nginx-upstream", [*nginx_argv, str(canned_upstream_config(work, ports))], work, work / "nginx-upstream.log")
    nginx = processes.start("nginx-edge", [*nginx_argv, str(nginx_edge_config(work, ports))], work, work / "nginx-edge.log")
    edge_argv = [sys.executable, "-m", "proxy", "run", "--config", str(edge_config(work, ports)), "--log-level", "warning"]
    edge = processes.start("edge-proxy", edge_argv, work, work / "edge.log")
    for port in (*ports.edge_ports, *ports.nginx_ports):
        wait_until_ok(port, ca)

    print(f"# {time.strftime('%Y-%m-%d')}, nproc {os.cpu_count()}, h2load -c {CONNECTIONS} -m {STREAMS} -D {DURATION}s, 100 B unary")
    print("| port | upstream | edge-proxy calls/s | nginx grpc_pass calls/s | ratio | edge-proxy CPU us/call | nginx CPU us/call |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    behind_nginx: list[Result] = []
    # Each row measures nginx again right after edge-proxy, so a row's two figures share the
    # machine's conditions of that moment.
    for where, label, edge_port, nginx_port in (
        ("gRPC only", "grpcio echo", ports.relay_echo, ports.nginx_echo),
        ("gRPC only", "nginx canned reply", ports.relay_canned, ports.nginx_canned),
        ("one port with HTTPS", "grpcio echo", ports.one_port_echo, ports.nginx_one_port_echo),
        ("one port with HTTPS", "nginx canned reply", ports.one_port_canned, ports.nginx_one_port_canned),
    ):
        mine = h2load(edge_port, body, [edge.pid])
        theirs = h2load(nginx_port, body, [nginx.pid, upstream.pid])
        if label == "grpcio echo" and where == "gRPC only":
            behind_nginx.append(theirs)
        print(
            f"| {where} | {label} | {mine.calls_per_second:,.0f}{mine.note} | {theirs.calls_per_second:,.0f}{theirs.note} "
            f"| {mine.calls_per_second / theirs.calls_per_second:.2f} "
            f"| {mine.cpu_us_per_call[edge.pid]:,.0f} | {theirs.cpu_us_per_call[nginx.pid]:,.0f} |",
            flush=True,
        )
    # What grpcio's asyncio server costs on its own, for scale.
    floor = min(result.cpu_us_per_call[upstream.pid] for result in behind_nginx)
    print(f"\ngrpcio echo upstream alone (measured behind nginx): {floor:,.0f} CPU us/call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
