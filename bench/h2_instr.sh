#!/bin/bash
# User-space instructions and heap allocations per HTTP/2 request, counted
# (not timed) under valgrind's callgrind, so an A/B of user-space changes
# holds on a loaded, shared machine where CPU time per request does not.
#
#   bench/h2_instr.sh [--bin target/release/ringmesh] [--tls] [--keep DIR] [--haproxy]
#
# ringmesh (one worker, the epoll driver: valgrind does not know io_uring)
# in front of an nginx backend on loopback; h2load -c8 -m10 sends 2,000 and
# then 8,000 GET /small (h2c, or h2 over TLS 1.3 with --tls) to two fresh
# processes; the difference of the totals divided by 6,000 is the cost per
# request without the start-up (certificates, entropy, config). Allocations:
# calls of mimalloc's allocation entry points. The ports 19380-19382 must
# be free. Every process it starts is stopped by PID. --haproxy counts
# HAProxy instead (one thread, `proto h2` bind, `http-reuse always`; its
# allocations are glibc's and not counted), the reference for the h2 bars.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=$HERE/../target/release/ringmesh
TLS=0
KEEP=
HAP=0
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) BIN="$2"; shift 2 ;;
        --tls) TLS=1; shift ;;
        --keep) KEEP="$2"; shift 2 ;;
        --haproxy) HAP=1; shift ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
for t in valgrind callgrind_annotate nginx h2load openssl curl; do
    command -v $t >/dev/null || { echo "$t is missing (apt-get install valgrind nginx nghttp2-client)" >&2; exit 2; }
done
T=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$T"; }
trap cleanup EXIT
cat > "$T/nginx.conf" <<NG
worker_processes 1; daemon off; pid $T/nginx.pid; error_log $T/nginx.err warn;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:19380; location /small { return 200 "a small body of about a hundred bytes, as bench/run.sh's /small..................\n"; } } }
NG
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/key.pem" -out "$T/cert.pem" \
    -days 2 -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 2>/dev/null
cat > "$T/rm.json" <<RM
{"dashboard_port": "", "listen_host": "127.0.0.1", "workers": 1, "trusted_origins": [],
 "upstream_keepalive": {"max_idle": 1024},
 "routes": {"19381": {"name": "h2c", "backends": [{"internal_port": 19380}]},
            "19382": {"name": "h2", "tls": {"certificates": [{"cert": "$T/cert.pem", "key": "$T/key.pem"}]},
                      "backends": [{"internal_port": 19380}]}}}
RM
cat "$T/cert.pem" "$T/key.pem" > "$T/both.pem"
cat > "$T/hap.cfg" <<HA
global
    nbthread 1
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    http-reuse always
frontend h2c
    bind 127.0.0.1:19381 proto h2
    default_backend b
frontend h2
    bind 127.0.0.1:19382 ssl crt $T/both.pem alpn h2,http/1.1
    default_backend b
backend b
    server s 127.0.0.1:19380
HA
nginx -c "$T/nginx.conf" & PIDS+=($!)
URL=http://127.0.0.1:19381/small
[ $TLS = 1 ] && URL=https://127.0.0.1:19382/small
# run N: prints "instructions allocations" of a fresh ringmesh serving N requests.
run() {
    local out="$T/cg.$1"
    # No re-execution for the copy tuning (src/tune.rs): valgrind cannot follow it.
    if [ $HAP = 1 ]; then
        valgrind --tool=callgrind --callgrind-out-file="$out" haproxy -db -f "$T/hap.cfg" >"$T/vg.$1.log" 2>&1 &
    else
        RINGMESH_NO_COPY_TUNING=1 valgrind --tool=callgrind --callgrind-out-file="$out" "$BIN" run --config "$T/rm.json" --log warn --io epoll \
            >"$T/vg.$1.log" 2>&1 &
    fi
    local rm=$!
    for _ in $(seq 200); do curl -s -o /dev/null --http2-prior-knowledge http://127.0.0.1:19381/small && break; sleep 0.3; done
    h2load -c8 -m10 -n "$1" "$URL" | grep -q "$1 succeeded" || { echo "h2load failed" >&2; kill $rm; exit 1; }
    if [ $HAP = 1 ]; then kill $rm; else kill -INT $rm; fi; wait $rm || true
    [ -n "$KEEP" ] && mkdir -p "$KEEP" && cp "$out" "$KEEP/"
    python3 - "$out" <<'PY'
import re, sys
ir = allocs = 0; names = {}; cur = None
alloc = re.compile(r'^(mi_malloc_aligned|mi_zalloc_aligned|mi_realloc_aligned|mi_malloc|mi_zalloc|mi_realloc)$')
for line in open(sys.argv[1], errors='replace'):
    if line.startswith('summary:'):
        ir = int(line.split()[1])
    elif line.startswith('cfn='):
        m = re.match(r'cfn=\((\d+)\)(?: (.*))?', line.strip())
        if m:
            if m.group(2): names[m.group(1)] = m.group(2)
            cur = names.get(m.group(1), '')
    elif line.startswith('fn='):
        m = re.match(r'fn=\((\d+)\)(?: (.*))?', line.strip())
        if m and m.group(2): names[m.group(1)] = m.group(2)
    elif line.startswith('calls=') and cur is not None:
        if alloc.search(cur): allocs += int(line.split('=')[1].split()[0])
        cur = None
print(ir, allocs)
PY
}
read -r i2 a2 < <(run 2000)
read -r i8 a8 < <(run 8000)
proto=h2c; [ $TLS = 1 ] && proto="h2 over TLS"
who=$BIN; [ $HAP = 1 ] && who=haproxy
echo "$proto, per request: $(( (i8 - i2) / 6000 )) instructions, $(python3 -c "print(round(($a8 - $a2) / 6000, 2))") allocations ($who)"
