#!/usr/bin/env bash
# The whole test suite: install what is needed, build with warnings as errors,
# run every test, then build again with AddressSanitizer and
# UndefinedBehaviorSanitizer and run every test again.
set -uo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh || exit 1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export ASAN_OPTIONS=detect_leaks=1
passed=0 failed=0

run_suite() { # name dir [meson options...]
  local name=$1 dir=$2; shift 2
  echo "== $name: building $dir"
  if ! scripts/build.sh "$dir" --werror "$@"; then
    echo "== $name: build failed"; failed=$((failed + 1)); return
  fi
  echo "== $name: meson test"
  meson test -C "$dir" --print-errorlogs --num-processes 2 | tee "$dir/test-summary.txt"
  local ok fail
  ok=$(awk '/^Ok:/ {print $2}' "$dir/test-summary.txt")
  fail=$(awk '/^(Fail|Unexpected Pass|Timeout):/ {s += $2} END {print s + 0}' "$dir/test-summary.txt")
  passed=$((passed + ${ok:-0})); failed=$((failed + fail))
  [ -n "$ok" ] || failed=$((failed + 1))
}

run_suite release build-test
run_suite sanitizers build-asan -Dbuildtype=debugoptimized -Db_sanitize=address,undefined -Db_lundef=false

echo "tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
