#!/bin/sh
# deploy/dashboard-publisher.sh -- feeds the live dashboard demo
# (www/dashboard.html): every interval it publishes cpu, mem, load and rps on
# a channel, each message with Holdfast-Key = the metric's name, so the
# server keeps the latest value of each and a new page gets them at once.
# cpu, mem and load are read from /proc; rps is synthetic (a wave with
# noise), as is everything on a system without /proc.
#
# usage: dashboard-publisher.sh [-u BASE_URL] [-c CHANNEL] [-n ROUNDS] [-d SECONDS] [-i INTERVAL]
#   -u  where holdfast is mounted   (default http://127.0.0.1:${PORT:-8080}/lp)
#   -c  channel                     (default metrics.demo)
#   -n  stop after this many rounds (default: no limit)
#   -d  stop after this many seconds (default: no limit)
#   -i  seconds between rounds      (default 1)
# It also stops after 30 rounds in a row where no publish succeeded.
# HOLDFAST_PUBLISH_KEY, when set, is sent as "Authorization: Bearer KEY".
set -eu

base="http://127.0.0.1:${PORT:-8080}/lp"
channel=metrics.demo
rounds=0
duration=0
interval=1
while getopts u:c:n:d:i:h opt; do
  case $opt in
    u) base=$OPTARG ;;
    c) channel=$OPTARG ;;
    n) rounds=$OPTARG ;;
    d) duration=$OPTARG ;;
    i) interval=$OPTARG ;;
    *) sed -n '2,17s/^# \{0,1\}//p' "$0" >&2; exit 2 ;;
  esac
done
command -v curl >/dev/null 2>&1 || { echo "$0: needs curl" >&2; exit 1; }

# "busy total" of all CPUs from /proc/stat (idle = idle + iowait).
cpu_sample() {
  awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t; exit }' /proc/stat
}

# Sets cpu to the busy percent since the previous call (not in a subshell:
# it keeps prev_cpu); synthetic without /proc.
read_cpu() {
  if [ ! -r /proc/stat ]; then cpu=$(synthetic 35 20 60); return; fi
  now=$(cpu_sample)
  cpu=$(echo "$prev_cpu $now" | awk '{ d = $4 - $2; printf "%.1f", (d > 0 ? 100 * ($3 - $1) / d : 0) }')
  prev_cpu=$now
}

mem_percent() {
  if [ ! -r /proc/meminfo ]; then synthetic 55 10 300; return; fi
  awk '/^MemTotal:/ { t = $2 } /^MemAvailable:/ { a = $2 }
       END { printf "%.1f", (t > 0 ? 100 * (1 - a / t) : 0) }' /proc/meminfo
}

load1() {
  if [ -r /proc/loadavg ]; then cut -d' ' -f1 /proc/loadavg; else synthetic 1 0.5 120; fi
}

# synthetic MEAN AMPLITUDE PERIOD: a wave over time with a little noise, >= 0.
synthetic() {
  awk -v m="$1" -v a="$2" -v p="$3" -v t="$(date +%s)" -v s="$$$round" \
    'BEGIN { srand(s); v = m + a * sin(6.2832 * t / p) + a * 0.3 * (rand() - 0.5);
             printf "%.1f", (v < 0 ? 0 : v) }'
}

# post KEY JSON [CURL ARGS...] -> 0 if the server took it.
# Children run in the background and are waited for, so that a SIGTERM
# (the demo stopping) ends them too instead of leaving them behind.
child=""
trap '[ -n "$child" ] && kill "$child" 2>/dev/null; exit 143' TERM INT HUP
run() {
  "$@" &
  child=$!
  wait "$child"
}

post() {
  key=$1 body=$2
  shift 2
  run curl -fsS -m 5 -o /dev/null -H 'Content-Type: application/json' -H "Holdfast-Key: $key" \
    "$@" --data-binary "$body" "$base/pub/$channel"
}

# publish NAME VALUE UNIT -> 0 if the server took it.
publish() {
  body="{\"name\":\"$1\",\"value\":$2,\"unit\":\"$3\"}"
  if [ -n "${HOLDFAST_PUBLISH_KEY:-}" ]; then
    post "$1" "$body" -H "Authorization: Bearer $HOLDFAST_PUBLISH_KEY"
  else
    post "$1" "$body"
  fi
}

round=0
failed_rounds=0
start=$(date +%s)
prev_cpu="0 0"   # the first round reports the average since boot
echo "publishing cpu, mem, load, rps on $channel via $base every ${interval}s" >&2
while :; do
  [ "$rounds" -gt 0 ] && [ "$round" -ge "$rounds" ] && break
  [ "$duration" -gt 0 ] && [ $(($(date +%s) - start)) -ge "$duration" ] && break
  [ "$round" -gt 0 ] && run sleep "$interval"
  round=$((round + 1))
  ok=0
  read_cpu
  publish cpu "$cpu" % && ok=1
  publish mem "$(mem_percent)" % && ok=1
  publish load "$(load1)" "" && ok=1
  publish rps "$(synthetic 120 60 45)" /s && ok=1
  if [ "$ok" -eq 1 ]; then failed_rounds=0; else failed_rounds=$((failed_rounds + 1)); fi
  if [ "$failed_rounds" -ge 30 ]; then
    echo "$0: no publish succeeded in 30 rounds; is holdfast at $base?" >&2
    exit 1
  fi
done
