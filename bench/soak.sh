#!/usr/bin/env bash
# The soak (issue 6): edge-proxy under wrk (keep-alive and a new TLS connection per request) and
# gRPC unary loops for SOAK_SECONDS (default 300) while its certificate is swapped every
# SOAK_SWAP_INTERVAL seconds (default 1), by API upload and directory drop in turn. Prints
# requests, errors, swaps and the edge's RSS at start and end; exits 1 if anything failed.
#
# Everything runs on 127.0.0.1 and is bounded by SOAK_SECONDS; bench/soak_run.py stops only the
# processes it started. Knobs: SOAK_SECONDS, SOAK_SWAP_INTERVAL, SOAK_GRPC_LOOPS (4),
# SOAK_WRK_CONNECTIONS (32); KEEP_WORK=1 keeps the edge's log.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v wrk >/dev/null; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk >/dev/null
fi

PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || { echo "run 'make test' (or create .venv with '.[test]') first: $PYTHON is missing" >&2; exit 2; }
exec "$PYTHON" bench/soak_run.py
