#!/bin/sh
# deploy/demo.sh -- the README's first command: lighttpd + holdfast + an
# embedded SQLite log on 127.0.0.1, serving www/.  Installs what is missing
# (Debian), builds if needed, prints the URL, stops everything on Ctrl-C.
#   PORT=8080 (default)  HOLDFAST_WORKERS=2 (default)
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
port=${PORT:-8080}
var="$top/var"
cd "$top"

sh deploy/install-deps.sh build >/dev/null
command -v lighttpd >/dev/null 2>&1 || [ -x /usr/sbin/lighttpd ] || {
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get install -y -q --no-install-recommends lighttpd >/dev/null; }

# Build (make does nothing when nothing changed); a tree configured in
# place is built in place, anything else in build/.
[ -x configure ] || autoreconf -fi >/dev/null 2>&1
if [ -f Makefile ]; then bdir=$top; else bdir=$top/build; fi
mkdir -p "$bdir"
[ -f "$bdir/Makefile" ] || (cd "$bdir" && "$top/configure" --quiet)
make -s -C "$bdir" holdfast >/dev/null

mkdir -p "$var"
cat >"$var/holdfast.conf" <<CONF
db = $var/demo.db
listen = unix:$var/holdfast.sock
workers = ${HOLDFAST_WORKERS:-2}
poll_timeout = 25
[channel metrics.*]
retain_messages = 500
CONF
cat >"$var/lighttpd.conf" <<CONF
server.modules = ("mod_fastcgi")
server.document-root = "$top/www"
server.bind = "127.0.0.1"
server.port = $port
server.errorlog = "$var/lighttpd.error.log"
index-file.names = ("index.html")
mimetype.assign = (".html" => "text/html; charset=utf-8", ".js" => "text/javascript",
                   ".mjs" => "text/javascript", ".css" => "text/css", ".svg" => "image/svg+xml",
                   ".png" => "image/png", ".json" => "application/json")
fastcgi.server = ("/lp" => ((
    "socket" => "$var/holdfast.sock",
    "check-local" => "disable"
)))
CONF

pids=""
cleanup() {
  trap - INT TERM EXIT
  [ -n "$pids" ] && kill $pids 2>/dev/null || true
  wait 2>/dev/null || true
  echo "stopped."
}
trap cleanup INT TERM EXIT

"$bdir/holdfast" serve --config "$var/holdfast.conf" 2>>"$var/holdfast.log" &
pids="$!"
i=0
while [ ! -S "$var/holdfast.sock" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
/usr/sbin/lighttpd -D -f "$var/lighttpd.conf" &
pids="$pids $!"
sleep 0.3
echo "holdfast demo: http://127.0.0.1:$port/   (API under http://127.0.0.1:$port/lp/)"
echo "publish:  curl -d 'hello' http://127.0.0.1:$port/lp/pub/demo"
echo "logs in $var/; Ctrl-C stops."
wait
