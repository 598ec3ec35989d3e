#!/usr/bin/env bash
# Runs one of the h2load benchmark drivers (bench/grpc_run.py, bench/h2_run.py) under the bench
# lock, after installing nginx and h2load when missing (Debian packages): bench/grpc.sh and
# bench/h2.sh call it with their driver. A caller that already holds `flock /tmp/edge-bench.lock`
# sets EDGE_BENCH_LOCKED=1.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${EDGE_BENCH_LOCKED:-}" ]; then
    EDGE_BENCH_LOCKED=1 exec flock /tmp/edge-bench.lock bash "$0" "$@"
fi

if ! command -v nginx >/dev/null || ! command -v h2load >/dev/null; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nginx nghttp2-client >/dev/null
fi

PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || { echo "run 'make test' (or create .venv with '.[test]') first: $PYTHON is missing" >&2; exit 2; }
exec "$PYTHON" "$1"
