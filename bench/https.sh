#!/usr/bin/env bash
# edge-proxy's HTTPS listener against nginx as a TLS reverse proxy, in one run (issues 3 and 7).
#
# Both proxies serve the same ECDSA P-256 certificate with TLS 1.2 and 1.3 enabled, run WORKERS
# worker processes, and forward to the same upstream (a separate nginx serving a 100 B and a
# 64 KiB static file) over pooled keep-alive connections. edge-proxy is the real program
# (`edge-proxy run` with a generated config). With one worker both proxies are pinned to core 0
# and wrk and the upstream run on the other cores; with more, nothing is pinned. Targets
# alternate within each round, and which goes first alternates between rounds. Only 127.0.0.1
# is used, every load run is bounded by DURATION, and only processes started here are stopped.
#
# Usage: bench/https.sh    (DURATION=10s ROUNDS=2 CONNECTIONS=64 WORKERS=1 by default)
# FLOOR=1 also measures bench/https_floor.py, a bare TLS byte relay on the same stack (one
# process, pinned like the others), and prints what the edge's HTTP features cost above it.
# ONE_PORT=1 also measures a second listener of the same edge whose port serves gRPC too
# (`grpc_upstream`), and prints what HTTP/1.1 clients pay on it against the plain listener.
# ACCESS=1 also runs a second edge process, the same but with `[log] access = "json"` writing to a
# file (pinned like the first), measured in alternation with it, and prints what the access log costs.
# PURE=1 also runs a second edge process on the pure-Python HTTP/1.1 engine (EDGE_PROXY_NO_EXTENSIONS=1,
# pinned like the first), measured in alternation with it, and prints what compiling the engine buys.
# RESULTS=FILE appends one line per figure, fields separated by "|" (bench/run.sh reads them).
# Runs under `flock /tmp/edge-bench.lock` so that benchmarks never overlap; a caller that
# already holds the lock sets EDGE_BENCH_LOCKED=1.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
hold_bench_lock "$@"
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
EDGE=${EDGE:-$(dirname "$PYTHON")/edge-proxy}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-2}
CONNECTIONS=${CONNECTIONS:-64}
WORKERS=${WORKERS:-1}
EDGE_PORT=${EDGE_PORT:-18443}
NGINX_PORT=${NGINX_PORT:-18444}
UPSTREAM_PORT=${UPSTREAM_PORT:-18081}
ADMIN_PORT=${ADMIN_PORT:-18900}
RESULTS=${RESULTS:-}
FLOOR=${FLOOR:-0}
FLOOR_PORT=${FLOOR_PORT:-18445}
ONE_PORT=${ONE_PORT:-0}
ONE_PORT_PORT=${ONE_PORT_PORT:-18446}
ACCESS=${ACCESS:-0}
ACCESS_PORT=${ACCESS_PORT:-18447}
ACCESS_ADMIN_PORT=${ACCESS_ADMIN_PORT:-18901}
PURE=${PURE:-0}
PURE_PORT=${PURE_PORT:-18448}
PURE_ADMIN_PORT=${PURE_ADMIN_PORT:-18902}

ensure_installed wrk nginx

workdir=$(mktemp -d /tmp/edge-https-bench.XXXXXX)
chmod 755 "$workdir"  # nginx workers (not root) read the static files
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$workdir"
}
trap cleanup EXIT

pin_cpus "$WORKERS"
ports_free "UPSTREAM_PORT, NGINX_PORT, EDGE_PORT or ADMIN_PORT" "$UPSTREAM_PORT" "$NGINX_PORT" "$EDGE_PORT" "$ADMIN_PORT" \
    "$FLOOR_PORT" "$ONE_PORT_PORT" "$ACCESS_PORT" "$ACCESS_ADMIN_PORT" "$PURE_PORT" "$PURE_ADMIN_PORT"

# --- the shared certificate, the static files and both nginx configurations -------------------

one_port_args=()
if [ "$ONE_PORT" = 1 ]; then one_port_args=(--one-port-port "$ONE_PORT_PORT"); fi
if [ "$ACCESS" = 1 ]; then one_port_args+=(--access-port "$ACCESS_PORT" --access-admin-port "$ACCESS_ADMIN_PORT"); fi
if [ "$PURE" = 1 ]; then one_port_args+=(--pure-port "$PURE_PORT" --pure-admin-port "$PURE_ADMIN_PORT"); fi
"$PYTHON" "$HERE/https_edge.py" setup "$workdir/edge" --port "$EDGE_PORT" --upstream-port "$UPSTREAM_PORT" \
    --admin-port "$ADMIN_PORT" --workers "$WORKERS" "${one_port_args[@]}"
cert="$workdir/edge/cert"
write_upstream "$workdir" "$UPSTREAM_PORT"
mkdir -p "$workdir/proxy/logs"
common_http='access_log off; keepalive_requests 1000000; keepalive_timeout 75s;'
# nginx's TLS session defaults stay as they are: ssl_session_cache none and ssl_session_tickets on,
# so it resumes TLS 1.3 sessions with tickets, as edge-proxy does with OpenSSL's defaults.
cat >"$workdir/proxy/nginx.conf" <<EOF
worker_processes $WORKERS;
pid $workdir/proxy/nginx.pid;
error_log $workdir/proxy/logs/error.log warn;
events { worker_connections 4096; }
http {
    $common_http
    upstream backend {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT ssl;
        ssl_certificate $cert/tls.crt;
        ssl_certificate_key $cert/tls.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers ECDHE+AESGCM:ECDHE+CHACHA20;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto https;
            proxy_set_header X-Forwarded-Host \$host;
            # Room for a whole 64 KiB answer in memory: no temp files on nginx's side.
            proxy_buffer_size 16k;
            proxy_buffers 8 16k;
        }
    }
}
EOF

# --- start the upstream and both proxies --------------------------------------------------------

"${load_cpu[@]}" nginx -p "$workdir/upstream" -c "$workdir/upstream/nginx.conf" -g "daemon off;" &
pids+=($!)
"${proxy_cpu[@]}" nginx -p "$workdir/proxy" -c "$workdir/proxy/nginx.conf" -g "daemon off;" &
nginx_pid=$!
pids+=("$nginx_pid")
(cd "$workdir/edge" && exec "${proxy_cpu[@]}" "$EDGE" run --config edge.toml 2>"$workdir/edge.log") &
edge_pid=$!
pids+=("$edge_pid")
targets=(edge nginx)
if [ "$FLOOR" = 1 ]; then
    "${proxy_cpu[@]}" "$PYTHON" "$HERE/https_floor.py" --port "$FLOOR_PORT" --upstream-port "$UPSTREAM_PORT" \
        --cert "$cert/tls.crt" --key "$cert/tls.key" &
    floor_pid=$!
    pids+=("$floor_pid")
    wait_for_port "$FLOOR_PORT"
    targets+=(floor)
fi
if [ "$ONE_PORT" = 1 ]; then
    targets+=(oneport)
    wait_for_port "$ONE_PORT_PORT"
fi
if [ "$ACCESS" = 1 ]; then
    (cd "$workdir/edge" && exec "${proxy_cpu[@]}" "$EDGE" run --config edge-access.toml 2>"$workdir/edge-access.log") &
    access_pid=$!
    pids+=("$access_pid")
    targets+=(access)
    wait_for_port "$ACCESS_PORT"
fi
if [ "$PURE" = 1 ]; then
    (cd "$workdir/edge" && EDGE_PROXY_NO_EXTENSIONS=1 exec "${proxy_cpu[@]}" "$EDGE" run --config edge-pure.toml 2>"$workdir/edge-pure.log") &
    pure_pid=$!
    pids+=("$pure_pid")
    targets+=(pure)
    wait_for_port "$PURE_PORT"
fi
for port in "$UPSTREAM_PORT" "$NGINX_PORT" "$EDGE_PORT"; do wait_for_port "$port"; done
sleep 1  # with several workers, give the others time to bind their SO_REUSEPORT sockets

# CPU ticks (user + system) of a process and its children: nginx's and edge-proxy's workers.
ticks() {
    local total=0 pid
    for pid in "$1" $(pgrep -P "$1" || true); do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
    done
    echo "$total"
}
hz=$(getconf CLK_TCK)

# wrk's 99th percentile latency, in milliseconds.
p99_ms() {
    awk '$1 == "99%" {
        v = $2; unit = v; sub(/[0-9.]+/, "", unit); sub(/[a-z]+$/, "", v)
        if (unit == "us") v /= 1000; else if (unit == "s") v *= 1000; else if (unit == "m") v *= 60000
        print v
    }'
}

declare -A requests seconds cpu p99 runs
run() {  # run SCENARIO TARGET PID PORT PATH [wrk args...]
    local scenario=$1 target=$2 pid=$3 port=$4 path=$5
    shift 5
    local before after out
    before=$(ticks "$pid")
    out=$("${load_cpu[@]}" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "$@" "https://127.0.0.1:$port$path")
    after=$(ticks "$pid")
    if grep -qE "Non-2xx|Socket errors" <<<"$out"; then
        echo "warning: $target, $scenario: $(grep -E 'Non-2xx|Socket errors' <<<"$out" | tr -s ' ')" >&2
    fi
    local count secs
    read -r count secs < <(awk '/requests in/ {gsub("s,", "", $4); print $1, $4}' <<<"$out")
    local key="$scenario|$target"
    requests[$key]=$((${requests[$key]:-0} + count))
    seconds[$key]=$(awk -v a="${seconds[$key]:-0}" -v b="$secs" 'BEGIN {print a + b}')
    cpu[$key]=$((${cpu[$key]:-0} + after - before))
    p99[$key]=$(awk -v a="${p99[$key]:-0}" -v b="$(p99_ms <<<"$out")" 'BEGIN {print a + b}')
    runs[$key]=$((${runs[$key]:-0} + 1))
}

scenarios=("keep-alive 100 B|/100b|" "keep-alive 64 KiB|/64k|" "new TLS connection per request|/100b|Connection: close")
echo "warming up..." >&2
DURATION=2s run warmup edge "$edge_pid" "$EDGE_PORT" /100b
DURATION=2s run warmup nginx "$nginx_pid" "$NGINX_PORT" /100b
if [ "$FLOOR" = 1 ]; then DURATION=2s run warmup floor "$floor_pid" "$FLOOR_PORT" /100b; fi
if [ "$ONE_PORT" = 1 ]; then DURATION=2s run warmup oneport "$edge_pid" "$ONE_PORT_PORT" /100b; fi
if [ "$ACCESS" = 1 ]; then DURATION=2s run warmup access "$access_pid" "$ACCESS_PORT" /100b; fi
if [ "$PURE" = 1 ]; then DURATION=2s run warmup pure "$pure_pid" "$PURE_PORT" /100b; fi
for round in $(seq "$ROUNDS"); do
    if [ $((round % 2)) -eq 1 ]; then order=("${targets[@]}"); else order=(); for t in "${targets[@]}"; do order=("$t" "${order[@]}"); done; fi
    for entry in "${scenarios[@]}"; do
        IFS='|' read -r scenario path header <<<"$entry"
        for target in "${order[@]}"; do
            case $target in
                edge) pid=$edge_pid port=$EDGE_PORT ;;
                nginx) pid=$nginx_pid port=$NGINX_PORT ;;
                floor) pid=$floor_pid port=$FLOOR_PORT ;;
                oneport) pid=$edge_pid port=$ONE_PORT_PORT ;;
                access) pid=$access_pid port=$ACCESS_PORT ;;
                pure) pid=$pure_pid port=$PURE_PORT ;;
            esac
            echo "round $round: $scenario: $target" >&2
            if [ -n "$header" ]; then
                run "$scenario" "$target" "$pid" "$port" "$path" -H "$header"
            else
                run "$scenario" "$target" "$pid" "$port" "$path"
            fi
        done
    done
done

echo
echo "$(date -u +%Y-%m-%d), nproc $cpus, workers $WORKERS each, $(nginx -v 2>&1 | sed 's/.*: //'), $($PYTHON -V)," \
    "wrk -t1 -c$CONNECTIONS -d$DURATION x $ROUNDS rounds"
echo
echo "| scenario | edge-proxy req/s | nginx req/s | req/s ours/nginx | edge-proxy CPU us/req | nginx CPU us/req | CPU ours/nginx | edge-proxy p99 ms | nginx p99 ms | p99 ours/nginx |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for entry in "${scenarios[@]}"; do
    IFS='|' read -r scenario _ _ <<<"$entry"
    e="$scenario|edge" n="$scenario|nginx"
    awk -v s="$scenario" -v w="$WORKERS" -v out="$RESULTS" -v hz="$hz" \
        -v er="${requests[$e]}" -v es="${seconds[$e]}" -v ec="${cpu[$e]}" -v el="${p99[$e]}" -v en="${runs[$e]}" \
        -v nr="${requests[$n]}" -v ns="${seconds[$n]}" -v nc="${cpu[$n]}" -v nl="${p99[$n]}" -v nn="${runs[$n]}" 'BEGIN {
        erps = er / es; nrps = nr / ns
        ecpu = ec / hz / er * 1e6; ncpu = nc / hz / nr * 1e6
        ep99 = el / en; np99 = nl / nn
        printf "| %s | %.0f | %.0f | %.2fx | %.1f | %.1f | %.2fx | %.2f | %.2f | %.2fx |\n", s, erps, nrps, erps / nrps, ecpu, ncpu, ecpu / ncpu, ep99, np99, ep99 / np99
        if (out != "") {
            printf "https|%s|%s|req/s|%.0f|%.0f\n", w, s, erps, nrps >> out
            printf "https|%s|%s|CPU us/req|%.1f|%.1f\n", w, s, ecpu, ncpu >> out
            printf "https|%s|%s|p99 ms|%.2f|%.2f\n", w, s, ep99, np99 >> out
        }
    }'
done
if [ "$FLOOR" = 1 ]; then
    echo
    echo "The floor: a bare TLS byte relay on the same stack (bench/https_floor.py), CPU us per request"
    echo
    echo "| scenario | bare relay | nginx | relay/nginx | edge-proxy | edge-proxy above the relay |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: |"
    for entry in "${scenarios[@]}"; do
        IFS='|' read -r scenario _ _ <<<"$entry"
        e="$scenario|edge" n="$scenario|nginx" f="$scenario|floor"
        awk -v s="$scenario" -v hz="$hz" -v er="${requests[$e]}" -v ec="${cpu[$e]}" -v nr="${requests[$n]}" -v nc="${cpu[$n]}" \
            -v fr="${requests[$f]}" -v fc="${cpu[$f]}" 'BEGIN {
            ecpu = ec / hz / er * 1e6; ncpu = nc / hz / nr * 1e6; fcpu = fc / hz / fr * 1e6
            printf "| %s | %.1f | %.1f | %.2fx | %.1f | %.1f |\n", s, fcpu, ncpu, fcpu / ncpu, ecpu, ecpu - fcpu
        }'
    done
fi
if [ "$ONE_PORT" = 1 ]; then
    echo
    echo "HTTP/1.1 on a port that also serves gRPC (grpc_upstream) against the plain HTTPS listener, same edge process"
    echo
    echo "| scenario | plain req/s | one port req/s | req/s one port/plain | plain CPU us/req | one port CPU us/req | CPU one port/plain |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    for entry in "${scenarios[@]}"; do
        IFS='|' read -r scenario _ _ <<<"$entry"
        e="$scenario|edge" o="$scenario|oneport"
        awk -v s="$scenario" -v hz="$hz" -v er="${requests[$e]}" -v es="${seconds[$e]}" -v ec="${cpu[$e]}" \
            -v pr="${requests[$o]}" -v ps="${seconds[$o]}" -v pc="${cpu[$o]}" 'BEGIN {
            erps = er / es; orps = pr / ps; ecpu = ec / hz / er * 1e6; ocpu = pc / hz / pr * 1e6
            printf "| %s | %.0f | %.0f | %.2fx | %.1f | %.1f | %.2fx |\n", s, erps, orps, orps / erps, ecpu, ocpu, ocpu / ecpu
        }'
    done
fi
if [ "$PURE" = 1 ]; then
    echo
    echo "The pure-Python HTTP/1.1 engine (a second edge process with EDGE_PROXY_NO_EXTENSIONS=1) against the compiled one"
    echo
    echo "| scenario | pure req/s | compiled req/s | req/s compiled/pure | pure CPU us/req | compiled CPU us/req | CPU compiled/pure | pure above the relay | compiled above the relay |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    for entry in "${scenarios[@]}"; do
        IFS='|' read -r scenario _ _ <<<"$entry"
        e="$scenario|edge" u="$scenario|pure" f="$scenario|floor"
        awk -v s="$scenario" -v hz="$hz" -v er="${requests[$e]}" -v es="${seconds[$e]}" -v ec="${cpu[$e]}" \
            -v ur="${requests[$u]}" -v us="${seconds[$u]}" -v uc="${cpu[$u]}" -v fr="${requests[$f]:-0}" -v fc="${cpu[$f]:-0}" 'BEGIN {
            erps = er / es; urps = ur / us; ecpu = ec / hz / er * 1e6; ucpu = uc / hz / ur * 1e6
            if (fr > 0) { fcpu = fc / hz / fr * 1e6; ua = sprintf("%.1f", ucpu - fcpu); ea = sprintf("%.1f", ecpu - fcpu) } else { ua = "-"; ea = "-" }
            printf "| %s | %.0f | %.0f | %.2fx | %.1f | %.1f | %.2fx | %s | %s |\n", s, urps, erps, erps / urps, ucpu, ecpu, ecpu / ucpu, ua, ea
        }'
    done
fi
if [ "$ACCESS" = 1 ]; then
    echo
    echo "The JSON access log (a second edge process with access = \"json\" to a file) against the same edge without it"
    echo
    echo "| scenario | off req/s | json req/s | req/s json/off | off CPU us/req | json CPU us/req | CPU json/off |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    for entry in "${scenarios[@]}"; do
        IFS='|' read -r scenario _ _ <<<"$entry"
        e="$scenario|edge" a="$scenario|access"
        awk -v s="$scenario" -v hz="$hz" -v er="${requests[$e]}" -v es="${seconds[$e]}" -v ec="${cpu[$e]}" \
            -v ar="${requests[$a]}" -v as="${seconds[$a]}" -v ac="${cpu[$a]}" 'BEGIN {
            erps = er / es; arps = ar / as; ecpu = ec / hz / er * 1e6; acpu = ac / hz / ar * 1e6
            printf "| %s | %.0f | %.0f | %.2fx | %.1f | %.1f | %.2fx |\n", s, erps, arps, arps / erps, ecpu, acpu, acpu / ecpu
        }'
    done
    echo "access log: $(wc -l <"$workdir/edge/access.log") lines; the last:" >&2
    tail -1 "$workdir/edge/access.log" >&2
fi
if [ -s "$workdir/edge.log" ]; then
    echo "edge-proxy logged $(wc -l <"$workdir/edge.log") line(s); the last ones:" >&2
    tail -5 "$workdir/edge.log" >&2
fi
