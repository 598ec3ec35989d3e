# Shell pieces the benchmarks share (sourced by bench/https.sh, bench/access.sh and bench/instructions.sh).
# Only 127.0.0.1 is used.

# hold_bench_lock "$@" (first thing after sourcing this file): runs the calling script again under
# `flock /tmp/edge-bench.lock` so that benchmarks never overlap; a caller that already holds the
# lock sets EDGE_BENCH_LOCKED=1.
hold_bench_lock() {
    if [ -z "${EDGE_BENCH_LOCKED:-}" ]; then
        EDGE_BENCH_LOCKED=1 exec flock /tmp/edge-bench.lock bash "$0" "$@"
    fi
}

# ensure_installed COMMAND[=PACKAGE]...: installs (apt) the packages of the commands not found.
ensure_installed() {
    local wanted=() item
    for item in "$@"; do
        command -v "${item%%=*}" >/dev/null || wanted+=("${item#*=}")
    done
    [ ${#wanted[@]} -eq 0 ] && return 0
    apt-get install -y "${wanted[@]}" || { apt-get update && apt-get install -y "${wanted[@]}"; }
}

# pin_cpus WORKERS: proxy_cpu=(taskset -c 0) and load_cpu=(taskset -c 1-N) when one worker runs
# on a machine of two or more cores, so the proxies under test share core 0 and the load
# generator and upstream get the rest; empty (nothing pinned) otherwise.
pin_cpus() {
    cpus=$(nproc)
    if [ "$1" -eq 1 ] && [ "$cpus" -ge 2 ] && command -v taskset >/dev/null; then
        proxy_cpu=(taskset -c 0)
        load_cpu=(taskset -c "1-$((cpus - 1))")
    else
        proxy_cpu=()
        load_cpu=()
    fi
}

# wait_for_port PORT [SECONDS]: up to SECONDS (10) for something to listen on 127.0.0.1:PORT, else exit 1.
wait_for_port() {
    for _ in $(seq $((${2:-10} * 10))); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on 127.0.0.1:$1" >&2
    exit 1
}

# ports_free HINT PORT...: exit 1, naming the port and HINT (the variables that move it), when
# something already listens on one of them.
ports_free() {
    local hint=$1 port
    shift
    for port in "$@"; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "127.0.0.1:$port is already in use; set $hint" >&2
            exit 1
        fi
    done
}

# write_upstream WORKDIR PORT: the static files (100 B, 64 KiB) in WORKDIR/www and the
# configuration of the upstream nginx that serves them on PORT in WORKDIR/upstream.
write_upstream() {
    local workdir=$1 port=$2
    mkdir -p "$workdir/www" "$workdir/upstream/logs"
    head -c 100 /dev/zero | tr '\0' 'a' >"$workdir/www/100b"
    head -c 65536 /dev/zero | tr '\0' 'b' >"$workdir/www/64k"
    chmod 644 "$workdir/www/"*
    cat >"$workdir/upstream/nginx.conf" <<EOF
worker_processes 1;
pid $workdir/upstream/nginx.pid;
error_log $workdir/upstream/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off; keepalive_requests 1000000; keepalive_timeout 75s;
    server {
        listen 127.0.0.1:$port;
        root $workdir/www;
        location / { default_type application/octet-stream; }
    }
}
EOF
}
