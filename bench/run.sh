#!/usr/bin/env bash
# ringmesh vs nginx vs HAProxy, one run, same workers and CPU pinning. See bench/README.md.
#
#   bench/run.sh                 full run (3 reps x 10 s, all cases and candidates, < 15 min)
#   bench/run.sh --quick         1 rep x 3 s (< 2 min)
#   bench/run.sh --smoke         tiniest: direct + ringmesh, 1 s runs (what the test suite calls)
#   bench/run.sh --workers 2     2 proxy workers on CPUs 0-1
#
# This script installs what is missing (as root, Debian), builds ringmesh in release mode,
# raises the open-file limit, then runs bench/bench.py with the remaining arguments. Every
# process the bench starts is stopped by PID when this script exits, even on Ctrl-C.
#
# Own options (everything else goes to bench.py; `bench/run.sh --help` lists those too):
#   --no-build     do not run cargo; use the existing binary (ringmesh is skipped if missing)
#   --no-install   never run apt-get, even as root
#   --https        after bench.py's cases, the TLS cases of bench/https.sh (HTTPS
#                  keep-alive small and 64 KiB, full and resumed handshakes,
#                  resumption across 2 workers, idle TLS connections), then its
#                  --h2 mode (HTTP/2 over TLS), with the same ringmesh binary
#   --https-only   only those (no bench.py cases)

set -u
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"

BUILD=1
INSTALL=1
HTTPS=0
ARGS=()
WANT_RINGMESH=1
HAVE_BIN_ARG=0
HELP=0
prev=""
for a in "$@"; do
    case "$a" in
        --no-build) BUILD=0 ;;
        --no-install) INSTALL=0 ;;
        --https) HTTPS=1 ;;
        --https-only) HTTPS=2 ;;
        -h|--help) HELP=1; ARGS+=("$a") ;;
        *) ARGS+=("$a") ;;
    esac
    case "$prev" in
        --candidates) [[ ",$a," == *",ringmesh"* ]] || WANT_RINGMESH=0 ;;
        --ringmesh-bin) HAVE_BIN_ARG=1 ;;
    esac
    case "$a" in
        --candidates=*) [[ ",${a#--candidates=}," == *",ringmesh"* ]] || WANT_RINGMESH=0 ;;
        --ringmesh-bin=*) HAVE_BIN_ARG=1 ;;
    esac
    prev="$a"
done
[ -n "${RINGMESH_BIN:-}" ] && HAVE_BIN_ARG=1

log() { echo "run.sh: $*" >&2; }

# --- python: the one that has matplotlib if any (Debian's python3-matplotlib is for /usr/bin) ---
pick_python() {
    local p
    for p in /usr/bin/python3 "$(command -v python3 2>/dev/null)"; do
        [ -n "$p" ] && [ -x "$p" ] && "$p" -c 'import matplotlib' 2>/dev/null && { echo "$p"; return; }
    done
    for p in /usr/bin/python3 "$(command -v python3 2>/dev/null)"; do
        [ -n "$p" ] && [ -x "$p" ] && { echo "$p"; return; }
    done
}

if [ "$HELP" = 1 ]; then
    sed -n '2,/^$/p' "${BASH_SOURCE[0]}" | grep '^#' | sed 's/^# \{0,1\}//'
    echo
    PY="$(pick_python)"
    exec "$PY" "$HERE/bench.py" --help
fi

# --- install what is missing (Debian, root): apt-get update once, then one install ---
missing_packages() {
    local pkgs=()
    command -v nginx >/dev/null 2>&1 || pkgs+=(nginx)
    command -v haproxy >/dev/null 2>&1 || pkgs+=(haproxy)
    command -v wrk >/dev/null 2>&1 || pkgs+=(wrk)
    command -v iperf3 >/dev/null 2>&1 || pkgs+=(iperf3)
    if [ "$HTTPS" != 0 ]; then
        command -v h2load >/dev/null 2>&1 || pkgs+=(nghttp2-client)
        command -v openssl >/dev/null 2>&1 || pkgs+=(openssl)
    fi
    command -v taskset >/dev/null 2>&1 || pkgs+=(util-linux)
    command -v python3 >/dev/null 2>&1 || [ -x /usr/bin/python3 ] || pkgs+=(python3)
    /usr/bin/python3 -c 'import matplotlib' 2>/dev/null || pkgs+=(python3-matplotlib)
    # nginx's stream module is a separate package on Debian (dynamic module)
    if command -v nginx >/dev/null 2>&1; then
        if nginx -V 2>&1 | grep -q -- '--with-stream=dynamic' &&
           ! ls /usr/lib/nginx/modules/ngx_stream_module.so >/dev/null 2>&1; then
            pkgs+=(libnginx-mod-stream)
        fi
    else
        pkgs+=(libnginx-mod-stream)
    fi
    echo "${pkgs[@]}"
}

if [ "$INSTALL" = 1 ]; then
    PKGS="$(missing_packages)"
    if [ -n "$PKGS" ]; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            log "installing: $PKGS"
            # Keep the packages' own services (nginx on :80, haproxy, iperf3) from being started:
            # the bench runs its own instances. Only if no policy is in place already.
            POLICY=/usr/sbin/policy-rc.d
            OWN_POLICY=0
            if [ ! -e "$POLICY" ]; then
                printf '#!/bin/sh\nexit 101\n' > "$POLICY" && chmod 755 "$POLICY" && OWN_POLICY=1
            fi
            export DEBIAN_FRONTEND=noninteractive
            # shellcheck disable=SC2086
            timeout 600 apt-get update -qq &&
                timeout 900 apt-get install -y -qq --no-install-recommends $PKGS >&2
            rc=$?
            [ "$OWN_POLICY" = 1 ] && rm -f "$POLICY"
            [ "$rc" = 0 ] || log "apt-get failed (exit $rc); candidates needing missing tools will be skipped"
        else
            log "missing: $PKGS (not root or no apt-get: install them yourself); cases needing them are skipped"
        fi
    fi
fi

PY="$(pick_python)"
[ -n "$PY" ] || { log "python3 not found"; exit 2; }

# --- build ringmesh (release) ---
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$REPO/$TARGET_DIR" ;; esac
if [ "$WANT_RINGMESH" = 1 ] && [ "$HAVE_BIN_ARG" = 0 ]; then
    export RINGMESH_BIN="$TARGET_DIR/release/ringmesh"
    if [ "$BUILD" = 1 ]; then
        CARGO="$(command -v cargo || echo "$HOME/.cargo/bin/cargo")"
        if [ ! -x "$CARGO" ]; then
            log "cargo not found: install Rust, or pass --no-build to bench the other candidates"
            exit 2
        fi
        log "building ringmesh: cargo build --release (target dir $TARGET_DIR)"
        if ! (cd "$REPO" && CARGO_TARGET_DIR="$TARGET_DIR" timeout "${BUILD_TIMEOUT:-1800}" "$CARGO" build --release >&2); then
            log "cargo build --release FAILED; fix the build, or pass --no-build to bench the other candidates"
            exit 1
        fi
    fi
fi

# --- limits: idle holds thousands of sockets; io_uring may want locked memory ---
ulimit -n 65535 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
ulimit -l unlimited 2>/dev/null || true

# --- run, and stop everything it started on any exit ---
PIDFILE="$(mktemp "${TMPDIR:-/tmp}/ringmesh-bench-pids.XXXXXX")"
export BENCH_PIDFILE="$PIDFILE"
BENCH_PID=""

# field 22 (start time) of /proc/PID/stat; fields after the ")" start at field 3 (state).
# Fails for a process that is gone or a zombie (already dead, waiting to be reaped).
starttime_of() {
    local s
    { s=$(<"/proc/$1/stat"); } 2>/dev/null || return 1
    s=${s##*) }
    # shellcheck disable=SC2086
    set -- $s
    [ "$1" != Z ] || return 1
    echo "${20}"
}

children_of() {
    local parent=$1 f s p
    for f in /proc/[0-9]*/stat; do
        { s=$(<"$f"); } 2>/dev/null || continue
        s=${s##*) }
        # shellcheck disable=SC2086
        set -- $s
        if [ "$2" = "$parent" ]; then p=${f#/proc/}; echo "${p%/stat}"; fi
    done
}

# stop one recorded PID (only if its start time still matches) and its descendants
stop_recorded() {
    local pid=$1 start=$2 name=$3 kids now i
    now="$(starttime_of "$pid")" || return 0
    [ "$now" = "$start" ] || return 0
    kids="$(children_of "$pid")"
    log "stopping leftover $name (pid $pid${kids:+, children $(echo $kids)})"
    kill -TERM "$pid" 2>/dev/null
    for i in $(seq 50); do
        [ "$(starttime_of "$pid")" = "$start" ] || break
        sleep 0.1
    done
    [ "$(starttime_of "$pid")" = "$start" ] && kill -KILL "$pid" 2>/dev/null
    for k in $kids; do kill -KILL "$k" 2>/dev/null; done
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    if [ -n "$BENCH_PID" ] && kill -0 "$BENCH_PID" 2>/dev/null; then
        log "stopping the bench (pid $BENCH_PID); it stops its processes and writes partial results"
        kill -TERM "$BENCH_PID" 2>/dev/null
        for _ in $(seq 600); do kill -0 "$BENCH_PID" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$BENCH_PID" 2>/dev/null && kill -KILL "$BENCH_PID" 2>/dev/null
        wait "$BENCH_PID" 2>/dev/null
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

rc=0
if [ "$HTTPS" != 2 ]; then
    "$PY" "$HERE/bench.py" "${ARGS[@]}" &
    BENCH_PID=$!
    wait "$BENCH_PID"
    rc=$?
    BENCH_PID=""
fi
if [ "$HTTPS" != 0 ] && [ "$rc" = 0 ]; then
    # https.sh stops every process it starts by PID on its own exit.
    HBIN="${RINGMESH_BIN:-$REPO/target/release/ringmesh}"
    prev=""
    for a in "${ARGS[@]}"; do
        [ "$prev" = --ringmesh-bin ] && HBIN="$a"
        case "$a" in --ringmesh-bin=*) HBIN="${a#--ringmesh-bin=}" ;; esac
        prev="$a"
    done
    bash "$HERE/https.sh" --bin "$HBIN" && bash "$HERE/https.sh" --bin "$HBIN" --h2
    rc=$?
fi
exit "$rc"
