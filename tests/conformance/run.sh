#!/bin/sh
# tests/conformance/run.sh -- the Durable Streams conformance suite and a
# client interop test against holdfast behind real web servers, one command:
#   1. install what is missing from Debian's packages (node + npm, nginx,
#      lighttpd, curl, python3)
#   2. build holdfast (unless HOLDFAST_BIN names a binary)
#   3. npm ci here (@durable-streams/server-conformance-tests,
#      @durable-streams/client and vitest, pinned by package-lock.json)
#   4. for each server (nginx, lighttpd-spawn; HOLDFAST_CONFORMANCE_SERVERS
#      to change, lighttpd-socket is the third): serve.py starts it from the
#      shipped deploy/ files on 127.0.0.1 and a free port (through
#      tests/deploy/deploy_test.py's classes), holdfast mounted at /lp; vitest
#      runs the suite's own dist/test-runner.js with CONFORMANCE_TEST_URL=
#      http://127.0.0.1:PORT/lp (at most HOLDFAST_CONFORMANCE_TIMEOUT s, 600);
#      against nginx also client.test.mjs (node --test, @durable-streams/client
#      and the cross-surface checks); then the servers stop, leaving nothing.
#   5. verdict.py judges each server's JSON report against
#      expected-failures.txt (see there, and README).
# Prints per server "conformance SERVER: P passed, F failed (E expected), ..."
# with the tests to add to or take off the list, the interop count, and ends
# with the line "N passed, M failed"; exits non-zero on any failure.  Reports
# (JSON per server, TAP), the servers' logs and settings: build-conformance/
# at the top of the tree.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
out="$top/build-conformance"
servers=${HOLDFAST_CONFORMANCE_SERVERS:-nginx lighttpd-spawn}
settings=${HOLDFAST_CONFORMANCE_CONF:-$here/holdfast-conformance.conf}
interop_on=${HOLDFAST_CONFORMANCE_INTEROP:-nginx}
suite_limit=${HOLDFAST_CONFORMANCE_TIMEOUT:-600}

# ---- 1. dependencies ---------------------------------------------------------
missing=""
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
[ -x /usr/sbin/nginx ] || missing="$missing nginx"
[ -x /usr/sbin/lighttpd ] || missing="$missing lighttpd"
command -v curl >/dev/null 2>&1 || missing="$missing curl"
command -v python3 >/dev/null 2>&1 || missing="$missing python3"
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

# vitest 4 runs on vite 8, which needs Node 20.19 or later (Debian 12's own
# nodejs is 18; tests/browser's playwright-core needs 20 as well).
if ! node -e 'const [a, b] = process.versions.node.split(".").map(Number);
    process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)'; then
  echo "conformance: Node $(node --version) is too old: vitest 4 (vite 8) needs 20.19 or later"
  echo "0 passed, 1 failed"
  exit 1
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

# ---- 3. the suite, the client, vitest ----------------------------------------
cd "$here"
npm ci --no-audit --no-fund --loglevel=error >/dev/null
suite_pkg=$here/node_modules/@durable-streams/server-conformance-tests
[ -f "$suite_pkg/dist/test-runner.js" ] || {
  echo "conformance: npm ci left no $suite_pkg/dist/test-runner.js"
  echo "0 passed, 1 failed"
  exit 1
}

# ---- 4, 5. each server -------------------------------------------------------
mkdir -p "$out"
# Output without colour codes (the log is a file); vitest's own CI detection
# must not change what it runs.
export NO_COLOR=1
unset FORCE_COLOR 2>/dev/null || true
total_pass=0
total_fail=0
summary=""
serve_pid=""
child=""
# Ctrl-C, SIGTERM (run-all's timeout): stop the running test command and the
# servers (through serve.py, which stops them and checks nothing is left).
# Each `timeout` runs its command in a process group of its own and passes a
# signal it gets on to it.
cleanup() {
  for pid in $child $serve_pid; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in $child $serve_pid; do
    wait "$pid" 2>/dev/null || true
  done
  child="" serve_pid=""
}
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM
trap 'cleanup; exit 129' HUP

# bounded LIMIT CMD...: CMD under `timeout`, waited for in the background so
# that a signal to this script is handled at once, not when CMD ends.  Sets rc.
bounded() {
  limit=$1
  shift
  timeout -k 10 "$limit" "$@" </dev/null &
  child=$!
  rc=0
  wait "$child" || rc=$?
  child=""
}

# tap_count FILE NAME: the runner's "# NAME N" line from the TAP file, or empty.
tap_count() { sed -n "s/^# $2 \([0-9]*\)\$/\1/p" "$1" | tail -1; }

# interop URL: client.test.mjs against the deployment at URL.
interop() {
  tap="$out/interop-$2.tap"
  rm -f "$tap"
  bounded 180 env DS_BASE_URL="$1" node --test --test-concurrency=1 \
    --test-reporter=spec --test-reporter-destination=stdout \
    --test-reporter=tap --test-reporter-destination="$tap" \
    "$here/client.test.mjs"
  irc=$rc
  tests=$(tap_count "$tap" tests) pass=$(tap_count "$tap" pass) fail=$(tap_count "$tap" fail)
  cancelled=$(tap_count "$tap" cancelled) skipped=$(tap_count "$tap" skipped)
  todo=$(tap_count "$tap" todo)
  tests=${tests:-0} pass=${pass:-0} fail=${fail:-0}
  cancelled=${cancelled:-0} skipped=${skipped:-0} todo=${todo:-0}
  line="interop ($2, @durable-streams/client): $tests tests, $pass passed, $fail failed,"
  line="$line $cancelled cancelled, $skipped skipped, $todo todo (TAP: $tap)"
  fail=$((fail + cancelled + skipped + todo))
  if [ "$tests" -eq 0 ] || [ "$pass" -eq 0 ]; then
    line="$line; no test ran"
    fail=$((fail + 1))
  fi
  [ "$irc" -eq 124 ] && line="$line; timed out after 180 s"
  [ "$irc" -ne 0 ] && [ "$fail" -eq 0 ] && fail=1   # the runner itself failed
  echo "$line"
  summary="$summary
$line"
  total_pass=$((total_pass + pass))
  total_fail=$((total_fail + fail))
}

for server in $servers; do
  echo
  echo "==== conformance: $server ===="
  info="$out/$server.info.json"
  report="$out/conformance-$server.json"
  counts="$out/$server.counts"
  rm -f "$info" "$info.tmp" "$report" "$counts"
  # serve.py runs until told to stop; its own limit bounds it if we die.
  timeout -k 60 $((suite_limit + 600)) python3 "$here/serve.py" --server "$server" \
    --bin "$HOLDFAST_BIN" --conf "$settings" --info "$info" --logs "$out/logs-$server" \
    --max-seconds $((suite_limit + 480)) </dev/null &
  serve_pid=$!
  i=0
  while [ ! -f "$info" ] && kill -0 "$serve_pid" 2>/dev/null && [ $i -lt 900 ]; do
    sleep 0.1
    i=$((i + 1))
  done
  notes=""
  if [ -f "$info" ]; then
    url=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["url"])' "$info")
    bounded "$suite_limit" env CONFORMANCE_TEST_URL="$url" \
      "$here/node_modules/.bin/vitest" run --config "$here/vitest.config.mjs" \
      --reporter=default --reporter=json --outputFile.json="$report"
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
      notes="vitest killed after $suite_limit s (HOLDFAST_CONFORMANCE_TIMEOUT)"
    fi
    case " $interop_on " in
      *" $server "*) interop "$url" "$server" ;;
    esac
  else
    notes="$server did not start (see the serve lines above; logs: $out/logs-$server)"
    case " $interop_on " in
      *" $server "*)
        line="interop ($server): did not run, $server did not start"
        echo "$line"
        summary="$summary
$line"
        total_fail=$((total_fail + 1)) ;;
    esac
  fi
  src=0
  kill -TERM "$serve_pid" 2>/dev/null || true
  wait "$serve_pid" || src=$?
  serve_pid=""
  if [ "$src" -ne 0 ] && [ -f "$info" ]; then
    notes="${notes:+$notes; }serve.py for $server exited $src (a server died, or did not stop cleanly: see above)"
  fi
  set --
  [ -z "$notes" ] || set -- --note "$notes"
  verdict=$(python3 "$here/verdict.py" --server "$server" --report "$report" \
    --expected "$here/expected-failures.txt" --suite-package "$suite_pkg" \
    --counts "$counts" "$@") || true
  echo "$verdict"
  summary="$summary
$(echo "$verdict" | grep '^conformance ')"
  if [ -f "$counts" ]; then
    read -r p f <"$counts"
  else
    p=0 f=1
    summary="$summary
conformance $server: verdict.py wrote no counts"
  fi
  total_pass=$((total_pass + p))
  total_fail=$((total_fail + f))
done

echo
echo "==== conformance summary ($HOLDFAST_BIN) ====$summary"
echo "reports: $out/conformance-SERVER.json, $out/interop-SERVER.tap; servers' logs: $out/logs-SERVER/"
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
