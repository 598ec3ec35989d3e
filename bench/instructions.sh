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
#
# REAL=1 bash bench/instructions.sh    (N_REAL=3000 CONNECTIONS=64; also needs nginx and h2load)
# Counts a real `edge-proxy run` instead (TLS, sockets, timers, the admin server and watcher),
# access off and access = "json" to a file: the edge under callgrind, h2load sending N_REAL and
# then 2 N_REAL keep-alive requests over CONNECTIONS connections (127.0.0.1 only), the counters
# zeroed and dumped around each (callgrind_control), the difference divided by N_REAL.
# Handshakes cancel out. Valgrind slows the edge fifty-fold, so the writer thread wakes for a few
# lines at a time rather than hundreds: its wake-ups weigh more per line than in a real run.
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

if [ -n "${REAL:-}" ]; then
    N=${N_REAL:-3000}
    CONNECTIONS=${CONNECTIONS:-64}
    # shellcheck source=bench/lib.sh
    . "$HERE/lib.sh"
    ensure_installed h2load=nghttp2-client nginx
    ports_free "EDGE_PORT, UPSTREAM_PORT or ADMIN_PORT" "${EDGE_PORT:=18463}" "${UPSTREAM_PORT:=18093}" "${ADMIN_PORT:=18913}"
    "$PYTHON" "$HERE/https_edge.py" setup "$workdir/edge" --port "$EDGE_PORT" --upstream-port "$UPSTREAM_PORT" \
        --admin-port "$ADMIN_PORT" --access-port "$EDGE_PORT" --access-admin-port "$ADMIN_PORT"
    chmod 755 "$workdir"  # the upstream nginx's worker reads the files
    write_upstream "$workdir" "$UPSTREAM_PORT"
    nginx -p "$workdir/upstream" -c "$workdir/upstream/nginx.conf" -g "daemon off;" &
    upstream_pid=$!
    trap 'kill "$upstream_pid" 2>/dev/null || true; rm -rf "$workdir"' EXIT

    counted() {  # counted CONFIG -> instructions per request
        (cd "$workdir/edge" && exec valgrind --tool=callgrind --callgrind-out-file="$workdir/real.out" \
            "$PYTHON" -m proxy run --config "$1" 2>"$workdir/edge.log") &
        local edge=$! valgrind_pid one two
        wait_for_port "$EDGE_PORT" 600
        valgrind_pid=$(pgrep -P "$edge" || echo "$edge")
        h2load --h1 -n "$N" -c "$CONNECTIONS" -t1 "https://127.0.0.1:$EDGE_PORT/100b" >/dev/null  # warm-up
        one=$(requests_counted "$valgrind_pid" "$N" one)
        two=$(requests_counted "$valgrind_pid" $((2 * N)) two)
        kill "$edge" 2>/dev/null || true
        wait "$edge" 2>/dev/null || true
        echo $(((two - one) / N))
    }
    requests_counted() {  # requests_counted PID REQUESTS LABEL -> instructions while they ran
        callgrind_control -z "$1" >/dev/null 2>&1
        if ! h2load --h1 -n "$2" -c "$CONNECTIONS" -t1 "https://127.0.0.1:$EDGE_PORT/100b" | grep -q " $2 succeeded"; then
            echo "not every request succeeded" >&2
            kill "$1"
            exit 1
        fi
        callgrind_control -d "$3" "$1" >/dev/null 2>&1
        sleep 1
        grep -h '^summary:' "$(ls -t "$workdir"/real.out.* | head -1)" | awk '{print $2}'
    }
    off=$(counted edge.toml)
    json=$(counted edge-access.toml)
    echo "| keep-alive 100 B, a real edge-proxy run (TLS 1.3, $CONNECTIONS connections) | instructions per request |"
    echo "| --- | ---: |"
    printf '| compiled, access off | %d |\n| compiled, access json | %d |\n' "$off" "$json"
    awk -v o="$off" -v j="$json" 'BEGIN {printf "| json/off | %.3f |\n", j / o}'
    exit 0
fi

echo "| keep-alive 100 B, in memory | instructions per request |"
echo "| --- | ---: |"
per_request "compiled, access off" EDGE_PROXY_NO_EXTENSIONS=
ACCESS_FORMAT=json per_request "compiled, access json" EDGE_PROXY_NO_EXTENSIONS=
per_request "pure Python, access off" EDGE_PROXY_NO_EXTENSIONS=1
