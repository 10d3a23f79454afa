#!/bin/sh
# deploy/demo.sh -- the README's first command: lighttpd + holdfast + an
# embedded SQLite log on 127.0.0.1, serving www/.  Installs what is missing
# (Debian, through deploy/install-deps.sh), builds if anything changed, prints
# the URL, and stops everything it started on Ctrl-C (or SIGTERM, or when
# either server dies).
#   PORT=8080 (default)  HOLDFAST_WORKERS=2 (default)
# Everything it writes is under var/: demo.db (the log), holdfast.conf,
# lighttpd.conf, holdfast.sock, the logs, and publish.key: the demo's
# publish key (made once, random), which the dashboard publisher sends.
# Only the chat channels (chat.*) are open to anyone, with their own size
# and rate limits; every other channel needs the key.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
port=${PORT:-8080}
var="$top/var"
cd "$top"

sh deploy/install-deps.sh demo

# Build the program only (make does nothing when nothing changed): the demo
# needs no unit tests, so it configures --disable-tests and needs no Check.
# A tree configured in place is built in place; anything else in
# build-demo/, which is the demo's alone: tests/run-all.sh configures build/
# and build-asan/ with the tests, so neither ever reconfigures (or rebuilds
# under a running server) the other's directory.
if [ ! -x configure ]; then
  autoreconf -fi >"$top/autoreconf.log" 2>&1 || {
    echo "autoreconf failed:" >&2; tail -20 "$top/autoreconf.log" >&2; exit 1; }
  rm -f "$top/autoreconf.log"
fi
if [ -f Makefile ]; then bdir=$top; else bdir=$top/build-demo; fi
mkdir -p "$bdir"
if [ ! -f "$bdir/Makefile" ]; then
  (cd "$bdir" && "$top/configure" --quiet --disable-tests) || {
    echo "configure failed; see $bdir/config.log" >&2; exit 1; }
fi
make -s -j"$(nproc 2>/dev/null || echo 2)" -C "$bdir" holdfast >/dev/null || {
  echo "building holdfast failed: make -C $bdir holdfast" >&2; exit 1; }

mkdir -p "$var"
if [ ! -s "$var/publish.key" ]; then
  (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$var/publish.key")
fi
key=$(cat "$var/publish.key")
(umask 077 && cat >"$var/holdfast.conf" <<CONF
db = $var/demo.db
listen = unix:$var/holdfast.sock
workers = ${HOLDFAST_WORKERS:-2}
poll_timeout = 25
publish_key = $key
# The chat demo publishes from the browser: open, but small and slow.
[channel chat.*]
publish = anyone
max_body = 4k
publish_rate = 5
publish_burst = 20
[channel metrics.*]
retain_messages = 500
CONF
)
cat >"$var/lighttpd.conf" <<CONF
server.modules = ("mod_fastcgi")
server.document-root = "$top/www"
server.bind = "127.0.0.1"
server.port = $port
server.errorlog = "$var/lighttpd.error.log"
server.upload-dirs = ("$var")
index-file.names = ("index.html")
mimetype.assign = (".html" => "text/html; charset=utf-8", ".js" => "text/javascript",
                   ".mjs" => "text/javascript", ".css" => "text/css", ".svg" => "image/svg+xml",
                   ".png" => "image/png", ".json" => "application/json")
# event streams: pass each piece of an answer on as holdfast writes it
server.stream-response-body = 2
# /lp (no trailing slash): /lp/sub/demo arrives as PATH_INFO=/sub/demo.
fastcgi.server = ("/lp" => ((
    "socket" => "$var/holdfast.sock",
    "check-local" => "disable"
)))
CONF

hf=""
lt=""
pub=""
nap=""
# Running, and not a zombie this shell has yet to reap.
alive() {
  kill -0 "$1" 2>/dev/null && ! grep -qs '^State:[[:space:]]*Z' "/proc/$1/status"
}
cleanup() {
  trap - INT TERM HUP EXIT
  # holdfast first: it answers its waiting subscribers (through lighttpd)
  # and stops its workers (at most ~10 s); then lighttpd, which stops at
  # once on SIGTERM.  Both must exit 0 when asked to stop; if one does not,
  # the demo's exit status says so (1) instead of the signal's (143 for
  # SIGTERM, 130 for Ctrl-C).
  for pid in $nap $pub; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  unclean=""
  for pid in $hf $lt; do
    st=0
    if alive "$pid"; then
      kill "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || st=$?
    else
      wait "$pid" 2>/dev/null || st=$?
      [ "$st" -eq 127 ] && st=0   # reaped already
    fi
    if [ "$st" -ne 0 ]; then
      if [ "$pid" = "$hf" ]; then unclean="$unclean holdfast($st)"; else unclean="$unclean lighttpd($st)"; fi
    fi
  done
  rm -f "$var/holdfast.sock"
  if [ -n "$unclean" ]; then
    echo "stopped, but not cleanly (exit status):$unclean; see $var/" >&2
    exit 1
  fi
  echo "stopped."
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# A socket left by a run that was killed would look ready before holdfast is.
rm -f "$var/holdfast.sock"
"$bdir/holdfast" serve --config "$var/holdfast.conf" 2>>"$var/holdfast.log" &
hf=$!
i=0
while [ ! -S "$var/holdfast.sock" ]; do
  if ! alive "$hf" || [ $i -ge 100 ]; then
    echo "holdfast did not start; see $var/holdfast.log:" >&2
    tail -5 "$var/holdfast.log" >&2
    exit 1
  fi
  sleep 0.1
  i=$((i + 1))
done
/usr/sbin/lighttpd -D -f "$var/lighttpd.conf" 2>>"$var/lighttpd.error.log" &
lt=$!
i=0
until curl -fso /dev/null --max-time 2 "http://127.0.0.1:$port/lp/health"; do
  if ! alive "$lt" || [ $i -ge 50 ]; then
    echo "lighttpd did not start on 127.0.0.1:$port (in use? try PORT=8081 $0);" \
      "see $var/lighttpd.error.log:" >&2
    tail -3 "$var/lighttpd.error.log" >&2
    exit 1
  fi
  sleep 0.1
  i=$((i + 1))
done
# Live values for the dashboard demo (metrics.demo, one per key).
HOLDFAST_PUBLISH_KEY=$key sh deploy/dashboard-publisher.sh -u "http://127.0.0.1:$port/lp" \
  2>>"$var/publisher.log" >/dev/null &
pub=$!
echo "holdfast demo: http://127.0.0.1:$port/   (API under http://127.0.0.1:$port/lp/)"
echo "chat: http://127.0.0.1:$port/chat.html   dashboard: http://127.0.0.1:$port/dashboard.html"
echo "publish:  curl -H \"Authorization: Bearer \$(cat $var/publish.key)\" -d hello http://127.0.0.1:$port/lp/pub/demo"
echo "          (chat.* is open to anyone: curl -d hello http://127.0.0.1:$port/lp/pub/chat.lobby)"
echo "log: $var/demo.db; server logs in $var/; Ctrl-C stops."
# Wait until interrupted, or until one of the servers dies.
while alive "$hf" && alive "$lt"; do
  sleep 1 &
  nap=$!
  wait "$nap" || true
  nap=""
done
echo "a server stopped unexpectedly; see $var/holdfast.log and $var/lighttpd.error.log" >&2
exit 1
