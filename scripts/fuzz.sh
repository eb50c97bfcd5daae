#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets/) for a bounded time each and
# fails if any of them finds a crash, a broken invariant, a leak-sized RSS
# or a hang. See fuzz/README.md.
#
#   scripts/fuzz.sh                 # 60 s per target
#   scripts/fuzz.sh 300             # 5 minutes per target
#   scripts/fuzz.sh 30 chunked      # only some targets
#   FUZZ_SANITIZER=address scripts/fuzz.sh   # with AddressSanitizer (see below)
#
# Toolchain: only stable Rust is needed. cargo-fuzz (installed from crates.io
# if missing) builds with `--sanitizer none`: libFuzzer's coverage comes from
# `-Cpasses=sancov-module` and `-Cllvm-args=-sanitizer-coverage-*`, which are
# stable codegen flags, so no nightly is required. AddressSanitizer needs the
# unstable `-Zsanitizer=address`: with FUZZ_SANITIZER=address the script sets
# RUSTC_BOOTSTRAP=1 so stable rustc accepts it (a separate, slower build).
# ringmesh's code is safe Rust apart from src/sys.rs, so the default run
# relies on Rust's own checks plus debug assertions and overflow checks (-a).
#
# Each target's new inputs go to fuzz/corpus-run/<target>/ (git-ignored); the
# committed seeds in fuzz/corpus/<target>/ are read, never written. A finding
# is saved in fuzz/artifacts/<target>/ and printed with the command that
# replays it. Exit status: 0 clean, 1 finding, 2 build or usage error.
set -uo pipefail
cd "$(dirname "$0")/../fuzz"

secs=${1:-60}
shift || true
case "$secs" in
  '' | *[!0-9]*) echo "usage: scripts/fuzz.sh [seconds-per-target] [target...]" >&2; exit 2 ;;
esac
all=(http_request http_response chunked config_json config_mutate proxy_header client_hello access_log h2_server ws_frame)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz from crates.io" >&2
  cargo install cargo-fuzz --locked || exit 2
fi

sanitizer=${FUZZ_SANITIZER:-none}
if [ "$sanitizer" != none ]; then
  export RUSTC_BOOTSTRAP=1
fi
build=(-O --debug-assertions --sanitizer "$sanitizer")

echo "building fuzz targets (sanitizer: $sanitizer)" >&2
cargo fuzz build "${build[@]}" || exit 2

failed=()
for t in "${targets[@]}"; do
  mkdir -p "corpus-run/$t" "artifacts/$t"
  echo "== $t: ${secs}s" >&2
  # -timeout: an input that takes over 10 s is a hang (a finding).
  # -rss_limit_mb: runaway memory is a finding too. The outer timeout only
  # guards against libFuzzer itself not stopping.
  timeout --kill-after=30 $((secs + 300)) \
    cargo fuzz run "${build[@]}" "$t" "corpus-run/$t" "corpus/$t" -- \
      -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
      -print_final_stats=1 -artifact_prefix="artifacts/$t/" \
      2> "artifacts/$t/log.txt"
  rc=$?
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|Done )' "artifacts/$t/log.txt" >&2
  if [ $rc -ne 0 ]; then
    failed+=("$t")
    echo "!! $t: finding (exit $rc); log: fuzz/artifacts/$t/log.txt" >&2
    grep -E 'panicked at|assertion|SUMMARY|left:|right:' "artifacts/$t/log.txt" | head -8 >&2
    for f in "artifacts/$t"/crash-* "artifacts/$t"/timeout-* "artifacts/$t"/oom-* "artifacts/$t"/leak-*; do
      [ -e "$f" ] && echo "   replay: (cd fuzz && cargo fuzz run ${build[*]} $t $f)" >&2
    done
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: findings in: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} target(s), ${secs}s each, no finding" >&2
