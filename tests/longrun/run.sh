#!/bin/sh
# tests/longrun/run.sh [BUILD_DIR] -- long-run health of one holdfast worker
# (tests/longrun/longrun.py says what is driven and checked):
#   1. 100,000 park/wake/timeout/disconnect cycles against `holdfast serve
#      --workers 1` (the plain binary): RSS and open fds after a warm-up of
#      1,000 cycles and at the end (printed), bounded growth;
#   2. 5,000 cycles against the ASan/UBSan binary spawned on a listening fd 0,
#      stopped with SIGTERM so it returns from main() and LeakSanitizer
#      reports: any report fails;
#   3. 5,000 cycles against `holdfast serve --workers 1` under valgrind
#      memcheck --leak-check=full (the pool worker leaves by _exit(), which
#      LeakSanitizer does not see): any error or lost block fails.
# The plain binary: BUILD_DIR/holdfast, else $HOLDFAST_BIN, else the newer of
# ./holdfast and build/holdfast.  The sanitizer binary: $HOLDFAST_ASAN_BIN,
# else build-asan/holdfast (tests/run-all.sh builds both).  Missing either
# one, or valgrind, fails its phase: a leak check that did not run is not a
# pass.  Bounded: each phase stops by itself (LONGRUN_LIMIT seconds, 150).
# Ends with exactly one line "longrun: N passed, M failed".
set -u
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
bin=""
if [ $# -gt 0 ]; then
  bin=$1/holdfast
elif [ -n "${HOLDFAST_BIN:-}" ]; then
  bin=$HOLDFAST_BIN
else
  for b in "$top/holdfast" "$top/build/holdfast"; do
    [ -x "$b" ] || continue
    if [ -z "$bin" ] || [ "$b" -nt "$bin" ]; then bin=$b; fi
  done
fi
asan=${HOLDFAST_ASAN_BIN:-$top/build-asan/holdfast}
missing=0
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
  echo "FAIL - no plain holdfast binary${bin:+ at $bin} (make holdfast, or pass BUILD_DIR)"
  echo "longrun: 0 passed, 1 failed"
  exit 1
fi
set -- --bin "$bin"
if [ -x "$asan" ] && grep -q __asan_init "$asan" 2>/dev/null; then
  set -- "$@" --asan-bin "$asan"
else
  echo "FAIL - no sanitizer binary at $asan (configure build-asan/ with --enable-sanitizers)"
  missing=$((missing + 1))
fi
if command -v valgrind >/dev/null 2>&1; then
  set -- "$@" --valgrind
else
  echo "FAIL - valgrind is not installed (deploy/install-deps.sh test)"
  missing=$((missing + 1))
fi
echo "# plain: $bin; sanitizers: $asan"
out=$(mktemp "${TMPDIR:-/tmp}/holdfast-longrun.XXXXXX")
rc=0
python3 "$here/longrun.py" "$@" --limit "${LONGRUN_LIMIT:-150}" >"$out" 2>&1 || rc=$?
# every line but the summary, which is recounted with the phases that could not run
grep -v '^longrun: ' "$out"
set -- $(sed -n 's/^longrun: \([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' "$out") 0 1
rm -f "$out"
[ "$rc" -eq 0 ] || [ "$2" -gt 0 ] || set -- "$1" 1
echo "longrun: $1 passed, $(($2 + missing)) failed"
[ "$2" -eq 0 ] && [ "$missing" -eq 0 ]
