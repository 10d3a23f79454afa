#!/bin/sh
# tests/run-all.sh -- every test holdfast has, as CI runs them:
#   1. install missing Debian packages (deploy/install-deps.sh all)
#   2. configure build/ with the unit tests (Check) and -Werror, and build
#   3. unit tests: the Check suite (tests/check_holdfast) and the tool self-test
#   4. the same under AddressSanitizer + UBSan (build-asan/)
#   5. the unit tests once more under valgrind (memcheck)
#   6. integration tests: real `holdfast serve`, lighttpd and CGI processes,
#      driven over FastCGI and HTTP on loopback -- against the ASan/UBSan
#      binary, so a memory error in any server process fails the run
#   7. deployment tests: every configuration in deploy/ under real Apache
#      (mod_fcgid, mod_proxy_fcgi, mod_cgi), lighttpd and nginx
#   8. soak: fault injection through nginx and Apache (tests/soak/run.sh --short)
#   9. long run: RSS and fds over 100k park/wake cycles, leak check
#      (tests/longrun/run.sh)
#  10. browser tests: holdfast.js under Node's test runner, the demos in
#      Debian's chromium driven by playwright-core (tests/browser/run.sh)
#  11. Durable Streams conformance: the npm conformance suite and an
#      @durable-streams/client interop test against holdfast behind real
#      nginx and lighttpd (tests/conformance/run.sh)
#  12. fuzzing the parsers: regression inputs, then each target for
#      HOLDFAST_FUZZ_SECONDS (default 60) s (libFuzzer, clang)
#  13. make distcheck (the tarball builds and passes its unit suite on its own)
#
# Every test step prints how many tests it ran and how long it took; a step
# that ran none, or fewer than it knows it has (the unit suite: more than
# $unit_floor checks, the same number under ASan, valgrind and distcheck),
# fails -- a missing test dependency is an error, never a smaller pass.  A
# failed step does not stop the steps after it (a failed build does).  The
# last line is "run-all: N passed, M failed" (N: tests over all steps); the
# exit status is non-zero if anything failed.  Logs: build-logs/.
#
# A build directory is reused only if its Makefile's HOLDFAST_FEATURES line
# (written by configure) says it has what the tests need; one configured
# otherwise (deploy/demo.sh's --disable-tests, no sanitizers in build-asan/,
# an older configure.ac) is configured again from scratch.
#
# HOLDFAST_QUICK=1 stops after step 3 (and says so).
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
jobs=$(nproc 2>/dev/null || echo 2)
unit_floor=100
L="$top/build-logs"
mkdir -p "$L"
T0=$(date +%s)

passed_total=0
failed_total=0
table=""
failures=""
child=""

# Ctrl-C or SIGTERM: stop the running step's whole process group too.
stop_child() {
  [ -z "$child" ] || kill -TERM "$child" 2>/dev/null
  [ -z "${tailer:-}" ] || kill "$tailer" 2>/dev/null
}
trap 'stop_child; exit 130' INT
trap 'stop_child; exit 143' TERM
trap 'stop_child; exit 129' HUP

begin() {
  step_name=$1
  step_t0=$(date +%s)
  step_bad=""
  printf '\n==== %s ====\n' "$1"
}
# bad MESSAGE: the current step failed (it counts at least one failure).
bad() {
  step_bad="$step_bad; $*"
  echo "run-all: $step_name: FAILED: $*"
}
row() {  # NAME PASSED FAILED SECONDS
  table="$table
$(printf '  %-44s %6s tests %4s failed %6s s' "$1" "$2" "$3" "$4")"
}
# finish PASSED FAILED: the current step's counts and time, into the summary.
finish() {
  p=${1:-0} f=${2:-0}
  [ -n "$step_bad" ] && [ "$f" -eq 0 ] && f=1
  secs=$(($(date +%s) - step_t0))
  passed_total=$((passed_total + p))
  failed_total=$((failed_total + f))
  reason=${step_bad#; }
  [ -n "$reason" ] || reason="$f tests failed"
  [ "$f" -eq 0 ] || failures="$failures
  $step_name: $reason"
  row "$step_name" "$p" "$f" "$secs"
  echo "---- $step_name: $p tests passed, $f failed ($secs s)"
}
# finish_setup: a step that runs no test (dependencies, build): its time only.
finish_setup() {
  secs=$(($(date +%s) - step_t0))
  row "$step_name" - - "$secs"
  echo "---- $step_name: done ($secs s)"
}
summary() {
  printf '\n==== summary ====%s\n' "$table"
  echo "  total: $(($(date +%s) - T0)) s"
  if [ -n "${HOLDFAST_CI_START:-}" ]; then
    echo "  CI in all (.ci/run: demo check + this): $(($(date +%s) - HOLDFAST_CI_START)) s"
  fi
  [ -z "$failures" ] || echo "failed:$failures"
  echo "run-all: $passed_total passed, $failed_total failed"
}
# abort MESSAGE: nothing after this step can run.
abort() {
  bad "$*"
  finish 0 1
  summary
  exit 1
}

# run LOG LIMIT CMD...: run CMD (an external command) in its own process
# group, killed if it takes more than LIMIT seconds; its output goes to LOG
# and, unless QUIET=1, to the terminal as it comes.  Sets rc.
run() {
  log=$1 limit=$2
  shift 2
  : >"$log"
  timeout -k 30 "$limit" "$@" >"$log" 2>&1 </dev/null &
  child=$!
  tailer=""
  if [ "${QUIET:-0}" != 1 ]; then
    tail -n +1 -f --pid="$child" "$log" &
    tailer=$!
  fi
  rc=0
  wait "$child" || rc=$?
  [ -z "$tailer" ] || wait "$tailer" 2>/dev/null
  child=""
  tailer=""
  [ "$rc" -ne 124 ] || bad "timed out after $limit s (log: $log)"
}

# check_summary LOG: "CHECKS FAILURES ERRORS" from Check's summary line
# ("100%: Checks: 120, Failures: 0, Errors: 0"), or nothing.
check_summary() {
  sed -n 's/^[0-9]*%: Checks: \([0-9]*\), Failures: \([0-9]*\), Errors: \([0-9]*\)$/\1 \2 \3/p' \
    "$1" 2>/dev/null | tail -n 1
}
# last_counts LOG: "PASSED FAILED SKIPPED" from LOG's last non-empty line,
# which must be "[word: ]N passed, M failed[, K skipped]"; nothing if not.
last_counts() {
  grep -v '^[[:space:]]*$' "$1" 2>/dev/null | tail -n 1 | tr -d '\r' |
    sed -n 's/^\([A-Za-z0-9_-]*: \)\{0,1\}\([0-9][0-9]*\) passed, \([0-9][0-9]*\) failed\(, \([0-9][0-9]*\) skipped\)\{0,1\}$/\2 \3 \5/p'
}
# count_step LOG WHAT: finish the step from LOG's last line; at least one
# test must have passed, none skipped, and the command must have exited 0.
count_step() {
  set -- $(last_counts "$1") "$1" "$2"
  if [ $# -lt 4 ]; then
    bad "$2 did not end with a 'N passed, M failed' line (log: $1)"
    finish 0 1
    return
  fi
  p=$1 f=$2
  if [ $# -eq 5 ]; then s=$3; log=$4; what=$5; else s=0; log=$3; what=$4; fi
  [ "$rc" -eq 0 ] || bad "$what exited $rc (log: $log)"
  [ "$p" -gt 0 ] || bad "$what ran no test"
  [ "$s" -eq 0 ] || bad "$what skipped $s tests"
  finish "$p" "$f"
}

# features SANITIZERS: the HOLDFAST_FEATURES line a build directory for the
# tests must have; the features=N generation is read from configure.ac.
features() {
  gen=$(sed -n 's/^HOLDFAST_FEATURES="features=\([0-9][0-9]*\) .*/\1/p' configure.ac)
  echo "features=$gen tests=yes sanitizers=$1"
}
# prepare DIR SANITIZERS(yes|no): DIR configured the way the tests need,
# configuring it (from scratch) when its config.status and Makefile say
# otherwise.
prepare() {
  dir=$1 san=$2
  want=$(features "$san")
  have=""
  if [ -f "$dir/config.status" ] && [ -f "$dir/Makefile" ]; then
    have=$(sed -n 's/^HOLDFAST_FEATURES = //p' "$dir/Makefile")
    [ "$have" != "$want" ] || return 0
    echo "$dir/ was configured with '${have:-no HOLDFAST_FEATURES line: an older configure.ac}';" \
      "the tests need '$want': configuring it again from scratch"
  elif [ -e "$dir" ]; then
    echo "$dir/ has no complete configuration (config.status, Makefile): configuring it from scratch"
  fi
  rm -rf "$dir"
  mkdir -p "$dir"
  flags="--quiet"
  [ "$san" = no ] || flags="$flags --enable-sanitizers"
  # shellcheck disable=SC2086
  (cd "$dir" && ../configure $flags) || return 1
  have=$(sed -n 's/^HOLDFAST_FEATURES = //p' "$dir/Makefile")
  [ "$have" = "$want" ] || { echo "$dir/: configure made '$have', not '$want'"; return 1; }
}

# unit_counts DIR: "PASSED FAILED CHECKS" of DIR's last `make check` (the Check
# suite's summary plus the tool self-test's "N passed, M failed"); complains
# through bad.
unit_counts() {
  d=$1
  cs=$(check_summary "$d/tests/check_holdfast.log")
  st=$(sed -n 's/^tools-selftest: \([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' \
    "$d/tests/tools-selftest.sh.log" 2>/dev/null | tail -n 1)
  set -- ${cs:-0 0 0} ${st:-0 0}
  [ -n "$cs" ] || bad "no Check summary in $d/tests/check_holdfast.log: the unit suite did not run"
  [ "$1" -gt "$unit_floor" ] || bad "the unit suite ran $1 checks; it has more than $unit_floor"
  [ -n "$st" ] && [ "$4" -gt 0 ] || bad "the tool self-test (tests/tools-selftest.sh) ran no check"
  echo "unit suite: $1 checks, $2 failures, $3 errors; tool self-test: $4 passed, $5 failed"
  counts="$(($1 - $2 - $3 + $4)) $(($2 + $3 + $5)) $1"
}

# ---- 1. dependencies ---------------------------------------------------------
begin "dependencies"
run "$L/deps.log" 1800 sh deploy/install-deps.sh all
[ "$rc" -eq 0 ] || abort "deploy/install-deps.sh all exited $rc (log: $L/deps.log)"
finish_setup

# ---- 2. configure + build ----------------------------------------------------
begin "configure + build (-Werror)"
if [ -f config.status ]; then
  abort "the source tree is configured in place (./config.status): run 'make distclean' at the top first"
fi
if ! { [ -x configure ] && [ configure -nt configure.ac ] && [ Makefile.in -nt Makefile.am ]; }; then
  run "$L/autoreconf.log" 600 autoreconf -fi
  [ "$rc" -eq 0 ] || abort "autoreconf -fi exited $rc"
fi
prepare build no || abort "configuring build/ failed (build/config.log)"
run "$L/build.log" 1200 make -C build -j"$jobs"
[ "$rc" -eq 0 ] || abort "make in build/ exited $rc"
finish_setup

# ---- 3. unit tests -----------------------------------------------------------
begin "unit tests"
rm -f build/tests/check_holdfast.log build/tests/tools-selftest.sh.log build/test-suite.log
run "$L/unit.log" 1200 make -C build -j"$jobs" check
[ "$rc" -eq 0 ] || { bad "make check exited $rc"; tail -n 80 build/tests/*.log 2>/dev/null; }
unit_counts build
unit_checks=${counts##* }
set -- $counts
finish "$1" "$2"

if [ "${HOLDFAST_QUICK:-0}" = 1 ]; then
  echo "HOLDFAST_QUICK=1: stopped after the unit tests; the other steps did not run"
  summary
  [ "$failed_total" -eq 0 ]
  exit
fi

# ---- 4. unit tests under ASan + UBSan ----------------------------------------
begin "unit tests under ASan + UBSan"
if prepare build-asan yes; then
  rm -f build-asan/tests/check_holdfast.log build-asan/tests/tools-selftest.sh.log
  run "$L/unit-asan.log" 1800 sh -c 'make -C build-asan -j"$1" && make -C build-asan -j"$1" check' sh "$jobs"
  [ "$rc" -eq 0 ] || { bad "make check in build-asan/ exited $rc"; tail -n 80 build-asan/tests/*.log 2>/dev/null; }
  unit_counts build-asan
  set -- $counts
  [ "$3" -eq "$unit_checks" ] || bad "ran $3 checks under ASan, $unit_checks in the plain run"
  finish "$1" "$2"
else
  bad "configuring build-asan/ failed (build-asan/config.log)"
  finish 0 1
fi

# ---- 5. unit tests under valgrind --------------------------------------------
begin "unit tests under valgrind"
if [ -x build/tests/check_holdfast ]; then
  run "$L/valgrind.log" 1800 sh -c 'cd build && HOLDFAST_BIN="$1/build/holdfast" CK_FORK=no CK_DEFAULT_TIMEOUT=600 \
    exec valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
    --trace-children=no ./tests/check_holdfast' sh "$top"
  [ "$rc" -ne 99 ] || bad "valgrind found errors (log: $L/valgrind.log)"
  [ "$rc" -eq 0 ] || [ "$rc" -eq 99 ] || bad "tests/check_holdfast under valgrind exited $rc"
  set -- $(check_summary "$L/valgrind.log") 0 0 0
  [ "$1" -eq "$unit_checks" ] || bad "ran $1 checks under valgrind, $unit_checks in the plain run"
  finish "$(($1 - $2 - $3))" "$(($2 + $3))"
else
  bad "no build/tests/check_holdfast: build/ has no unit tests"
  finish 0 1
fi

# ---- 6. integration tests ----------------------------------------------------
begin "integration tests (ASan/UBSan server)"
asan_logs=$(mktemp -d "${TMPDIR:-/tmp}/holdfast-asan.XXXXXX")
run "$L/integration.log" 1800 env ASAN_OPTIONS="log_path=$asan_logs/asan:detect_leaks=1" \
  UBSAN_OPTIONS="log_path=$asan_logs/ubsan:print_stacktrace=1" \
  python3 tests/integration/run.py --bin "$top/build-asan/holdfast"
if [ -n "$(ls -A "$asan_logs")" ]; then
  echo "sanitizer reports from server processes:"
  cat "$asan_logs"/*
  bad "sanitizer reports from server processes"
fi
rm -rf "$asan_logs"
count_step "$L/integration.log" tests/integration/run.py

# ---- 7. deployment tests -----------------------------------------------------
begin "deployment tests (every web server)"
run "$L/deploy.log" 1800 sh tests/deploy/run.sh "$top/build/holdfast"
count_step "$L/deploy.log" tests/deploy/run.sh

# ---- 8, 9. soak and long run ---------------------------------------------------
# step_script NAME SCRIPT ARGS...: a test script that must exist and end
# with "name: N passed, M failed".
step_script() {
  begin "$1"
  script=$2
  shift 2
  if [ ! -f "$script" ]; then
    bad "$script is missing: this step cannot run, so the run fails"
    finish 0 1
    return
  fi
  run "$L/$(basename "$(dirname "$script")").log" 1800 env HOLDFAST_BIN="$top/build/holdfast" sh "$script" "$@"
  count_step "$L/$(basename "$(dirname "$script")").log" "$script"
}
step_script "soak (nginx, Apache, faults)" tests/soak/run.sh --short
step_script "long run (RSS, fds, leaks)" tests/longrun/run.sh

# ---- 10. browser tests -------------------------------------------------------
begin "browser tests (node unit, playwright e2e)"
run "$L/browser.log" 2400 env HOLDFAST_BIN="$top/build/holdfast" sh tests/browser/run.sh
count_step "$L/browser.log" tests/browser/run.sh

# ---- 11. Durable Streams conformance -----------------------------------------
begin "Durable Streams conformance (nginx, lighttpd)"
run "$L/conformance.log" 1200 env HOLDFAST_BIN="$top/build/holdfast" sh tests/conformance/run.sh
count_step "$L/conformance.log" tests/conformance/run.sh

# ---- 12. fuzzing -------------------------------------------------------------
begin "fuzzing"
fuzz_secs=${HOLDFAST_FUZZ_SECONDS:-60}
if [ "${CI:-}" = true ] && [ "$fuzz_secs" -lt 60 ]; then
  echo "CI: fuzzing each target for 60 s, not $fuzz_secs"
  fuzz_secs=60
fi
run "$L/fuzz.log" 3600 sh tests/fuzz/run.sh "$fuzz_secs"
count_step "$L/fuzz.log" tests/fuzz/run.sh

# ---- 13. make distcheck ------------------------------------------------------
# Check writes the unit suite's results, summary line included, to
# CK_LOG_FILE_NAME too: that is how the count from inside distcheck's own
# build gets out of it (whose logs distcheck removes).
begin "make distcheck"
rm -f "$L/distcheck-unit.log"
QUIET=1 run "$L/distcheck.log" 2400 env CK_LOG_FILE_NAME="$L/distcheck-unit.log" make -C build -j"$jobs" distcheck
grep -A 2 'archives ready for distribution' "$L/distcheck.log" || true
{ echo "==== the unit suite inside distcheck (CK_LOG_FILE_NAME) ===="; cat "$L/distcheck-unit.log" 2>/dev/null; } >>"$L/distcheck.log"
[ "$rc" -eq 0 ] || { bad "make distcheck exited $rc (log: $L/distcheck.log)"; tail -n 60 "$L/distcheck.log"; }
set -- $(check_summary "$L/distcheck-unit.log") 0 0 0
echo "unit suite inside distcheck: $1 checks, $2 failures, $3 errors"
[ "$1" -eq "$unit_checks" ] || bad "the unit suite ran $1 checks inside distcheck, $unit_checks in the plain run"
selftest=0
grep -q '^PASS: tests/tools-selftest.sh' "$L/distcheck.log" && selftest=1
[ "$selftest" -eq 1 ] || bad "the tool self-test did not pass inside distcheck"
finish "$(($1 - $2 - $3 + selftest))" "$(($2 + $3))"

summary
[ "$failed_total" -eq 0 ]
