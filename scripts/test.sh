#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian/Ubuntu machine: installs what the
# tests need (as root, with apt-get), then `cargo test`. Extra args go to cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
# chromium + chromium-driver: tests/dashboard.rs drives the dashboard in headless Chromium.
# openssl, curl: tests/tls.rs and tests/edge.rs; testssl.sh: tests/tls.rs (certificates made at test time, real TLS clients).
# etcd-server: tests/fleet.rs (routes from etcd); dnsmasq-base (the binary, no system
# service on port 53): DNS discovery tests.
# nghttp2-client: h2load and nghttp for tests/h2.rs.
# apache2-utils: tests/middleware.rs makes basic_auth's htpasswd file with Debian's htpasswd.
# iproute2 (ip): tests/fleet_netns.rs puts nodes in network namespaces (as root; else it skips).
for pkg_bin in nginx:nginx haproxy:haproxy wrk:wrk iperf3:iperf3 python3:python3 \
               chromium:chromium chromium-driver:chromedriver \
               openssl:openssl curl:curl testssl.sh:testssl apache2-utils:htpasswd \
               etcd-server:etcd dnsmasq-base:dnsmasq nghttp2-client:h2load iproute2:ip; do
  bin=${pkg_bin#*:}; pkg=${pkg_bin%%:*}
  command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || need+=("$pkg")
done
# Debian's python3-matplotlib is for /usr/bin/python3 (bench/plot.py picks that one), not a
# pyenv or venv python3 earlier on PATH: ask it, or every run reinstalls the package.
/usr/bin/python3 -c 'import matplotlib' 2>/dev/null || need+=(python3-matplotlib)
# ca-certificates: the system trust store upstream TLS uses without a "ca"
# (src/config/upstream_tls.rs unit tests; tests/upstream_tls.rs runs nginx and
# openssl s_server as TLS backends).
[ -s /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
# libcrypt-dev: basic_auth links the system's libcrypt (crypt and SHA-crypt htpasswd
# entries); libc6-dev depends on it, so a machine that builds C usually has it.
compgen -G '/usr/lib/*/libcrypt.so' >/dev/null || compgen -G '/usr/lib/libcrypt.so' >/dev/null \
  || need+=(libcrypt-dev)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "missing packages (install them, or run as root): ${need[*]}" >&2
  fi
fi
# grpcio (tests/h2.rs: gRPC client and server through an h2c backend), from PyPI.
python3 -c 'import grpc' 2>/dev/null || python3 -m pip install --quiet grpcio \
  || python3 -m pip install --quiet --break-system-packages grpcio \
  || echo "missing: python3 grpcio (pip install grpcio)" >&2
# h2spec (tests/h2.rs): built once with the machine's Go through the Go module
# proxy and cached in $(go env GOPATH)/bin; not rebuilt when it is there.
if ! command -v h2spec >/dev/null 2>&1; then
  gobin="$(go env GOPATH 2>/dev/null || echo "$HOME/go")/bin"
  if [ ! -x "$gobin/h2spec" ]; then
    if command -v go >/dev/null 2>&1; then
      echo "installing h2spec (go install)"
      go install github.com/summerwind/h2spec/cmd/h2spec@latest
    else
      echo "missing: go (to build h2spec for tests/h2.rs)" >&2
    fi
  fi
  export H2SPEC="$gobin/h2spec"
fi
# tests/gateway.rs: WebSocket backend and clients in Python.
if ! python3 -c 'import websockets' 2>/dev/null; then
  echo "installing: python websockets (pip)"
  python3 -m pip install --quiet websockets 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages websockets \
    || { command -v apt-get >/dev/null && [ "$(id -u)" = 0 ] \
         && apt-get install -y -qq --no-install-recommends python3-pip >/dev/null \
         && python3 -m pip install --quiet --break-system-packages websockets; } \
    || echo "cannot install python websockets: tests/gateway.rs will fail" >&2
fi
# The connection-heavy tests open thousands of sockets.
ulimit -n 65535 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
exec cargo test "$@"
