#!/bin/sh
# tests/run-all.sh -- every test holdfast has, as CI runs them:
#   1. install missing Debian packages (deploy/install-deps.sh)
#   2. build in build/ with -Werror and run the unit tests (make check)
#   3. the same under AddressSanitizer + UBSan (build-asan/)
#   4. the unit tests once more under valgrind (memcheck)
#   5. integration tests: real `holdfast serve`, lighttpd and CGI processes,
#      driven over FastCGI and HTTP on loopback -- against the ASan/UBSan
#      binary, so a memory error in any server process fails the run
#   6. deployment tests: every configuration in deploy/ under real Apache
#      (mod_fcgid, mod_proxy_fcgi, mod_cgi), lighttpd and nginx
#   7. browser tests: holdfast.js under Node's test runner, the demos in
#      Debian's chromium driven by playwright-core (tests/browser/run.sh)
#   8. fuzzing the parsers for a bounded time (libFuzzer, clang)
#   9. make distcheck (the tarball builds and passes on its own)
# Set HOLDFAST_QUICK=1 to stop after step 2.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
jobs=$(nproc 2>/dev/null || echo 2)

step() { printf '\n==== %s ====\n' "$*"; }

step "dependencies"
sh deploy/install-deps.sh all

step "configure + build (-Werror)"
[ -x configure ] && [ configure -nt configure.ac ] && [ Makefile.in -nt Makefile.am ] || autoreconf -fi
mkdir -p build
(cd build && { [ -f Makefile ] || ../configure --quiet; } && make -j"$jobs")

step "unit tests"
(cd build && make -j"$jobs" check) || { cat build/tests/*.log 2>/dev/null | tail -80; exit 1; }

[ "${HOLDFAST_QUICK:-0}" = 1 ] && exit 0

step "unit tests under AddressSanitizer + UBSan"
mkdir -p build-asan
(cd build-asan && { [ -f Makefile ] || ../configure --quiet --enable-sanitizers; } &&
  make -j"$jobs" && make -j"$jobs" check) || { cat build-asan/tests/*.log | tail -80; exit 1; }

step "unit tests under valgrind"
(cd build && HOLDFAST_BIN="$top/build/holdfast" CK_FORK=no CK_DEFAULT_TIMEOUT=600 \
  valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
  --trace-children=no ./tests/check_holdfast) || { echo "valgrind found errors"; exit 1; }

step "integration tests (ASan/UBSan server)"
asan_logs=$(mktemp -d "${TMPDIR:-/tmp}/holdfast-asan.XXXXXX")
ok=0
ASAN_OPTIONS="log_path=$asan_logs/asan:detect_leaks=1" UBSAN_OPTIONS="log_path=$asan_logs/ubsan:print_stacktrace=1" \
  python3 tests/integration/run.py --bin "$top/build-asan/holdfast" || ok=1
if [ -n "$(ls -A "$asan_logs")" ]; then
  echo "sanitizer reports from server processes:"; cat "$asan_logs"/*; ok=1
fi
rm -rf "$asan_logs"
[ $ok -eq 0 ] || exit 1

step "deployment tests (every web server)"
sh tests/deploy/run.sh "$top/build/holdfast"

step "browser tests"
sh tests/browser/run.sh

step "fuzzing the parsers"
sh tests/fuzz/run.sh "${HOLDFAST_FUZZ_SECONDS:-20}"

step "make distcheck"
(cd build && make -j"$jobs" distcheck >distcheck.log 2>&1) || { tail -60 build/distcheck.log; exit 1; }
echo "distcheck ok"
