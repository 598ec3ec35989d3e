#!/usr/bin/env bash
# What the JSON access log costs a keep-alive request (issue 17), both ways loaded at once.
#
# Two edge processes, the same but for `[log] access = "json"` (to a file) in the second, both
# pinned to core 0, with the upstream nginx and two wrk (one for each edge) on the other cores.
# Each round loads both edges at the same time for DURATION: the scheduler shares core 0 between
# them, so whatever else the machine does at that moment slows both alike, and the round's ratios
# json/off (requests per second, CPU per request) hold still where runs one after the other drift
# by a fifth on a shared machine. Only 127.0.0.1 is used, every load run is bounded by DURATION,
# and only processes started here are stopped.
#
# Usage: bash bench/access.sh    (ROUNDS=6 DURATION=5s CONNECTIONS=64 PATH_=/100b by default)
# Prints one line per round, then the median and range of both ratios.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
hold_bench_lock "$@"
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
EDGE=${EDGE:-$(dirname "$PYTHON")/edge-proxy}
ROUNDS=${ROUNDS:-6}
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-64}
PATH_=${PATH_:-/100b}
EDGE_PORT=${EDGE_PORT:-18453}
ACCESS_PORT=${ACCESS_PORT:-18454}
UPSTREAM_PORT=${UPSTREAM_PORT:-18083}
ADMIN_PORT=${ADMIN_PORT:-18903}
ACCESS_ADMIN_PORT=${ACCESS_ADMIN_PORT:-18904}

ensure_installed wrk nginx

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

together() {  # load both edges at once for DURATION -> "off_n off_s off_t json_n json_s json_t"
    local off_before json_before off_after json_after wrk_off wrk_json result out
    off_before=$(ticks "$off_pid")
    json_before=$(ticks "$json_pid")
    "${load_cpu[@]}" wrk -t1 -c"$CONNECTIONS" -d"$1" "https://127.0.0.1:$EDGE_PORT$PATH_" >"$workdir/off.out" &
    wrk_off=$!
    "${load_cpu[@]}" wrk -t1 -c"$CONNECTIONS" -d"$1" "https://127.0.0.1:$ACCESS_PORT$PATH_" >"$workdir/json.out" &
    wrk_json=$!
    wait "$wrk_off" "$wrk_json"
    off_after=$(ticks "$off_pid")
    json_after=$(ticks "$json_pid")
    result=""
    for out in off json; do
        if grep -qE "Non-2xx|Socket errors" "$workdir/$out.out"; then
            echo "warning ($out): $(grep -E 'Non-2xx|Socket errors' "$workdir/$out.out" | tr -s ' ')" >&2
        fi
        result+="$(awk '/requests in/ {gsub("s,", "", $4); print $1, $4}' "$workdir/$out.out") "
        if [ "$out" = off ]; then result+="$((off_after - off_before)) "; else result+="$((json_after - json_before))"; fi
    done
    echo "$result"
}

echo "warming up..." >&2
together 2s >/dev/null

results="$workdir/rounds"
: >"$results"
for round in $(seq "$ROUNDS"); do
    read -r off_n off_s off_t json_n json_s json_t < <(together "$DURATION")
    awk -v r="$round" -v hz="$hz" -v on="$off_n" -v os="$off_s" -v ot="$off_t" -v jn="$json_n" -v js="$json_s" -v jt="$json_t" 'BEGIN {
        ocpu = ot / hz / on * 1e6; jcpu = jt / hz / jn * 1e6
        printf "%d %.0f %.0f %.1f %.1f %.4f %.4f\n", r, on / os, jn / js, ocpu, jcpu, (jn / js) / (on / os), jcpu / ocpu
    }' | tee -a "$results" | awk '{printf "round %d: off %s req/s %s us/req, json %s req/s %s us/req: json/off %.3f req/s, %.3f CPU\n", $1, $2, $4, $3, $5, $6, $7}' >&2
done

echo
echo "$(date -u +%Y-%m-%d), nproc $cpus, $($PYTHON -V), both edges on core 0 at once, wrk -t1 -c$CONNECTIONS -d$DURATION $PATH_ each, $ROUNDS rounds"
echo
echo "| access = \"json\" against \"off\" | median | range | rounds within 10% |"
echo "| --- | ---: | ---: | ---: |"
for column in 6 7; do
    sort -n -k"$column" "$results" | awk -v c="$column" '{v[NR] = $c} END {
        n = NR
        median = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
        within = 0
        for (i = 1; i <= n; i++) if ((c == 6 && v[i] >= 0.9) || (c == 7 && v[i] <= 1.1)) within++
        printf "| %s | %.3fx | %.3fx - %.3fx | %d of %d |\n", (c == 6 ? "requests/s json/off" : "CPU per request json/off"), median, v[1], v[n], within, n
    }'
done
echo "access log: $(wc -l <"$workdir/edge/access.log") lines" >&2
