#!/bin/sh
# tests/browser/run.sh -- the browser side's tests, as one command:
#   1. install what is missing from Debian's packages (node + npm, chromium,
#      lighttpd, curl) -- never a browser download
#   2. build holdfast (unless HOLDFAST_BIN names a binary)
#   3. npm ci here (playwright-core, pinned by package-lock.json)
#   4. node --test: unit/ (holdfast.js's loop with a fake fetch) and e2e/
#      (the demos in headless chromium against a private lighttpd + holdfast)
# Prints the count of each part (unit, e2e) and ends with the line
# "N passed, M failed"; exits non-zero on any failure, and when a part ran no
# test or skipped one.  Screenshots and the TAP logs (unit.tap, e2e.tap,
# both in results.tap) go to build-browser/ at the top of the tree.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
out="$top/build-browser"

# ---- 1. dependencies ---------------------------------------------------------
missing=""
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
[ -x /usr/bin/chromium ] || missing="$missing chromium"
[ -x /usr/sbin/lighttpd ] || missing="$missing lighttpd"
command -v curl >/dev/null 2>&1 || missing="$missing curl"
if [ -n "$missing" ]; then
  echo "installing:$missing"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
  # shellcheck disable=SC2086
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
  # npm may come with nodejs (nodesource) or on its own (Debian)
  command -v npm >/dev/null 2>&1 ||
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends npm
fi

# ---- 2. holdfast -------------------------------------------------------------
if [ -z "${HOLDFAST_BIN:-}" ]; then
  # Like deploy/demo.sh: a tree configured in place is built in place,
  # anything else in build/.
  sh "$top/deploy/install-deps.sh" build >/dev/null
  [ -x "$top/configure" ] || (cd "$top" && autoreconf -fi >/dev/null 2>&1)
  if [ -f "$top/Makefile" ]; then bdir=$top; else bdir=$top/build; fi
  mkdir -p "$bdir"
  [ -f "$bdir/Makefile" ] || (cd "$bdir" && "$top/configure" --quiet)
  make -s -C "$bdir" holdfast >/dev/null
  HOLDFAST_BIN=$bdir/holdfast
fi
export HOLDFAST_BIN

# ---- 3. playwright-core ------------------------------------------------------
cd "$here"
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >/dev/null

# ---- 4. the tests ------------------------------------------------------------
# Two runs of node's test runner, so each part is counted on its own: unit/
# (holdfast.js with a fake fetch) and e2e/ (playwright-core driving chromium).
# A part that ran no test, or skipped one, fails: a test that did not run is
# not a pass.
mkdir -p "$out"
total_pass=0
total_fail=0
# tap_count FILE NAME: the runner's "# NAME N" line from the TAP file, or empty.
tap_count() { sed -n "s/^# $2 \([0-9]*\)\$/\1/p" "$1" | tail -1; }
run_part() {   # NAME GLOB...
  part=$1
  shift
  tap="$out/$part.tap"
  rm -f "$tap"
  rc=0
  # Bounded as a whole: timeout signals the whole process group.
  timeout -k 10 900 node --test --test-concurrency=1 \
    --test-reporter=spec --test-reporter-destination=stdout \
    --test-reporter=tap --test-reporter-destination="$tap" \
    "$@" || rc=$?
  tests=$(tap_count "$tap" tests)
  pass=$(tap_count "$tap" pass)
  fail=$(tap_count "$tap" fail)
  cancelled=$(tap_count "$tap" cancelled)
  skipped=$(tap_count "$tap" skipped)
  todo=$(tap_count "$tap" todo)
  tests=${tests:-0} pass=${pass:-0} fail=${fail:-0}
  cancelled=${cancelled:-0} skipped=${skipped:-0} todo=${todo:-0}
  echo "browser $part: $tests tests, $pass passed, $fail failed, $cancelled cancelled," \
    "$skipped skipped, $todo todo (TAP: $tap)"
  fail=$((fail + cancelled))
  if [ "$tests" -eq 0 ] || [ "$pass" -eq 0 ]; then
    echo "browser $part: no test ran"
    fail=$((fail + 1))
  fi
  if [ "$skipped" -ne 0 ] || [ "$todo" -ne 0 ]; then
    echo "browser $part: $skipped skipped and $todo todo tests did not run as tests"
    fail=$((fail + skipped + todo))
  fi
  [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ] && fail=1   # the runner itself failed
  total_pass=$((total_pass + pass))
  total_fail=$((total_fail + fail))
}
run_part unit unit/*.test.mjs
run_part e2e e2e/*.test.mjs
cat "$out/unit.tap" "$out/e2e.tap" >"$out/results.tap" 2>/dev/null || true
for shot in "$out"/screenshots/*.png; do
  [ -f "$shot" ] && echo "screenshot: $shot"
done
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
