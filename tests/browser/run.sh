#!/bin/sh
# tests/browser/run.sh -- the browser side's tests, as one command:
#   1. install what is missing from Debian's packages (node + npm, chromium,
#      lighttpd, curl) -- never a browser download
#   2. build holdfast (unless HOLDFAST_BIN names a binary)
#   3. npm ci here (playwright-core, pinned by package-lock.json)
#   4. node --test: unit/ (holdfast.js's loop with a fake fetch) and e2e/
#      (the demos in headless chromium against a private lighttpd + holdfast)
# Ends with the line "N passed, M failed"; exits non-zero on any failure.
# Screenshots and the TAP log go to build-browser/ at the top of the tree.
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
mkdir -p "$out"
tap="$out/results.tap"
rc=0
# Bounded as a whole: timeout signals the whole process group.
timeout -k 10 900 node --test --test-concurrency=1 \
  --test-reporter=spec --test-reporter-destination=stdout \
  --test-reporter=tap --test-reporter-destination="$tap" \
  unit/*.test.mjs e2e/*.test.mjs || rc=$?

pass=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$tap" | tail -1)
fail=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$tap" | tail -1)
pass=${pass:-0}
fail=${fail:-0}
[ "$rc" -ne 0 ] && [ "$fail" -eq 0 ] && fail=1   # the runner itself failed
for shot in "$out"/screenshots/*.png; do
  [ -f "$shot" ] && echo "screenshot: $shot"
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
