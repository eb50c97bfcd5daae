#!/usr/bin/env bash
# Question: does a hot reload cost a running load anything?
#
# wrk drives keep-alive HTTP requests through ringmesh to an nginx backend on
# an unchanged route while the config is reloaded RELOADS times (default 100),
# alternating between adding and removing a second route, through all three
# doors in turn: PUT /api/config, SIGHUP, `ringmesh reload`. The bar: zero
# socket errors and zero non-2xx in wrk's output, and every reload accepted.
#
#   bench/reload_under_load.sh                  release build, 100 reloads
#   RINGMESH_BIN=path bench/reload_under_load.sh   use that binary (no build)
#   RELOADS=20 CONNS=20 bench/reload_under_load.sh
#
# Loopback only; bounded (wrk runs at most DURATION seconds, default 60; the
# reload loop stops at the same deadline). Every process it starts is stopped
# by PID on exit. Exit status 0 only when the bar is met.

set -u
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
RELOADS="${RELOADS:-100}"
CONNS="${CONNS:-50}"
DURATION="${DURATION:-60}"
PIDS=()
TMP="$(mktemp -d /tmp/ringmesh-reload.XXXXXX)"

cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

die() { echo "reload_under_load: $*" >&2; exit 2; }
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

BACKEND=$(free_port); PORT=$(free_port); EXTRA=$(free_port); API=$(free_port)

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
wait_port "$BACKEND" || die "nginx did not start: $(cat "$TMP/nginx/error.log")"

route() { # port name
    echo "\"$1\": {\"name\": \"$2\", \"protocol\": \"http\", \"backends\": [{\"name\": \"nginx\", \"internal_host\": \"127.0.0.1\", \"internal_port\": \"$BACKEND\"}]}"
}
config() { # extra-route?
    local extra=""
    [ "$1" = 1 ] && extra=", $(route "$EXTRA" extra)"
    echo "{\"dashboard_port\": \"$API\", \"listen_host\": \"127.0.0.1\", \"workers\": 2, \"routes\": {$(route "$PORT" main)$extra}}"
}
config 0 > "$TMP/a.json"
config 1 > "$TMP/b.json"
cp "$TMP/a.json" "$TMP/config.json"

"$RINGMESH_BIN" run --config "$TMP/config.json" --log warn 2> "$TMP/ringmesh.log" &
RM=$!
PIDS+=($RM)
wait_port "$PORT" && wait_port "$API" || die "ringmesh did not start: $(cat "$TMP/ringmesh.log")"
curl -fsS "http://127.0.0.1:$PORT/" >/dev/null || die "no response through ringmesh"

echo "ringmesh $("$RINGMESH_BIN" --version | cut -d' ' -f2) ($RINGMESH_BIN), pid $RM; nginx backend :$BACKEND; route :$PORT; API :$API"
echo "wrk: 2 threads, $CONNS connections, keep-alive, up to ${DURATION}s; $RELOADS reloads"
wrk -t2 -c"$CONNS" -d"${DURATION}s" --timeout 10s --latency "http://127.0.0.1:$PORT/" > "$TMP/wrk.txt" 2>&1 &
WRK=$!
PIDS+=($WRK)
sleep 1

ok=0; bad=0; start=$(date +%s.%N); deadline=$(( $(date +%s) + DURATION - 3 ))
for i in $(seq 1 "$RELOADS"); do
    [ "$(date +%s)" -ge "$deadline" ] && { echo "deadline reached after $((i-1)) reloads"; break; }
    f="$TMP/a.json"; [ $((i % 2)) = 1 ] && f="$TMP/b.json"
    case $((i % 3)) in
        0)  # PUT /api/config: validated, written, applied; answers when every worker has it
            code=$(curl -s -o "$TMP/put.out" -w '%{http_code}' -X PUT --data-binary @"$f" "http://127.0.0.1:$API/api/config")
            [ "$code" = 200 ] && ok=$((ok+1)) || { bad=$((bad+1)); echo "PUT #$i: $code $(cat "$TMP/put.out")"; } ;;
        1)  # SIGHUP: re-read the file; wait until the API reports the new generation
            cp "$f" "$TMP/config.json"
            before=$(curl -s "http://127.0.0.1:$API/api/status" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("generation",0))')
            kill -HUP "$RM"
            for _ in $(seq 1 100); do
                now=$(curl -s "http://127.0.0.1:$API/api/status" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("generation",0))')
                [ "$now" != "$before" ] && break
                sleep 0.02
            done
            [ "$now" != "$before" ] && ok=$((ok+1)) || { bad=$((bad+1)); echo "SIGHUP #$i: generation stayed $before"; } ;;
        2)  # the CLI: asks the running process to re-read its file
            cp "$f" "$TMP/config.json"
            if "$RINGMESH_BIN" reload --config "$TMP/config.json" > "$TMP/cli.out" 2>&1; then ok=$((ok+1))
            else bad=$((bad+1)); echo "ringmesh reload #$i: $(cat "$TMP/cli.out")"; fi ;;
    esac
done
elapsed=$(python3 -c "import time; print(f'{time.time()-$start:.1f}')")
echo "reloads: $ok accepted, $bad failed, in ${elapsed}s"
kill -INT "$WRK" 2>/dev/null   # wrk prints its summary on SIGINT
wait "$WRK" 2>/dev/null
cat "$TMP/wrk.txt"
kill -0 "$RM" 2>/dev/null || { echo "ringmesh died: $(tail -20 "$TMP/ringmesh.log")"; exit 1; }

sock=$(grep -c "Socket errors" "$TMP/wrk.txt")
non2xx=$(grep -c "Non-2xx" "$TMP/wrk.txt")
reqs=$(awk '/requests in/ {print $1}' "$TMP/wrk.txt")
if [ "$sock" = 0 ] && [ "$non2xx" = 0 ] && [ "$bad" = 0 ] && [ "$ok" -ge 1 ] && [ -n "$reqs" ] && [ "$reqs" -gt 0 ]; then
    echo "BAR MET: $ok reloads under load, $reqs requests, 0 socket errors, 0 non-2xx"
else
    echo "BAR MISSED: socket-error lines $sock, non-2xx lines $non2xx, failed reloads $bad"
    grep -iE "error|warn" "$TMP/ringmesh.log" | tail -20
    exit 1
fi
