#!/usr/bin/env bash
# gRPC benchmark: unary calls/s through edge-proxy's gRPC relay, on a gRPC-only port and on one
# port shared with HTTPS, and through nginx grpc_pass beside each, same certificate, same upstreams, one run. Installs
# nginx and h2load when missing (Debian packages). Everything runs on 127.0.0.1; grpc_run.py
# stops only the processes it started.
# Knobs (environment): DURATION=10 WARM_UP=2 CONNECTIONS=4 STREAMS=16; KEEP_WORK=1 keeps the logs.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nginx >/dev/null || ! command -v h2load >/dev/null; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nginx nghttp2-client >/dev/null
fi

PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || { echo "run 'make test' (or create .venv with '.[test]') first: $PYTHON is missing" >&2; exit 2; }
exec "$PYTHON" bench/grpc_run.py
