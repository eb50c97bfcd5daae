#!/usr/bin/env bash
# ringmesh soak: a long mixed load (keep-alive, new connections, large bodies both ways,
# WebSocket-style upgrades, idle connections), RSS / fds / threads sampled every second into a
# CSV, a PNG plot and a verdict (no upward trend after warm-up; fds and threads back to the
# baseline). See bench/README.md, "Soak".
#
#   bench/soak.sh                   10 minutes (release build), results in bench/results/soak-<date>.*
#   bench/soak.sh --quick           60 s
#   bench/soak.sh --duration 300    5 minutes
#   bench/soak.sh --smoke --no-build --ringmesh-bin target/debug/ringmesh --out-dir /tmp/x
#
# Own options (everything else goes to bench/soak.py; --help lists those too):
#   --no-build     do not run cargo; use the existing release binary
# Ports: 127.0.0.1:P (ringmesh), P+1 (nginx backend), P+2 (echo backend); P = --port-base,
# default 18100 (bench/run.sh uses 18000-18094 and 15200-15205).
# Exit: 0 PASS, 1 FAIL (or a failed step), 2 setup error, 130/143 interrupted. Every process
# started is stopped by PID on exit, even on Ctrl-C.

set -u
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"

BUILD=1
ARGS=()
HAVE_BIN_ARG=0
HELP=0
for a in "$@"; do
    case "$a" in
        --no-build) BUILD=0 ;;
        -h|--help) HELP=1; ARGS+=("$a") ;;
        --ringmesh-bin|--ringmesh-bin=*) HAVE_BIN_ARG=1; ARGS+=("$a") ;;
        *) ARGS+=("$a") ;;
    esac
done
[ -n "${RINGMESH_BIN:-}" ] && HAVE_BIN_ARG=1

log() { echo "soak.sh: $*" >&2; }

# The python that has matplotlib if any (Debian's python3-matplotlib is for /usr/bin/python3).
PY=""
for p in /usr/bin/python3 "$(command -v python3 2>/dev/null)"; do
    [ -n "$p" ] && [ -x "$p" ] && "$p" -c 'import matplotlib' 2>/dev/null && { PY="$p"; break; }
done
[ -n "$PY" ] || PY="$(command -v python3 2>/dev/null || echo /usr/bin/python3)"
[ -x "$PY" ] || { log "python3 not found"; exit 2; }

if [ "$HELP" = 1 ]; then
    sed -n '2,/^$/p' "${BASH_SOURCE[0]}" | grep '^#' | sed 's/^# \{0,1\}//'
    echo
    exec "$PY" "$HERE/soak.py" --help
fi

if [ "$HAVE_BIN_ARG" = 0 ]; then
    TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
    case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$REPO/$TARGET_DIR" ;; esac
    export RINGMESH_BIN="$TARGET_DIR/release/ringmesh"
    if [ "$BUILD" = 1 ]; then
        CARGO="$(command -v cargo || echo "$HOME/.cargo/bin/cargo")"
        [ -x "$CARGO" ] || { log "cargo not found: install Rust, or pass --no-build"; exit 2; }
        log "building ringmesh: cargo build --release (target dir $TARGET_DIR)"
        if ! (cd "$REPO" && CARGO_TARGET_DIR="$TARGET_DIR" timeout "${BUILD_TIMEOUT:-1800}" "$CARGO" build --release >&2); then
            log "cargo build --release FAILED"
            exit 1
        fi
    fi
fi

# Idle connections and the load hold thousands of sockets.
ulimit -n 65535 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

PIDFILE="$(mktemp "${TMPDIR:-/tmp}/ringmesh-soak-pids.XXXXXX")"
export BENCH_PIDFILE="$PIDFILE"
SOAK_PID=""

# Field 22 (start time) of /proc/PID/stat; fails for a process gone or a zombie.
starttime_of() {
    local s
    { s=$(<"/proc/$1/stat"); } 2>/dev/null || return 1
    s=${s##*) }
    # shellcheck disable=SC2086
    set -- $s
    [ "$1" != Z ] || return 1
    echo "${20}"
}

# Stop one recorded PID, only if its start time still matches (a recycled PID is never hit).
stop_recorded() {
    local pid=$1 start=$2 name=$3
    [ "$(starttime_of "$pid")" = "$start" ] || return 0
    log "stopping leftover $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 50); do
        [ "$(starttime_of "$pid")" = "$start" ] || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    if [ -n "$SOAK_PID" ] && kill -0 "$SOAK_PID" 2>/dev/null; then
        log "stopping soak.py (pid $SOAK_PID); it stops its processes by PID"
        kill -TERM "$SOAK_PID" 2>/dev/null
        for _ in $(seq 300); do kill -0 "$SOAK_PID" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$SOAK_PID" 2>/dev/null && kill -KILL "$SOAK_PID" 2>/dev/null
        wait "$SOAK_PID" 2>/dev/null
    fi
    if [ -s "$PIDFILE" ]; then
        while read -r pid start name; do
            [ -n "$pid" ] && stop_recorded "$pid" "$start" "$name"
        done < "$PIDFILE"
    fi
    rm -f "$PIDFILE" "$PIDFILE.tmp"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

"$PY" "$HERE/soak.py" "${ARGS[@]}" &
SOAK_PID=$!
wait "$SOAK_PID"
rc=$?
SOAK_PID=""
exit "$rc"
