#!/usr/bin/env bash
# HTTP/2 benchmark: GET 100 B through edge-proxy's HTTP/2 engine (`http2 = true`, to an HTTP/1.1
# upstream), through nginx (http2, proxy_pass to the same upstream) and from a bare python-hyper h2
# server on uvloop answering itself, in one run. Installs nginx and h2load when missing (Debian
# packages). Everything runs on 127.0.0.1; h2_run.py stops only the processes it started.
# Knobs (environment): DURATION=10 WARM_UP=2 CONNECTIONS=16 STREAMS=10 ROUNDS=2; KEEP_WORK=1 keeps the logs.
# Runs under `flock /tmp/edge-bench.lock` (bench/h2load_driver.sh) so that benchmarks never
# overlap; a caller that already holds the lock sets EDGE_BENCH_LOCKED=1.
exec bash "$(dirname "$0")/h2load_driver.sh" bench/h2_run.py
