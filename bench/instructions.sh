#!/usr/bin/env bash
# Instructions per keep-alive 100 B request spent by the edge's own code, counted by valgrind's
# callgrind on bench/https_micro.py's in-memory rig (no TLS, no sockets): the same on a busy
# machine as on an idle one, so a change of a few percent shows. Each variant runs twice, with
# N and 2N requests after the same warm-up; the difference divided by N is one request's cost.
#
# Usage: bash bench/instructions.sh    (N=10000; needs valgrind and a built .venv)
# Prints: compiled engine with the access log off and with access = "json", then the pure-Python
# engine (EDGE_PROXY_NO_EXTENSIONS=1) with it off. Every thread counts, the log's writer thread
# (which makes and writes the lines) included. Under valgrind each request takes about a
# millisecond, so every line makes its millisecond's timestamp text, which a real edge does once a
# millisecond: one concatenation (the date and time are made once a second either way).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
N=${N:-10000}
command -v valgrind >/dev/null || apt-get install -y valgrind || { apt-get update && apt-get install -y valgrind; }

workdir=$(mktemp -d /tmp/edge-instructions.XXXXXX)
trap 'rm -rf "$workdir"' EXIT

count() {  # count REQUESTS [env...] -> total instructions of one run
    local requests=$1
    shift
    env "$@" valgrind --tool=callgrind --callgrind-out-file="$workdir/out" "$PYTHON" "$HERE/https_micro.py" \
        --scenario 100b --rounds 1 --requests "$requests" --access "${ACCESS_FORMAT:-off}" >/dev/null 2>"$workdir/log"
    grep -o 'refs: *[0-9,]*' "$workdir/log" | tr -d ', ' | cut -d: -f2
}

per_request() {  # per_request LABEL [env...]
    local label=$1
    shift
    local one two
    one=$(count "$N" "$@")
    two=$(count $((2 * N)) "$@")
    printf '| %s | %d |\n' "$label" $(((two - one) / N))
}

echo "| keep-alive 100 B, in memory | instructions per request |"
echo "| --- | ---: |"
per_request "compiled, access off" EDGE_PROXY_NO_EXTENSIONS=
ACCESS_FORMAT=json per_request "compiled, access json" EDGE_PROXY_NO_EXTENSIONS=
per_request "pure Python, access off" EDGE_PROXY_NO_EXTENSIONS=1
