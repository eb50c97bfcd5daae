#!/usr/bin/env bash
# Upstream TLS side by side: what a TLS backend costs the proxy against a plain
# one. One nginx backend on CPU 1 serves the same content plain and over TLS
# 1.3 (ECDSA P-256); ringmesh (one worker), nginx (proxy_ssl, keepalive 64)
# and HAProxy (server ... ssl, http-reuse always) on CPU 0 each forward plain
# HTTP/1.1 clients (wrk, keep-alive, 32 connections, CPU 1) to the plain and
# to the TLS backend. Prints proxy CPU time per request from
# /proc/<pid>/stat (user + system), the steadiest figure on a shared machine.
#
#   bench/upstream_tls.sh [--bin target/release/ringmesh] [--duration 5] [--reps 2]
#
# Every process this script starts is stopped by PID on exit. Needs: nginx,
# haproxy, wrk, openssl.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BIN="$HERE/../target/release/ringmesh"
DUR=5
REPS=2
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) BIN="$2"; shift 2 ;;
        --duration) DUR="$2"; shift 2 ;;
        --reps) REPS="$2"; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")"
T="$(mktemp -d)"
chmod 755 "$T"   # nginx workers (user nobody) read www/ and the certificates
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -s "$T/front.err" ] && { echo "nginx front error log (tail):"; tail -3 "$T/front.err"; }
    rm -rf "$T"
}
trap cleanup EXIT

BACK=28281 BACKS=28282 RMP=28291 RMT=28292 NGP=28293 NGT=28294 HPP=28295 HPT=28296
cd "$T"
openssl ecparam -name prime256v1 -genkey -noout -out ca.key 2>/dev/null
openssl req -x509 -new -key ca.key -subj /CN=bench-ca -days 2 -out ca.pem 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out key.pem 2>/dev/null
openssl req -new -key key.pem -subj /CN=localhost -out c.csr 2>/dev/null
printf "subjectAltName=DNS:localhost,IP:127.0.0.1\n" > c.ext
openssl x509 -req -in c.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile c.ext -out c.crt 2>/dev/null
cat c.crt ca.pem > cert.pem
mkdir -m 755 www && head -c 65536 /dev/urandom > www/64k && chmod 644 www/64k

cat > backend.conf <<EOF
worker_processes 1; daemon off; pid $T/backend.pid; error_log $T/backend.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$BACK; listen 127.0.0.1:$BACKS ssl;
    ssl_certificate $T/cert.pem; ssl_certificate_key $T/key.pem; ssl_protocols TLSv1.3;
    location / { return 200 "hello world\n"; } location /64k { root $T/www; } } }
EOF
cat > front.conf <<EOF
worker_processes 1; daemon off; pid $T/front.pid; error_log $T/front.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream p { server 127.0.0.1:$BACK; keepalive 64; }
  upstream s { server 127.0.0.1:$BACKS; keepalive 64; }
  server { listen 127.0.0.1:$NGP;
    location / { proxy_pass http://p; proxy_http_version 1.1; proxy_set_header Connection ""; } }
  server { listen 127.0.0.1:$NGT;
    location / { proxy_pass https://s; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_ssl_verify on; proxy_ssl_trusted_certificate $T/ca.pem; proxy_ssl_name localhost;
      proxy_ssl_protocols TLSv1.2 TLSv1.3;
      proxy_ssl_server_name on; proxy_ssl_session_reuse on; } } }
EOF
cat > haproxy.cfg <<EOF
global
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend fp
  bind 127.0.0.1:$HPP
  default_backend bp
frontend ft
  bind 127.0.0.1:$HPT
  default_backend bt
backend bp
  http-reuse always
  server s 127.0.0.1:$BACK
backend bt
  http-reuse always
  server s 127.0.0.1:$BACKS ssl verify required ca-file $T/ca.pem sni str(localhost)
EOF
cat > ringmesh.json <<EOF
{"listen_host": "127.0.0.1", "workers": 1,
 "routes": {"$RMP": {"name": "plain", "backends": [{"name": "b", "internal_port": "$BACK"}]},
            "$RMT": {"name": "tls", "backends": [{"name": "b", "internal_port": "$BACKS",
                     "tls": {"sni": "localhost", "ca": "ca.pem"}}]}}}
EOF

taskset -c 1 nginx -c "$T/backend.conf" >/dev/null 2>&1 & PIDS+=($!)
taskset -c 0 nginx -c "$T/front.conf" >/dev/null 2>&1 & PIDS+=($!)
taskset -c 0 haproxy -f "$T/haproxy.cfg" >/dev/null 2>&1 & PIDS+=($!)
HAP=$!
taskset -c 0 "$BIN" run --config "$T/ringmesh.json" --log warn >"$T/ringmesh.log" 2>&1 </dev/null & PIDS+=($!)
RMPID=$!
sleep 2
NGW=$(pgrep -P "$(cat "$T/front.pid")" | head -1)

# measure LABEL PORT PID PATH
measure() {
    taskset -c 1 wrk -t1 -c32 -d1s "http://127.0.0.1:$2$4" >/dev/null
    local t0 t1 out req
    t0=$(awk '{print $14+$15}' "/proc/$3/stat")
    out=$(taskset -c 1 wrk -t1 -c32 -d"${DUR}s" "http://127.0.0.1:$2$4")
    t1=$(awk '{print $14+$15}' "/proc/$3/stat")
    req=$(echo "$out" | awk '/requests in/ {print $1}')
    local tck; tck=$(getconf CLK_TCK)
    awk -v l="$1" -v r="$req" -v a="$t0" -v b="$t1" -v k="$tck" -v e="$(echo "$out" | grep -c 'Non-2xx\|Socket errors' || true)" \
        'BEGIN { printf "%-26s %9d requests  %7.2f us CPU/request  error lines: %d\n", l, r, (b-a)*1e6/k/r, e }'
    echo "$out" | grep 'Non-2xx\|Socket errors' | sed 's/^/    /' || true
}
for rep in $(seq 1 "$REPS"); do
    for path in / /64k; do
        measure "ringmesh plain $path" $RMP $RMPID $path
        measure "ringmesh tls $path" $RMT $RMPID $path
        measure "nginx plain $path" $NGP "$NGW" $path
        measure "nginx tls $path" $NGT "$NGW" $path
        measure "haproxy plain $path" $HPP $HAP $path
        measure "haproxy tls $path" $HPT $HAP $path
    done
done
