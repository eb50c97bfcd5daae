#!/usr/bin/env bash
# Question: does a binary restart (`ringmesh upgrade`) cost a running load anything?
#
# wrk drives keep-alive HTTP requests through ringmesh to an nginx backend
# while ringmesh is restarted RESTARTS times (default 10) with `ringmesh
# upgrade`: each time a new process takes over the listening sockets (SCM_RIGHTS)
# and the old one drains and exits. The bar: zero socket errors and zero
# non-2xx in wrk's output, every upgrade accepted, and exactly one ringmesh
# left at the end, serving.
#
#   bench/restart_under_load.sh                      release build, 10 restarts
#   RINGMESH_BIN=path bench/restart_under_load.sh    use that binary (no build)
#   RESTARTS=3 CONNS=20 bench/restart_under_load.sh
#
# Loopback only; bounded (wrk at most DURATION seconds, default 90). Every
# process it starts (nginx, wrk, each ringmesh generation) is stopped by PID.

set -u
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
RESTARTS="${RESTARTS:-10}"
CONNS="${CONNS:-50}"
DURATION="${DURATION:-90}"
PIDS=()
TMP="$(mktemp -d /tmp/ringmesh-restart.XXXXXX)"

cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    sleep 0.2
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

die() { echo "restart_under_load: $*" >&2; exit 2; }
for t in wrk nginx curl python3; do command -v "$t" >/dev/null || die "$t is not installed"; done
ulimit -n 20000 2>/dev/null || true

if [ -z "${RINGMESH_BIN:-}" ]; then
    (cd "$REPO" && cargo build --release --quiet) || die "cargo build failed"
    RINGMESH_BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/ringmesh"
fi
[ -x "$RINGMESH_BIN" ] || die "no binary at $RINGMESH_BIN"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}
api_pid() { curl -s "http://127.0.0.1:$API/api/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])' 2>/dev/null; }
alive() { kill -0 "$1" 2>/dev/null && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }

BACKEND=$(free_port); PORT=$(free_port); API=$(free_port)
mkdir -p "$TMP/nginx"
cat > "$TMP/nginx/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$BACKEND;
        location / { return 200 "hello from the backend\n"; }
    }
}
NGINX
nginx -p "$TMP/nginx/" -c "$TMP/nginx/nginx.conf" &
PIDS+=($!)
wait_port "$BACKEND" || die "nginx did not start"

cat > "$TMP/config.json" <<JSON
{"dashboard_port": "$API", "listen_host": "127.0.0.1", "workers": 2, "shutdown_grace": "20s",
 "routes": {"$PORT": {"name": "main", "protocol": "http",
   "backends": [{"name": "nginx", "internal_host": "127.0.0.1", "internal_port": "$BACKEND"}]}}}
JSON
"$RINGMESH_BIN" run --config "$TMP/config.json" --log info 2> "$TMP/ringmesh.log" &
FIRST=$!
PIDS+=($FIRST)
RMS=($FIRST)
wait_port "$PORT" && wait_port "$API" || die "ringmesh did not start: $(cat "$TMP/ringmesh.log")"
curl -fsS "http://127.0.0.1:$PORT/" >/dev/null || die "no response through ringmesh"

echo "ringmesh $("$RINGMESH_BIN" --version | cut -d' ' -f2) ($RINGMESH_BIN), first pid $FIRST; nginx :$BACKEND; route :$PORT; API :$API"
echo "wrk: 2 threads, $CONNS connections, keep-alive, up to ${DURATION}s; $RESTARTS restarts"
wrk -t2 -c"$CONNS" -d"${DURATION}s" --timeout 10s --latency "http://127.0.0.1:$PORT/" > "$TMP/wrk.txt" 2>&1 &
WRK=$!
PIDS+=($WRK)
sleep 1

ok=0; bad=0; deadline=$(( $(date +%s) + DURATION - 5 ))
for i in $(seq 1 "$RESTARTS"); do
    [ "$(date +%s)" -ge "$deadline" ] && { echo "deadline reached after $((i-1)) restarts"; break; }
    old=$(api_pid)
    if out=$("$RINGMESH_BIN" upgrade --config "$TMP/config.json" 2>&1); then
        new=$(echo "$out" | awk '/^upgraded: pid/ {print $3}')
        PIDS+=($new)
        RMS+=($new)
        # The old process drains and exits on its own (bounded wait).
        for _ in $(seq 1 300); do alive "$old" || break; sleep 0.05; done
        if alive "$old"; then bad=$((bad+1)); echo "restart #$i: old pid $old still running"
        else ok=$((ok+1)); echo "restart #$i: pid $old -> $new (old exited)"; fi
    else
        bad=$((bad+1)); echo "restart #$i failed: $out"
    fi
    sleep 0.5
done
kill -INT "$WRK" 2>/dev/null
wait "$WRK" 2>/dev/null
cat "$TMP/wrk.txt"

last=$(api_pid)
running=0
for p in "${RMS[@]}"; do alive "$p" && running=$((running+1)); done
echo "ringmesh processes left: $running (serving pid $last)"
sock=$(grep -c "Socket errors" "$TMP/wrk.txt")
non2xx=$(grep -c "Non-2xx" "$TMP/wrk.txt")
reqs=$(awk '/requests in/ {print $1}' "$TMP/wrk.txt")
if [ "$sock" = 0 ] && [ "$non2xx" = 0 ] && [ "$bad" = 0 ] && [ "$ok" = "$RESTARTS" ] && [ "$running" = 1 ] && [ -n "$reqs" ] && [ "$reqs" -gt 0 ]; then
    echo "BAR MET: $ok restarts under load, $reqs requests, 0 socket errors, 0 non-2xx"
else
    echo "BAR MISSED: socket-error lines $sock, non-2xx lines $non2xx, restarts ok $ok / failed $bad, processes left $running"
    grep -iE "error|warn" "$TMP/ringmesh.log" | tail -20
    exit 1
fi
