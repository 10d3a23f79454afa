#!/bin/sh
# tests/deploy/run.sh [path/to/holdfast] [--only NAME,...] [--keep]
#
# holdfast behind every web server deploy/ ships a configuration for: Apache
# + mod_fcgid (.htaccess and vhost), Apache + mod_proxy_fcgi, lighttpd
# spawning holdfast and lighttpd to `holdfast serve`, nginx, and plain CGI
# under Apache and lighttpd.  Each server is started from the shipped files
# on 127.0.0.1 and a free port, put through one conformance scenario, stopped,
# and checked to have left no process behind (deploy_test.py says what is
# checked).  The last line is "N passed, M failed"; the exit status is
# non-zero on any failure.
#
# The binary: the argument, else $HOLDFAST_BIN, else the newer of ./holdfast
# and build/holdfast.  Needs apache2, libapache2-mod-fcgid, lighttpd,
# nginx-light and python3 (deploy/install-deps.sh test).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
bin=${HOLDFAST_BIN:-}
case "${1:-}" in
  ""|-*) ;;
  *) bin=$1; shift ;;
esac
if [ -z "$bin" ]; then
  for b in "$top/holdfast" "$top/build/holdfast"; do
    [ -x "$b" ] || continue
    if [ -z "$bin" ] || [ "$b" -nt "$bin" ]; then bin=$b; fi
  done
fi
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
  echo "tests/deploy: no holdfast binary${bin:+ at $bin}; build it (make holdfast) or pass its path"
  echo "0 passed, 1 failed"
  exit 1
fi
# --serve NAME runs one deployment for a person to try: nothing to count.
for a in "$@"; do
  case $a in --serve|--serve=*) exec python3 "$here/deploy_test.py" --bin "$bin" "$@" ;; esac
done
# A run that tested nothing fails: the last line must count at least one pass.
log=$(mktemp "${TMPDIR:-/tmp}/hf-deploy-log.XXXXXX")
rcf=$log.rc
{ python3 "$here/deploy_test.py" --bin "$bin" "$@" 2>&1; echo $? >"$rcf"; } | tee "$log"
rc=$(cat "$rcf" 2>/dev/null || echo 1)
last=$(grep -v '^[[:space:]]*$' "$log" | tail -n 1)
rm -f "$log" "$rcf"
passed=$(echo "$last" | sed -n 's/^\([0-9][0-9]*\) passed, [0-9][0-9]* failed$/\1/p')
if [ -z "$passed" ] || [ "$passed" -eq 0 ]; then
  echo "tests/deploy: no deployment test passed (last line: '$last')"
  echo "0 passed, 1 failed"
  [ "$rc" -ne 0 ] || rc=1
fi
exit "$rc"
