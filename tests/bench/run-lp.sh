#!/bin/sh
# tests/bench/run-lp.sh [BUILDDIR] [SIZES] -- long-poll load behind nginx.
#
# Starts `holdfast serve` (one worker, so one process holds every parked
# subscriber) and a private nginx (2 workers, fastcgi_pass to holdfast's unix
# socket) on 127.0.0.1, then runs lpload for each subscriber count in SIZES
# (default "100 1000 10000"), paced (20 msg/s) and burst (as fast as
# possible).  Prints lpload's report for each run; exits non-zero if any run
# lost, duplicated or reordered a message.  Everything stops by itself.
set -eu
b=$(cd "${1:-.}" && pwd)
sizes=${2:-"100 1000 10000"}
top=$(cd "$(dirname "$0")/../.." && pwd)
dir=$(mktemp -d "${TMPDIR:-/tmp}/holdfast-lp.XXXXXX")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
pids=""
cleanup() {
  for p in $pids; do kill "$p" 2>/dev/null || true; done
  for p in $pids; do wait "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT INT TERM

cat >"$dir/holdfast.conf" <<CONF
db = $dir/bench.db
listen = unix:$dir/holdfast.sock
workers = 1
max_parked = 20000
retain_messages = 100000
# the bench's clients are all 127.0.0.1: no per-client or publish rate limit
publish = anyone
max_parked_per_client = 0
publish_rate = 0
CONF
${HOLDFAST_WRAP:-} "$b/holdfast" serve --config "$dir/holdfast.conf" 2>"$dir/holdfast.log" &
serve=$!
pids="$serve"
i=0
while [ ! -S "$dir/holdfast.sock" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
sleep 0.3
worker=$(pgrep -P "$serve" | head -1)

cat >"$dir/nginx.conf" <<CONF
user root;
worker_processes 2;
worker_rlimit_nofile 20000;
pid $dir/nginx.pid;
error_log $dir/nginx.error.log warn;
events { worker_connections 20000; }
http {
  access_log off;
  client_body_temp_path $dir/nginx-body;
  fastcgi_temp_path $dir/nginx-fcgi;
  server {
    listen 127.0.0.1:$port backlog=4096;
    keepalive_requests 100000;
    location /lp/ {
      fastcgi_split_path_info ^(/lp)(/.*)\$;
      include /etc/nginx/fastcgi_params;
      fastcgi_param SCRIPT_NAME \$fastcgi_script_name;
      fastcgi_param PATH_INFO \$fastcgi_path_info;
      fastcgi_read_timeout 60s;
      fastcgi_pass unix:$dir/holdfast.sock;
    }
  }
}
CONF
/usr/sbin/nginx -c "$dir/nginx.conf" -g 'daemon off;' &
pids="$pids $!"
sleep 0.5

echo "# machine: $(nproc) cores, $(uname -m), $(date -u +%Y-%m-%d); holdfast 1 worker, nginx 2 workers"
failed=0
for n in $sizes; do
  for mode in paced burst; do
    if [ $mode = paced ]; then rate="--rate 20 --messages 100"; else rate="--rate 0 --messages 300"; fi
    echo "## subscribers=$n mode=$mode"
    # shellcheck disable=SC2086
    "$b/tests/bench/lpload" --http "127.0.0.1:$port" --prefix /lp --subscribers "$n" $rate \
      --channel "b$n$mode" --pids "$worker" --duration-limit 120 || failed=1
  done
done
exit $failed
