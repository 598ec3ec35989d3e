#!/usr/bin/env bash
# gRPC benchmark: unary calls/s through edge-proxy's gRPC relay, on a gRPC-only port and on one
# port shared with HTTPS, and through nginx grpc_pass beside each, same certificate, same
# upstreams, one run. Installs nginx and h2load when missing (Debian packages); runs under the
# bench lock (bench/h2load_driver.sh). Everything runs on 127.0.0.1; grpc_run.py
# stops only the processes it started.
# Knobs (environment): DURATION=10 WARM_UP=2 CONNECTIONS=4 STREAMS=16; KEEP_WORK=1 keeps the logs.
exec bash "$(dirname "$0")/h2load_driver.sh" bench/grpc_run.py
