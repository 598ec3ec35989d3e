#!/usr/bin/env bash
# What the JSON access log costs a keep-alive request, measured as pairs (issue 17).
#
# Two edge processes, the same but for `[log] access = "json"` (to a file) in the second, both
# pinned to core 0, with wrk and the upstream nginx on the other cores. Each pair loads one, then
# the other, for DURATION each (which goes first alternates), and gives one ratio json/off of CPU
# per request and of requests per second. On a shared machine whose speed drifts by a fifth from
# one minute to the next, the ratios of adjacent runs, and their median over many pairs, say what
# a few long runs summed up cannot (bench/https.sh ACCESS=1 sums three). Only 127.0.0.1 is used,
# every load run is bounded by DURATION, and only processes started here are stopped.
#
# Usage: bash bench/access.sh    (PAIRS=20 DURATION=3s CONNECTIONS=64 PATH_=/100b by default)
# Prints one line per pair, then the median and quartiles of both ratios.
set -euo pipefail

if [ -z "${EDGE_BENCH_LOCKED:-}" ]; then
    EDGE_BENCH_LOCKED=1 exec flock /tmp/edge-bench.lock "$0" "$@"
fi

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
EDGE=${EDGE:-$(dirname "$PYTHON")/edge-proxy}
PAIRS=${PAIRS:-20}
DURATION=${DURATION:-3s}
CONNECTIONS=${CONNECTIONS:-64}
PATH_=${PATH_:-/100b}
EDGE_PORT=${EDGE_PORT:-18453}
ACCESS_PORT=${ACCESS_PORT:-18454}
UPSTREAM_PORT=${UPSTREAM_PORT:-18083}
ADMIN_PORT=${ADMIN_PORT:-18903}
ACCESS_ADMIN_PORT=${ACCESS_ADMIN_PORT:-18904}

if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null; then
    apt-get install -y wrk nginx || { apt-get update && apt-get install -y wrk nginx; }
fi

workdir=$(mktemp -d /tmp/edge-access-bench.XXXXXX)
chmod 755 "$workdir"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$workdir"
}
trap cleanup EXIT

pin_cpus 1
ports_free "EDGE_PORT, ACCESS_PORT, UPSTREAM_PORT, ADMIN_PORT or ACCESS_ADMIN_PORT" \
    "$EDGE_PORT" "$ACCESS_PORT" "$UPSTREAM_PORT" "$ADMIN_PORT" "$ACCESS_ADMIN_PORT"

"$PYTHON" "$HERE/https_edge.py" setup "$workdir/edge" --port "$EDGE_PORT" --upstream-port "$UPSTREAM_PORT" \
    --admin-port "$ADMIN_PORT" --access-port "$ACCESS_PORT" --access-admin-port "$ACCESS_ADMIN_PORT"
write_upstream "$workdir" "$UPSTREAM_PORT"

"${load_cpu[@]}" nginx -p "$workdir/upstream" -c "$workdir/upstream/nginx.conf" -g "daemon off;" &
pids+=($!)
(cd "$workdir/edge" && exec "${proxy_cpu[@]}" "$EDGE" run --config edge.toml 2>"$workdir/edge.log") &
off_pid=$!
pids+=("$off_pid")
(cd "$workdir/edge" && exec "${proxy_cpu[@]}" "$EDGE" run --config edge-access.toml 2>"$workdir/edge-access.log") &
json_pid=$!
pids+=("$json_pid")
for port in "$UPSTREAM_PORT" "$EDGE_PORT" "$ACCESS_PORT"; do wait_for_port "$port"; done

hz=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

load() {  # load PID PORT DURATION -> "requests seconds cpu_ticks"
    local before after out
    before=$(ticks "$1")
    out=$("${load_cpu[@]}" wrk -t1 -c"$CONNECTIONS" -d"$3" "https://127.0.0.1:$2$PATH_")
    after=$(ticks "$1")
    if grep -qE "Non-2xx|Socket errors" <<<"$out"; then
        echo "warning: $(grep -E 'Non-2xx|Socket errors' <<<"$out" | tr -s ' ')" >&2
    fi
    awk -v t=$((after - before)) '/requests in/ {gsub("s,", "", $4); print $1, $4, t}' <<<"$out"
}

echo "warming up..." >&2
load "$off_pid" "$EDGE_PORT" 2s >/dev/null
load "$json_pid" "$ACCESS_PORT" 2s >/dev/null

results="$workdir/pairs"
: >"$results"
for pair in $(seq "$PAIRS"); do
    if [ $((pair % 2)) -eq 1 ]; then
        read -r off_n off_s off_t < <(load "$off_pid" "$EDGE_PORT" "$DURATION")
        read -r json_n json_s json_t < <(load "$json_pid" "$ACCESS_PORT" "$DURATION")
    else
        read -r json_n json_s json_t < <(load "$json_pid" "$ACCESS_PORT" "$DURATION")
        read -r off_n off_s off_t < <(load "$off_pid" "$EDGE_PORT" "$DURATION")
    fi
    awk -v p="$pair" -v hz="$hz" -v on="$off_n" -v os="$off_s" -v ot="$off_t" -v jn="$json_n" -v js="$json_s" -v jt="$json_t" 'BEGIN {
        ocpu = ot / hz / on * 1e6; jcpu = jt / hz / jn * 1e6
        printf "%d %.0f %.0f %.1f %.1f %.4f %.4f\n", p, on / os, jn / js, ocpu, jcpu, (jn / js) / (on / os), jcpu / ocpu
    }' | tee -a "$results" | awk '{printf "pair %d: off %s req/s %s us/req, json %s req/s %s us/req\n", $1, $2, $4, $3, $5}' >&2
done

echo
echo "$(date -u +%Y-%m-%d), nproc $cpus, $($PYTHON -V), wrk -t1 -c$CONNECTIONS -d$DURATION $PATH_, $PAIRS pairs"
echo
echo "| access = \"json\" against \"off\" | median | quartiles | pairs within 10% |"
echo "| --- | ---: | ---: | ---: |"
for column in 6 7; do
    sort -n -k"$column" "$results" | awk -v c="$column" '{v[NR] = $c} END {
        n = NR
        median = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
        lo = v[int((n + 3) / 4)]; hi = v[int((3 * n + 3) / 4)]
        within = 0
        for (i = 1; i <= n; i++) if ((c == 6 && v[i] >= 0.9) || (c == 7 && v[i] <= 1.1)) within++
        printf "| %s | %.2fx | %.2fx - %.2fx | %d of %d |\n", (c == 6 ? "requests/s json/off" : "CPU per request json/off"), median, lo, hi, within, n
    }'
done
echo "access log: $(wc -l <"$workdir/edge/access.log") lines" >&2
