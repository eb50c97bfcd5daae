#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian/Ubuntu machine: installs what the
# tests need (as root, with apt-get), then `cargo test`. Extra args go to cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
# chromium + chromium-driver: tests/dashboard.rs drives the dashboard in headless Chromium.
for pkg_bin in nginx:nginx haproxy:haproxy wrk:wrk iperf3:iperf3 python3:python3 \
               chromium:chromium chromium-driver:chromedriver; do
  bin=${pkg_bin#*:}; pkg=${pkg_bin%%:*}
  command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || need+=("$pkg")
done
python3 -c 'import matplotlib' 2>/dev/null || need+=(python3-matplotlib)
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
