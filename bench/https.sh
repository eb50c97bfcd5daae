#!/usr/bin/env bash
# HTTPS termination side by side: ringmesh, nginx and HAProxy each terminate
# TLS 1.3 with the same ECDSA P-256 certificate on CPU 0 (one worker / thread)
# in front of one nginx backend on CPU 1; wrk (HTTPS keep-alive, 32
# connections) runs on CPU 1. Prints proxy CPU time per request from
# /proc/<pid>/stat (user + system), the steadiest figure on a shared machine.
#
#   bench/https.sh [--bin target/release/ringmesh] [--base BIN] [--duration 8] [--reps 2] [--idle 2000] [--h2]
#
# --base BIN: a second one-worker ringmesh from another binary (an A/B in the
# same run), measured beside the first as "base" in the keep-alive and
# handshake cases.
#
# Cases:
#   /  and /64k   small body (12 bytes) and 64 KiB, keep-alive (wrk, 32 connections)
#   full hs       a new TLS 1.3 connection each time (openssl s_time -new),
#                 one request on it: proxy CPU per full handshake
#   resumed hs    reconnects resuming the session (openssl s_time -reuse)
#   resumption    200 reconnects offering the last session (bench/tls_resume.py)
#                 to a second ringmesh with 2 workers (reconnects land on either
#                 worker), and to nginx and HAProxy: share resumed
#   idle          --idle TLS keep-alive connections, one request each, held
#                 (bench/idle_conns.py --tls): RSS growth per connection
# With --h2, only / and /64k, over HTTP/2 chosen by ALPN: h2load, 64
# connections x 10 streams (issue 13's case); nginx `listen ... ssl http2`,
# HAProxy `alpn h2,http/1.1`, ringmesh offers h2 by default (needs h2load).
# Backend connection reuse is the same for all three: HAProxy reuses without a
# cap (http-reuse always), so ringmesh's pool (upstream_keepalive.max_idle)
# and nginx's (keepalive) hold up to 1024 idle connections; with h2's 640
# concurrent streams a 64-connection pool made both reconnect for most requests.
# Every process this script starts is stopped by PID on exit. Needs: nginx,
# haproxy, wrk, openssl, python3.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BIN="$HERE/../target/release/ringmesh"
DUR=8
REPS=2
IDLE=2000
H2=0
BASE=""
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) BIN="$2"; shift 2 ;;
        --base) BASE="$2"; shift 2 ;;
        --duration) DUR="$2"; shift 2 ;;
        --reps) REPS="$2"; shift 2 ;;
        --idle) IDLE="$2"; shift 2 ;;
        --h2) H2=1; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
export PATH="$PATH:/usr/sbin:/sbin"
[ -x "$BIN" ] || { echo "no ringmesh binary at $BIN (cargo build --release)" >&2; exit 1; }
# The script works in a temporary directory: binaries by absolute path.
BIN="$(readlink -f "$BIN")"
[ -n "$BASE" ] && BASE="$(readlink -f "$BASE")"
T="$(mktemp -d)"
# nginx workers run as an unprivileged user: they must read the body files.
chmod 755 "$T"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$T"
}
trap cleanup EXIT

BACK=28181 RM=28443 NG=28444 HP=28445 RM2=28446 RMB=28447
cd "$T"
openssl ecparam -name prime256v1 -genkey -noout -out ca.key 2>/dev/null
openssl req -x509 -new -key ca.key -subj /CN=bench-ca -days 2 -out ca.pem 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out key.pem 2>/dev/null
openssl req -new -key key.pem -subj /CN=localhost -out c.csr 2>/dev/null
printf "subjectAltName=DNS:localhost,IP:127.0.0.1\n" > c.ext
openssl x509 -req -in c.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile c.ext -out c.crt 2>/dev/null
cat c.crt ca.pem > cert.pem
cat cert.pem key.pem > haproxy.pem
mkdir -m 755 www && head -c 65536 /dev/urandom > www/64k && chmod 644 www/64k

cat > backend.conf <<EOF
worker_processes 1; daemon off; pid $T/backend.pid; error_log $T/backend.err;
events { worker_connections 4096; }
http { access_log off;
  server { listen 127.0.0.1:$BACK; location / { return 200 "hello world\n"; } location /64k { root $T/www; } } }
EOF
NGH2="" HPH2=""
if [ "$H2" = 1 ]; then NGH2=" http2"; HPH2=" alpn h2,http/1.1"; fi
cat > front.conf <<EOF
worker_processes 1; daemon off; pid $T/front.pid; error_log $T/front.err;
events { worker_connections 4096; }
http { access_log off;
  upstream b { server 127.0.0.1:$BACK; keepalive 1024; }
  server { listen 127.0.0.1:$NG ssl$NGH2; ssl_certificate $T/cert.pem; ssl_certificate_key $T/key.pem;
    ssl_protocols TLSv1.3; ssl_session_cache shared:S:10m;
    location / { proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
EOF
cat > haproxy.cfg <<EOF
global
  nbthread 1
  ssl-default-bind-options ssl-min-ver TLSv1.3
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend f
  bind 127.0.0.1:$HP ssl crt $T/haproxy.pem$HPH2
  default_backend b
backend b
  http-reuse always
  server s 127.0.0.1:$BACK
EOF
cat > ringmesh.json <<EOF
{"listen_host": "127.0.0.1", "workers": 1, "dashboard_port": "", "upstream_keepalive": {"max_idle": 1024},
 "routes": {"$RM": {"name": "web", "tls": {"certificates": [{"cert": "cert.pem", "key": "key.pem"}], "min_version": "1.3"},
   "backends": [{"name": "b", "internal_host": "127.0.0.1", "internal_port": "$BACK"}]}}}
EOF

cat > ringmesh2.json <<EOF
{"listen_host": "127.0.0.1", "workers": 2, "dashboard_port": "", "upstream_keepalive": {"max_idle": 1024},
 "routes": {"$RM2": {"name": "web2", "tls": {"certificates": [{"cert": "cert.pem", "key": "key.pem"}], "min_version": "1.3"},
   "backends": [{"name": "b", "internal_host": "127.0.0.1", "internal_port": "$BACK"}]}}}
EOF

taskset -c 1 nginx -c "$T/backend.conf" >/dev/null 2>&1 & PIDS+=($!)
taskset -c 0 nginx -c "$T/front.conf" >/dev/null 2>&1 & PIDS+=($!)
taskset -c 0 haproxy -f "$T/haproxy.cfg" >/dev/null 2>&1 & PIDS+=($!)
HAP=$!
taskset -c 0 "$BIN" run --config "$T/ringmesh.json" --log warn >"$T/ringmesh.log" 2>&1 </dev/null & PIDS+=($!)
RMPID=$!
"$BIN" run --config "$T/ringmesh2.json" --log warn >"$T/ringmesh2.log" 2>&1 </dev/null & PIDS+=($!)
RMBPID=""
if [ -n "$BASE" ]; then
    sed "s/\"$RM\"/\"$RMB\"/" "$T/ringmesh.json" > "$T/ringmesh-base.json"
    taskset -c 0 "$BASE" run --config "$T/ringmesh-base.json" --log warn >"$T/ringmesh-base.log" 2>&1 </dev/null & PIDS+=($!)
    RMBPID=$!
fi
sleep 2
NGW=$(pgrep -P "$(cat "$T/front.pid")" | head -1)

# load DURATION URL: runs the client (wrk, or h2load with --h2); prints its output.
load() {
    if [ "$H2" = 1 ]; then
        taskset -c 1 h2load -D "$1" -c 64 -m 10 -t 1 "$2"
    else
        taskset -c 1 wrk -t1 -c32 -d"${1}s" "$2"
    fi
}

# measure LABEL PORT PID PATH
measure() {
    load 2 "https://127.0.0.1:$2$4" >/dev/null
    local t0 t1 out req
    t0=$(awk '{print $14+$15}' "/proc/$3/stat")
    out=$(load "$DUR" "https://127.0.0.1:$2$4")
    t1=$(awk '{print $14+$15}' "/proc/$3/stat")
    if [ "$H2" = 1 ]; then
        echo "$out" | grep -q "Application protocol: h2" || { echo "$1: not h2: $out" >&2; return; }
        req=$(echo "$out" | awk '/^requests:/ {print $8}')
    else
        req=$(echo "$out" | awk '/requests in/ {print $1}')
    fi
    local tck; tck=$(getconf CLK_TCK)
    awk -v l="$1" -v r="$req" -v a="$t0" -v b="$t1" -v k="$tck" -v e="$(echo "$out" | grep -c 'Non-2xx\|Socket errors\| [1-9][0-9]* failed\| [1-9][0-9]* errored' || true)" \
        'BEGIN { printf "%-22s %9d requests  %7.2f us CPU/request  error lines: %d\n", l, r, (b-a)*1e6/k/r, e }'
}
for rep in $(seq 1 "$REPS"); do
    for path in / /64k; do
        measure "ringmesh $path" $RM $RMPID $path
        [ -n "$RMBPID" ] && measure "base $path" $RMB $RMBPID $path
        measure "nginx $path" $NG "$NGW" $path
        measure "haproxy $path" $HP $HAP $path
    done
done
# The handshake, resumption and idle cases below do not depend on ALPN.
[ "$H2" = 1 ] && exit 0

# handshake LABEL PORT PID -new|-reuse: proxy CPU per TLS connection carrying one
# request (-www: s_time must read the answer, or TLS 1.3 tickets never arrive
# and -reuse would silently do full handshakes)
handshake() {
    local t0 t1 out n tck
    tck=$(getconf CLK_TCK)
    t0=$(awk '{print $14+$15}' "/proc/$3/stat")
    out=$(taskset -c 1 timeout $((DUR + 20)) openssl s_time -connect "127.0.0.1:$2" "$4" -tls1_3 -www / -time "$DUR" 2>&1 || true)
    t1=$(awk '{print $14+$15}' "/proc/$3/stat")
    n=$(echo "$out" | awk '/connections in/ {print $1; exit}')
    [ -n "$n" ] && [ "$n" -gt 0 ] || { echo "$1: s_time failed: $(echo "$out" | tail -2)"; return; }
    awk -v l="$1" -v n="$n" -v a="$t0" -v b="$t1" -v k="$tck" \
        'BEGIN { printf "%-22s %9d handshakes %7.1f us CPU/handshake\n", l, n, (b-a)*1e6/k/n }'
}
for rep in $(seq 1 "$REPS"); do
    for mode in -new -reuse; do
        [ "$mode" = -new ] && what="full hs" || what="resumed hs"
        handshake "ringmesh $what" $RM $RMPID $mode
        [ -n "$RMBPID" ] && handshake "base $what" $RMB $RMBPID $mode
        handshake "nginx $what" $NG "$NGW" $mode
        handshake "haproxy $what" $HP $HAP $mode
    done
done

PY=$(command -v python3)
echo "resumption, 200 reconnects offering the previous session:"
for t in "ringmesh-2-workers $RM2" "nginx $NG" "haproxy $HP"; do
    set -- $t
    printf "%-22s %s\n" "$1" "$(timeout 120 "$PY" "$HERE/tls_resume.py" "$2" --count 200)"
done

# idle LABEL PORT PID: RSS growth per idle TLS keep-alive connection
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
idle() {
    local before after line fifo="$T/idle.$2"
    mkfifo "$fifo"
    before=$(rss_kib "$3")
    # The fifo keeps the client's stdin open until we are done measuring.
    "$PY" "$HERE/idle_conns.py" "$2" "$IDLE" --tls --request / --hold 120 <"$fifo" >"$T/idle.$2.out" 2>&1 &
    local cpid=$!
    exec 9>"$fifo"
    for _ in $(seq 1 240); do grep -q READY "$T/idle.$2.out" 2>/dev/null && break; sleep 0.5; done
    sleep 1
    after=$(rss_kib "$3")
    line=$(grep READY "$T/idle.$2.out" || echo "READY ok=0")
    exec 9>&-
    wait "$cpid" 2>/dev/null || true
    rm -f "$fifo"
    local ok; ok=$(echo "$line" | sed -n 's/.*ok=\([0-9]*\).*/\1/p')
    [ -n "$ok" ] && [ "$ok" -gt 0 ] || { echo "$1: no idle connections ($line)"; return; }
    awk -v l="$1" -v n="$ok" -v a="$before" -v b="$after" \
        'BEGIN { printf "%-22s %6d idle TLS conns  %7.0f B/conn RSS\n", l, n, (b-a)*1024/n }'
}
idle "ringmesh idle" $RM $RMPID
idle "nginx idle" $NG "$NGW"
idle "haproxy idle" $HP $HAP
