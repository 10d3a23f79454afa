#!/bin/sh
# tests/soak/run.sh [--short|--long] [path/to/holdfast]
#
# The fault-injection soak (soak.py) behind nginx + `holdfast serve` and behind
# Apache mod_fcgid, then the durable-ack checks (durable.py).  See README.
#
#   --short  (default, for CI; about 3-4 minutes): 60 s per web server
#   --long   15 minutes per web server (SOAK_SECONDS=N overrides either)
#
# Needs root (the database lives on a tmpfs the soak mounts), nginx, apache2
# with mod_fcgid and python3; it installs nothing (tests/run-all.sh and
# deploy/install-deps.sh do) and fails clearly when a server is missing.
# The binary: the argument, else $HOLDFAST_BIN, else the newer of ./holdfast
# and build/holdfast.  The last line is "soak: N passed, M failed" (N counts
# the soak runs and durable checks that passed); exit status 1 on any failure.
set -u
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
mode=short
bin=${HOLDFAST_BIN:-}
for a in "$@"; do
  case "$a" in
    --short) mode=short ;;
    --long) mode=long ;;
    -*) echo "usage: $0 [--short|--long] [path/to/holdfast]"; exit 2 ;;
    *) bin=$a ;;
  esac
done
if [ -z "$bin" ]; then
  for b in "$top/holdfast" "$top/build/holdfast"; do
    [ -x "$b" ] || continue
    if [ -z "$bin" ] || [ "$b" -nt "$bin" ]; then bin=$b; fi
  done
fi
passed=0
failed=0
finish() {
  echo "soak: $passed passed, $failed failed"
  [ "$failed" -eq 0 ]
  exit $?
}
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
  echo "tests/soak: no holdfast binary${bin:+ at $bin}; build it (make holdfast) or pass its path"
  failed=1
  finish
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "tests/soak: must run as root (it mounts a tmpfs for the database)"
  failed=1
  finish
fi
if [ "$mode" = long ]; then
  seconds=${SOAK_SECONDS:-900}; extra="--recovery 30 --drain 30"
else
  seconds=${SOAK_SECONDS:-60}; extra="--recovery 20 --drain 15"
fi

# Everything soak.py creates lives under $work; whatever happens to it, no
# tmpfs stays mounted there and nothing is left behind.
work=$(mktemp -d /tmp/hf-soak-run.XXXXXX)
chmod 755 "$work"
cleanup() {
  for m in $(awk -v w="$work/" 'index($2, w) == 1 { print $2 }' /proc/mounts); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || echo "tests/soak: could not unmount $m"
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "# soak ($mode): $bin, $seconds s per web server"
for server in nginx apache-fcgid; do
  case $server in
    nginx) need="/usr/sbin/nginx" ;;
    apache-fcgid) need="/usr/sbin/apache2 /usr/lib/apache2/modules/mod_fcgid.so" ;;
  esac
  missing=
  for f in $need; do [ -e "$f" ] || missing="$missing $f"; done
  if [ -n "$missing" ]; then
    echo "soak $server: FAIL: web server missing:$missing (deploy/install-deps.sh test installs it)"
    failed=$((failed + 1))
    continue
  fi
  echo "# ---- soak.py --server $server --seconds $seconds"
  # shellcheck disable=SC2086
  if python3 "$here/soak.py" --server "$server" --bin "$bin" --seconds "$seconds" $extra \
      --tmp "$work"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
  fi
done

echo "# ---- durable.py"
out=$work/durable.out
python3 "$here/durable.py" --bin "$bin" --rounds 20 | tee "$out"
line=$(grep '^durable: [0-9]* passed' "$out" | tail -1)
if [ -n "$line" ]; then
  p=$(echo "$line" | sed 's/^durable: \([0-9]*\) passed, \([0-9]*\) failed.*/\1/')
  f=$(echo "$line" | sed 's/^durable: \([0-9]*\) passed, \([0-9]*\) failed.*/\2/')
  passed=$((passed + p))
  failed=$((failed + f))
else
  echo "durable: no result line (it crashed?)"
  failed=$((failed + 1))
fi
finish
