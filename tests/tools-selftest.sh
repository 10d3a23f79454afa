#!/bin/sh
# tests/tools-selftest.sh [BUILDDIR] -- prove the test tools before the
# server exists: hf-fcgi against the fake libfcgi responder (fcgi_echo), and
# lpload against the fake long-poll server (tests/bench/fake_lp.py), directly
# and behind nginx and lighttpd when they are installed.
#
# Builds nothing.  Binaries default to BUILDDIR/tests/hf-fcgi,
# BUILDDIR/tests/fcgi_echo and BUILDDIR/tests/bench/lpload (BUILDDIR defaults
# to .); override with HF_FCGI, FCGI_ECHO, LPLOAD.  A missing lpload or
# python3 skips the lpload part; HF_SELFTEST_WEBSERVERS=0 skips nginx and
# lighttpd.  Everything listens on 127.0.0.1 or unix sockets in a temporary
# directory; every wait is bounded.  Exit 0 if every check passed.
set -u
b=${1:-.}
top=$(cd "$(dirname "$0")/.." && pwd)
HF_FCGI=${HF_FCGI:-$b/tests/hf-fcgi}
FCGI_ECHO=${FCGI_ECHO:-$b/tests/fcgi_echo}
LPLOAD=${LPLOAD:-$b/tests/bench/lpload}
FAKE_LP=$top/tests/bench/fake_lp.py
WEBSERVERS=${HF_SELFTEST_WEBSERVERS:-1}

dir=$(mktemp -d "${TMPDIR:-/tmp}/hf-tools.XXXXXX")
pids=""
pass=0
fail=0

cleanup() {
  for p in $pids; do kill "$p" 2>/dev/null; done
  for p in $pids; do wait "$p" 2>/dev/null; done
  rm -rf "$dir"
}
trap cleanup EXIT INT TERM

# spawn CMD...: start a helper in the background and remember its pid.
spawn() {
  "$@" &
  pids="$pids $!"
  last_pid=$!
}

ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; [ -n "${2:-}" ] && sed 's/^/     | /' "$2" | head -20; }

# check NAME CMD...: the command's exit status decides.
check() {
  name=$1
  shift
  if "$@" >"$dir/check.out" 2>&1; then ok "$name"; else bad "$name" "$dir/check.out"; fi
}

# wait_for PATH [TENTHS]: until the file exists (a socket or a port file).
wait_for() {
  i=0
  while [ ! -e "$1" ] && [ $i -lt "${2:-50}" ]; do sleep 0.1; i=$((i + 1)); done
  [ -e "$1" ]
}

# free_port: an unused TCP port on 127.0.0.1 (asked from the kernel).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# ---- hf-fcgi against fcgi_echo --------------------------------------------

hf_checks() {
  e=$dir/echo.sock
  long=$(printf '%0300d' 0 | tr 0 L)
  "$HF_FCGI" -H 'X-Foo: bar' -H "X-Long: $long" "unix:$e" '/sub/news%20x?since=3&epoch=ab' \
    >"$dir/get.out" 2>&1
  check "hf-fcgi GET exits 0" test $? -eq 0
  check "hf-fcgi GET prints the status first" test "$(head -1 "$dir/get.out")" = 200
  check "hf-fcgi GET passes the decoded PATH_INFO" grep -qx 'param PATH_INFO=/sub/news x' "$dir/get.out"
  check "hf-fcgi GET passes the raw QUERY_STRING" grep -qx 'param QUERY_STRING=since=3&epoch=ab' "$dir/get.out"
  check "hf-fcgi GET maps headers to HTTP_*" grep -qx 'param HTTP_X_FOO=bar' "$dir/get.out"
  check "hf-fcgi sends a 300-byte value (4-byte length)" grep -qx "param HTTP_X_LONG=$long" "$dir/get.out"
  check "hf-fcgi prints headers, a blank line, the body" \
    sh -c "sed -n 2,4p '$dir/get.out' | tr -d '\r' | grep -qx 'X-Echo: 1' && sed -n 4p '$dir/get.out' | grep -qx ''"

  "$HF_FCGI" --data 'hello world' -H 'Content-Type: text/plain' "$e" /pub/news >"$dir/post.out" 2>&1
  check "hf-fcgi --data is a POST" grep -qx 'param REQUEST_METHOD=POST' "$dir/post.out"
  check "hf-fcgi --data sets CONTENT_LENGTH" grep -qx 'param CONTENT_LENGTH=11' "$dir/post.out"
  check "hf-fcgi Content-Type header becomes CONTENT_TYPE" grep -qx 'param CONTENT_TYPE=text/plain' "$dir/post.out"
  check "hf-fcgi --data body arrives on STDIN" grep -q 'stdin 11$' "$dir/post.out"

  head -c 200000 /dev/urandom >"$dir/rand.bin"
  "$HF_FCGI" --body-only --data-file "$dir/rand.bin" "$e" /pub/bin >"$dir/bin.out" 2>&1
  check "hf-fcgi --data-file: 200 kB binary body round-trips (STDIN records)" \
    sh -c "tail -c 200000 '$dir/bin.out' | cmp -s - '$dir/rand.bin'"

  check "hf-fcgi --status-only" test "$("$HF_FCGI" --status-only "$e" /status/404)" = 404
  "$HF_FCGI" "$e" /split >"$dir/split.out" 2>&1
  check "hf-fcgi parses headers split across STDOUT records" \
    sh -c "head -1 '$dir/split.out' | grep -qx 201 && grep -qx 'X-Split: yes' '$dir/split.out' && tail -1 '$dir/split.out' | grep -qx 'split body'"
  "$HF_FCGI" --body-only "$e" /big/1000000 >"$dir/big.out" 2>&1
  check "hf-fcgi reads a 1 MB answer (many STDOUT records)" \
    sh -c "test \$(wc -c <'$dir/big.out') -eq 1000000 && head -c 52 '$dir/big.out' | grep -qx abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz"
  "$HF_FCGI" "$e" /stderr >"$dir/stderr.out" 2>"$dir/stderr.err"
  check "hf-fcgi copies STDERR records to stderr" grep -qx echo-stderr-line "$dir/stderr.err"
  check "hf-fcgi: Location without Status is 302" test "$("$HF_FCGI" --status-only "$e" /location)" = 302
  check "hf-fcgi: no header block gives status 0" test "$("$HF_FCGI" --status-only "$e" /noheader 2>/dev/null)" = 0

  start=$(date +%s)
  "$HF_FCGI" --timeout 0.5 "$e" /sleep/3000 >/dev/null 2>&1
  rc=$?
  check "hf-fcgi exits 3 on timeout" test $rc -eq 3
  check "hf-fcgi timeout is prompt" test $(($(date +%s) - start)) -le 2
  "$HF_FCGI" "unix:$dir/nothing.sock" /x >/dev/null 2>&1
  check "hf-fcgi exits 2 when the socket is missing" test $? -eq 2
  "$HF_FCGI" 127.0.0.1:1 /x >/dev/null 2>&1
  check "hf-fcgi exits 2 when the connection is refused" test $? -eq 2
  "$HF_FCGI" --bogus >/dev/null 2>&1
  check "hf-fcgi exits 1 on a usage error" test $? -eq 1

  "$HF_FCGI" --hold-and-close 1 "$e" /hold/10 >/dev/null 2>&1
  check "hf-fcgi --hold-and-close exits 0" test $? -eq 0
  i=0
  while ! grep -q '^hold-closed /hold/10' "$dir/echo.log" && [ $i -lt 30 ]; do sleep 0.1; i=$((i + 1)); done
  check "the responder sees the held connection close" grep -q '^hold-closed /hold/10' "$dir/echo.log"

  n=0
  hfp=""
  while [ $n -lt 20 ]; do
    "$HF_FCGI" --timeout 10 --status-only "$e" "/status/2$(printf %02d $n)" >"$dir/par.$n" 2>&1 &
    hfp="$hfp $!"
    n=$((n + 1))
  done
  for p in $hfp; do wait "$p"; done
  check "20 concurrent hf-fcgi requests all answered" \
    sh -c "cat '$dir'/par.* | sort -n | tr '\n' ' ' | grep -qx '200 201 202 203 204 205 206 207 208 209 210 211 212 213 214 215 216 217 218 219 '"
}

# ---- lpload against fake_lp.py --------------------------------------------

# fake_start NAME ARGS...: fake_lp.py on a fresh port file and unix socket;
# sets fport and fsock.
fake_start() {
  fname=$1
  shift
  fsock=$dir/$fname.sock
  spawn python3 "$FAKE_LP" --http 127.0.0.1:0 --port-file "$dir/$fname.port" --fcgi "$fsock" \
    --lifetime 300 "$@"
  fake_pid=$last_pid
  wait_for "$dir/$fname.port" && wait_for "$fsock" || return 1
  fport=$(cat "$dir/$fname.port")
}

fake_stop() {
  kill "$fake_pid" 2>/dev/null
  wait "$fake_pid" 2>/dev/null
}

# lp NAME EXPECT ARGS...: run lpload (bounded); EXPECT is pass or fail.
lp() {
  name=$1
  want=$2
  shift 2
  timeout 120 "$LPLOAD" --duration-limit 60 --drain-ms 3000 "$@" >"$dir/lp.out" 2>&1
  rc=$?
  if [ "$want" = pass ] && [ $rc -eq 0 ] && grep -qx 'lpload: 4 passed, 0 failed' "$dir/lp.out"; then
    ok "$name"
  elif [ "$want" = fail ] && [ $rc -eq 1 ] && grep -q '^lpload: [0-3] passed, [1-4] failed$' "$dir/lp.out"; then
    ok "$name"
  else
    bad "$name (exit $rc)" "$dir/lp.out"
  fi
}

lp_checks() {
  fake_start plain || { bad "fake_lp.py starts"; return; }
  lp "lpload HTTP keep-alive: 200 subscribers x 50 messages" pass \
    --http "127.0.0.1:$fport" --subscribers 200 --messages 50
  lp "lpload FastCGI: 200 subscribers x 50 messages at 500/s" pass \
    --fcgi "unix:$fsock" --subscribers 200 --messages 50 --rate 500 --prefix /hf
  lp "lpload --pids reports bytes per subscriber" pass \
    --http "127.0.0.1:$fport" --subscribers 50 --messages 5 --pids "$fake_pid"
  check "  ... bytes_per_subscriber is printed" grep -q '^bytes_per_subscriber: [0-9-]' "$dir/lp.out"
  fake_stop

  fake_start odd --chunked --close-every 3 --limit 4 --split ||
    { bad "fake_lp.py starts (odd framing)"; return; }
  lp "lpload over chunked, Connection: close, limit 4" pass \
    --http "127.0.0.1:$fport" --subscribers 100 --messages 50
  lp "lpload FastCGI with 7-byte STDOUT records" pass \
    --fcgi "$fsock" --subscribers 100 --messages 30
  fake_stop

  for fault in dup drop reorder; do
    fake_start "fault-$fault" --fault "$fault" --fault-every 5 ||
      { bad "fake_lp.py starts (fault $fault)"; continue; }
    lp "lpload notices a server that breaks order/exactly-once ($fault)" fail \
      --http "127.0.0.1:$fport" --subscribers 50 --messages 40
    fake_stop
  done
}

# ---- behind real web servers ----------------------------------------------

nginx_checks() {
  port=$(free_port)
  mkdir -p "$dir/ngx"
  user=""
  [ "$(id -u)" = 0 ] && user="user root;"
  cat >"$dir/ngx/nginx.conf" <<EOF
$user
daemon off;
worker_processes 2;
pid $dir/ngx/nginx.pid;
error_log $dir/ngx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/ngx/body;
    fastcgi_temp_path $dir/ngx/fcgi;
    proxy_temp_path $dir/ngx/proxy;
    uwsgi_temp_path $dir/ngx/uwsgi;
    scgi_temp_path $dir/ngx/scgi;
    server {
        listen 127.0.0.1:$port;
        location /hf/ {
            include /etc/nginx/fastcgi_params;
            fastcgi_split_path_info ^(/hf)(/.*)\$;
            fastcgi_param PATH_INFO \$fastcgi_path_info;
            fastcgi_pass unix:$fsock;
        }
    }
}
EOF
  spawn nginx -c "$dir/ngx/nginx.conf" -p "$dir/ngx"
  sleep 0.5
  lp "lpload through nginx fastcgi_pass: 300 x 30" pass \
    --http "127.0.0.1:$port" --prefix /hf --subscribers 300 --messages 30
}

lighttpd_checks() {
  port=$(free_port)
  mkdir -p "$dir/lty"
  cat >"$dir/lty/lighttpd.conf" <<EOF
server.document-root = "$dir/lty"
server.bind = "127.0.0.1"
server.port = $port
server.errorlog = "$dir/lty/error.log"
server.max-fds = 4096
server.modules += ( "mod_fastcgi" )
fastcgi.server = ( "/hf" => (( "socket" => "$fsock", "check-local" => "disable" )) )
EOF
  spawn lighttpd -D -f "$dir/lty/lighttpd.conf"
  sleep 0.5
  lp "lpload through lighttpd mod_fastcgi: 300 x 30 at 200/s" pass \
    --http "127.0.0.1:$port" --prefix /hf --subscribers 300 --messages 30 --rate 200
}

# ---- run -------------------------------------------------------------------

if [ -x "$HF_FCGI" ] && [ -x "$FCGI_ECHO" ]; then
  spawn "$FCGI_ECHO" --listen "$dir/echo.sock" --log "$dir/echo.log" --lifetime 300 --threads 8
  if wait_for "$dir/echo.sock"; then hf_checks; else bad "fcgi_echo starts"; fi
else
  bad "hf-fcgi and fcgi_echo are built ($HF_FCGI, $FCGI_ECHO)"
fi

if [ -x "$LPLOAD" ] && command -v python3 >/dev/null 2>&1; then
  lp_checks
  if [ "$WEBSERVERS" != 0 ]; then
    fake_start web || bad "fake_lp.py starts (web servers)"
    if command -v nginx >/dev/null 2>&1 && [ -f /etc/nginx/fastcgi_params ]; then
      nginx_checks
    else
      echo "skip nginx (not installed)"
    fi
    if command -v lighttpd >/dev/null 2>&1; then lighttpd_checks; else echo "skip lighttpd (not installed)"; fi
  fi
else
  echo "skip lpload (not built at $LPLOAD, or no python3)"
fi

echo "tools-selftest: $pass passed, $fail failed"
[ $fail -eq 0 ]
