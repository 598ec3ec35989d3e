#!/usr/bin/env bash
# Every benchmark of issue 7 in one command, and one table: our figure, nginx's, the ratio and
# the target, per row. `make bench` runs this.
#
#   bash bench/run.sh                     # HTTPS with 1 and 2 workers, then gRPC
#   BENCHES="https" bash bench/run.sh     # a subset: any of https, https-workers2, grpc
#
# Knobs of the scripts it calls pass through (DURATION, ROUNDS, CONNECTIONS, ...). Each
# benchmark runs under `flock /tmp/edge-bench.lock`, so nothing else benchmarks meanwhile; the
# ratios compare runs made alternately in the same invocation, never figures from other runs.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
BENCHES=${BENCHES:-https https-workers2 grpc}
LOCK=/tmp/edge-bench.lock

results=$(mktemp /tmp/edge-bench-results.XXXXXX)
trap 'rm -f "$results"' EXIT

for bench in $BENCHES; do
    case $bench in
    https) WORKERS=1 RESULTS=$results bash "$HERE/https.sh" ;;
    https-workers2) WORKERS=2 RESULTS=$results bash "$HERE/https.sh" ;;
    grpc)
        # grpc.sh prints a Markdown table: its leading text columns name the row, the first two
        # numeric columns are edge-proxy's calls/s and nginx's.
        # wrk takes DURATION=10s, grpc.sh whole seconds: the same knob serves both.
        duration=()
        if [ -n "${DURATION:-}" ]; then duration=("DURATION=${DURATION%s}"); fi
        out=$(env "${duration[@]}" EDGE_BENCH_LOCKED=1 flock "$LOCK" bash "$HERE/grpc.sh")
        echo "$out"
        awk -F'|' '/^\| / {
            label = ""; ours = ""; theirs = ""
            for (i = 2; i < NF; i++) {
                v = $i; gsub(/^ +| +$/, "", v); n = v; gsub(/,/, "", n)
                if (n ~ /^[0-9.]+$/) { if (ours == "") ours = n; else if (theirs == "") theirs = n }
                else if (ours == "") label = label (label == "" ? "" : ", ") v
            }
            if (theirs != "") printf "grpc|1|unary, %s|calls/s|%s|%s\n", label, ours, theirs
        }' <<<"$out" >>"$results"
        ;;
    *)
        echo "unknown benchmark '$bench' (expected https, https-workers2 or grpc)" >&2
        exit 2
        ;;
    esac
done

# Issue 7's targets, as ratios ours/nginx; rows without one are there to explain the others.
target() {  # target BENCH SCENARIO FIGURE
    case "$1|$2|$3" in
    "https|keep-alive 100 B|req/s" | "https|new TLS connection per request|req/s") echo ">= 0.9" ;;
    "https|keep-alive 64 KiB|req/s") echo ">= 1.0" ;;
    "https|keep-alive 100 B|p99 ms") echo "<= 1.5" ;;
    grpc*canned*) echo ">= 0.5" ;;
    *) echo "" ;;
    esac
}

echo
echo "$(date -u +%Y-%m-%d), $(uname -m), nproc $(nproc), $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
echo
echo "| bench | workers | scenario | figure | edge-proxy | nginx | ours/nginx | target |"
echo "| --- | ---: | --- | --- | ---: | ---: | ---: | --- |"
while IFS='|' read -r bench workers scenario figure ours theirs; do
    goal=$(target "$bench" "$scenario" "$figure")
    verdict=""
    if [ -n "$goal" ]; then
        verdict=$(awk -v o="$ours" -v t="$theirs" -v g="$goal" 'BEGIN {
            r = o / t; split(g, p, " ")
            ok = (p[1] == ">=") ? (r >= p[2]) : (r <= p[2])
            printf "%s %s", g, ok ? "(met)" : "(not met)"
        }')
    fi
    awk -v b="$bench" -v w="$workers" -v s="$scenario" -v f="$figure" -v o="$ours" -v t="$theirs" -v v="$verdict" \
        'BEGIN { printf "| %s | %s | %s | %s | %s | %s | %.2f | %s |\n", b, w, s, f, o, t, o / t, v }'
done <"$results"
