#!/bin/sh
# tests/fuzz/run.sh [SECONDS] -- build each libFuzzer target with clang
# (ASan + UBSan), replay its regression inputs, then fuzz it for SECONDS
# (default $HOLDFAST_FUZZ_SECONDS, else 60) from its seed corpus.
#
# Targets: every tests/fuzz/fuzz_NAME.c.  For each one:
#   1. tests/fuzz/regressions/NAME/* (every file but README*): inputs that
#      once crashed it, run once each -- a fixed bug stays fixed;
#   2. fuzzing from tests/fuzz/seeds/NAME/ (the corpus grows in build-fuzz/).
# Prints per target its seconds, runs, crashes and regression inputs, then a
# total, and ends with "fuzz: N passed, M failed" (N: targets without a
# crash).  A crash keeps the input in build-fuzz/crashes_NAME/ and fails the
# script; copy it to tests/fuzz/regressions/NAME/ (see the README there).
# No target at all is a failure.  Up to `nproc` targets fuzz at once
# (HOLDFAST_FUZZ_JOBS); bounded in time: it stops by itself.
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
secs=${1:-${HOLDFAST_FUZZ_SECONDS:-60}}
par=${HOLDFAST_FUZZ_JOBS:-$(nproc 2>/dev/null || echo 2)}
out="$top/build-fuzz"
mkdir -p "$out"
cflags="-g -O1 -std=c11 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -I$top/src $(pkg-config --cflags sqlite3 jansson libcrypto)"
libs="$(pkg-config --libs sqlite3 jansson libcrypto) -lpthread"
srcs="$top/src/request.c $top/src/dsproto.c $top/src/config.c $top/src/msglog.c $top/src/jsonenc.c $top/src/buf.c $top/src/fcgi_proto.c $top/src/clock.c $top/src/token.c"

# Every tests/fuzz/fuzz_*.c is a target: adding one is adding the file
# (and, if it needs more of src/, those files to srcs above).
targets=""
for f in "$top"/tests/fuzz/fuzz_*.c; do
  [ -f "$f" ] || continue
  t=${f##*/fuzz_}
  targets="$targets ${t%.c}"
done

passed=0
failed=0
runs_total=0
regr_total=0
crashes_total=0
start=$(date +%s)

# ---- build + replay the regression inputs, target by target ---------------
ready=""
for t in $targets; do
  # shellcheck disable=SC2086
  if ! clang $cflags -o "$out/fuzz_$t" "$top/tests/fuzz/fuzz_$t.c" $srcs $libs; then
    echo "fuzz_$t: does not build"
    failed=$((failed + 1))
    continue
  fi
  set --
  for r in "$top/tests/fuzz/regressions/$t"/*; do
    [ -f "$r" ] || continue
    case ${r##*/} in README*) continue ;; esac
    set -- "$@" "$r"
  done
  n=$#
  if [ "$n" -gt 0 ] && ! (cd "$out" && "./fuzz_$t" "$@" >"fuzz_$t.regressions.log" 2>&1); then
    tail -40 "$out/fuzz_$t.regressions.log"
    echo "fuzz_$t: a regression input from tests/fuzz/regressions/$t/ crashes it again" \
      "(log: $out/fuzz_$t.regressions.log)"
    failed=$((failed + 1))
    continue
  fi
  replayed=0
  [ "$n" -eq 0 ] || replayed=$(grep -c '^Executed ' "$out/fuzz_$t.regressions.log" || true)
  if [ "$replayed" -ne "$n" ]; then
    echo "fuzz_$t: replayed $replayed of $n regression inputs (log: $out/fuzz_$t.regressions.log)"
    failed=$((failed + 1))
    continue
  fi
  regr_total=$((regr_total + n))
  echo "$n" >"$out/fuzz_$t.regressions"
  ready="$ready $t"
done

# ---- fuzz, $par targets at a time -------------------------------------------
fuzz_one() {
  t=$1
  mkdir -p "$out/corpus_$t"
  rm -rf "$out/crashes_$t"
  mkdir -p "$out/crashes_$t"
  cp "$top/tests/fuzz/seeds/$t"/* "$out/corpus_$t/" 2>/dev/null || true
  rc=0
  (cd "$out" && "./fuzz_$t" -max_total_time="$secs" -max_len=4096 -print_final_stats=0 \
     -artifact_prefix="$out/crashes_$t/" "corpus_$t" >"fuzz_$t.log" 2>&1) || rc=$?
  echo "$rc" >"$out/fuzz_$t.rc"
}
report() {
  t=$1
  rc=$(cat "$out/fuzz_$t.rc" 2>/dev/null || echo 1)
  # libFuzzer's last words: "Done 630944 runs in 60 second(s)"
  done_line=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1 \2/p' "$out/fuzz_$t.log" | tail -1)
  runs=${done_line% *}
  took=${done_line#* }
  crashes=$(find "$out/crashes_$t" -type f | wc -l)
  n=$(cat "$out/fuzz_$t.regressions")
  if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ] || [ -z "$done_line" ]; then
    tail -40 "$out/fuzz_$t.log"
    [ "$crashes" -ne 0 ] || crashes=1
    echo "fuzz_$t: ${took:-?} s, ${runs:-?} runs, $crashes crashes, $n regression inputs replayed: FAILED"
    for c in "$out/crashes_$t"/*; do
      [ -f "$c" ] && echo "  input kept: $c -- once fixed, copy it to tests/fuzz/regressions/$t/"
    done
    failed=$((failed + 1))
  else
    echo "fuzz_$t: $took s, $runs runs, 0 crashes, $n regression inputs replayed"
    passed=$((passed + 1))
    runs_total=$((runs_total + runs))
  fi
  crashes_total=$((crashes_total + crashes))
}
set -- $ready
while [ $# -gt 0 ]; do
  batch=""
  pids=""
  while [ $# -gt 0 ] && [ "$(echo $batch | wc -w)" -lt "$par" ]; do
    batch="$batch $1"
    echo "fuzz_$1: fuzzing for ${secs} s"
    fuzz_one "$1" &
    pids="$pids $!"
    shift
  done
  for p in $pids; do wait "$p" || true; done
  for t in $batch; do report "$t"; done
done

ntargets=$(echo $targets | wc -w)
echo "fuzzing: $ntargets targets, ${secs} s each, $runs_total runs, $crashes_total crashes," \
  "$regr_total regression inputs replayed, $(($(date +%s) - start)) s in all"
if [ "$ntargets" -eq 0 ]; then
  echo "fuzzing: no target (no tests/fuzz/fuzz_*.c)"
  failed=$((failed + 1))
fi
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
