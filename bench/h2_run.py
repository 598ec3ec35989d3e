"""The HTTP/2 benchmark: GET 100 B over HTTP/2 through edge-proxy (`http2 = true`, to an HTTP/1.1
upstream), through nginx (`http2`, `proxy_pass` to the same HTTP/1.1 upstream), and from a bare h2
server on the edge's own stack answering itself (bench/h2_bare.py), in one run, alternating.
Prints requests/s, CPU per request and the ratios; the target is within 2x of the bare server.

The upstream is nginx serving a static 100 B file over HTTP/1.1 keep-alive, a process of its own.
The three servers measured are pinned to core 0 and h2load to the others when there are two or
more. Everything listens on 127.0.0.1; it stops only the processes it started. Run through
bench/h2.sh. Knobs (environment): DURATION=10 WARM_UP=2 CONNECTIONS=16 STREAMS=10 ROUNDS=2.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from grpc_run import Processes, _nginx_main, cpu_seconds, run_in_workdir, write_edge_config, write_material
from ports import free_ports

BENCH = Path(__file__).resolve().parent
DURATION = int(os.environ.get("DURATION", "10"))
WARM_UP = int(os.environ.get("WARM_UP", "2"))
CONNECTIONS = int(os.environ.get("CONNECTIONS", "16"))
STREAMS = int(os.environ.get("STREAMS", "10"))
ROUNDS = int(os.environ.get("ROUNDS", "2"))
PATH = "/100b"


@dataclass
class Ports:
    upstream: int
    edge: int
    nginx: int
    bare: int
    admin: int


def pinned(argv: list[str], cores: str) -> list[str]:
    return ["taskset", "-c", cores, *argv] if (os.cpu_count() or 1) >= 2 else argv


def edge_config(work: Path, ports: Ports) -> Path:
    return write_edge_config(
        work,
        ports.admin,
        f"""
[[listeners]]
name = "web"
protocol = "https"
listen = "127.0.0.1:{ports.edge}"
upstream = "http://127.0.0.1:{ports.upstream}"
http2 = true
""",
    )


def nginx_configs(work: Path, ports: Ports) -> tuple[Path, Path]:
    (work / "www").mkdir()
    (work / "www" / "100b").write_bytes(b"a" * 100)
    upstream = _nginx_main(
        work,
        "nginx-upstream",
        f"""
    server {{
        listen 127.0.0.1:{ports.upstream};
        keepalive_timeout 75s;
        root {work}/www;
        location / {{ default_type application/octet-stream; }}
    }}""",
    )
    edge = _nginx_main(
        work,
        "nginx-edge",
        f"""
    upstream web {{ server 127.0.0.1:{ports.upstream}; keepalive 64; keepalive_requests 1000000; }}
    ssl_certificate {work}/certs/tls.crt;
    ssl_certificate_key {work}/certs/tls.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    server {{
        listen 127.0.0.1:{ports.nginx} ssl http2;
        location / {{ proxy_pass http://web; proxy_http_version 1.1; proxy_set_header Connection ""; }}
    }}""",
    )
    return upstream, edge


@dataclass
class Result:
    requests_per_second: float
    cpu_us: float
    note: str


def h2load(port: int, pids: list[int]) -> Result:
    """One bounded h2load run: requests/s, and the CPU microseconds per request `pids` spent."""
    argv = ["h2load", f"--duration={DURATION}", f"--warm-up-time={WARM_UP}", "-c", str(CONNECTIONS), "-m", str(STREAMS)]
    argv += ["-t", "1", f"https://127.0.0.1:{port}{PATH}"]
    cores = f"1-{(os.cpu_count() or 2) - 1}"
    before = sum(cpu_seconds(pid) for pid in pids)
    result = subprocess.run(pinned(argv, cores), capture_output=True, text=True, timeout=DURATION + WARM_UP + 60)
    cpu = sum(cpu_seconds(pid) for pid in pids) - before
    out = result.stdout
    rate = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    if result.returncode != 0 or rate is None or done is None:
        raise SystemExit(f"h2load failed on port {port}:\n{out}\n{result.stderr}")
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    bad = int(done.group(3)) + int(done.group(4)) + (sum(int(g) for g in codes.groups()[1:]) if codes else 0)
    note = f" ({bad} failed or not 2xx)" if bad else ""
    total = max(int(done.group(2)) * (DURATION + WARM_UP) / DURATION, 1)  # the CPU window includes the warm-up
    return Result(float(rate.group(1)), cpu / total * 1e6, note)


def wait_until_ok(port: int, deadline: float = 30.0) -> None:
    end = time.monotonic() + deadline
    while True:
        result = subprocess.run(["h2load", "-n", "1", "-c", "1", f"https://127.0.0.1:{port}{PATH}"], capture_output=True, text=True)
        if result.returncode == 0 and "1 succeeded" in result.stdout and "1 2xx" in result.stdout:
            return
        if time.monotonic() > end:
            raise SystemExit(f"no HTTP/2 200 on 127.0.0.1:{port}: {result.stdout[-400:]} {result.stderr[-300:]}")
        time.sleep(0.3)


def main() -> int:
    return run_in_workdir(run)


def run(work: Path, processes: Processes) -> int:
    ports = Ports(*free_ports(5))
    write_material(work)
    upstream_conf, nginx_conf = nginx_configs(work, ports)
    nginx_argv = ["nginx", "-p", str(work), "-g", "daemon off;", "-c"]
    upstream = processes.start("nginx-upstream", pinned([*nginx_argv, str(upstream_conf)], "1"), work, work / "upstream.log")
    nginx = processes.start("nginx-edge", pinned([*nginx_argv, str(nginx_conf)], "0"), work, work / "nginx-edge.log")
    edge_argv = [sys.executable, "-m", "proxy", "run", "--config", str(edge_config(work, ports)), "--log-level", "warning"]
    edge = processes.start("edge-proxy", pinned(edge_argv, "0"), work, work / "edge.log")
    bare_argv = [sys.executable, str(BENCH / "h2_bare.py"), str(ports.bare), str(work / "certs/tls.crt"), str(work / "certs/tls.key")]
    bare = processes.start("bare h2", pinned(bare_argv, "0"), work, work / "bare.log")
    for port in (ports.edge, ports.nginx, ports.bare):
        wait_until_ok(port)
    del upstream
    print(f"# {time.strftime('%Y-%m-%d')}, nproc {os.cpu_count()}, h2load -c {CONNECTIONS} -m {STREAMS} -D {DURATION}s, GET 100 B")
    print("| round | server | req/s | CPU us/req | edge/this req/s |")
    print("| ---: | --- | ---: | ---: | ---: |")
    targets = [("edge-proxy (h2 -> HTTP/1.1)", ports.edge, edge.pid), ("nginx (h2 -> HTTP/1.1)", ports.nginx, nginx.pid)]
    targets.append(("bare h2 on uvloop (answers itself)", ports.bare, bare.pid))
    for round_ in range(1, ROUNDS + 1):
        order = targets if round_ % 2 else list(reversed(targets))
        results = {name: h2load(port, [pid]) for name, port, pid in order}
        mine = results[targets[0][0]].requests_per_second
        for name, _, _ in targets:
            r = results[name]
            print(
                f"| {round_} | {name} | {r.requests_per_second:,.0f}{r.note} | {r.cpu_us:,.0f} | {mine / r.requests_per_second:.2f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
