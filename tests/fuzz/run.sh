#!/bin/sh
# tests/fuzz/run.sh [SECONDS] -- build each libFuzzer target with clang
# (ASan + UBSan) and run it for SECONDS (default 20) from its seed corpus.
# A crash or failed assertion fails the script and leaves the input in
# build-fuzz/.  Bounded in time: it stops by itself.
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
secs=${1:-20}
out="$top/build-fuzz"
mkdir -p "$out"
cflags="-g -O1 -std=c11 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -I$top/src $(pkg-config --cflags sqlite3 jansson)"
libs="$(pkg-config --libs sqlite3 jansson) -lpthread"
srcs="$top/src/request.c $top/src/config.c $top/src/msglog.c $top/src/jsonenc.c $top/src/buf.c"
for t in request config jsonenc; do
  # shellcheck disable=SC2086
  clang $cflags -o "$out/fuzz_$t" "$top/tests/fuzz/fuzz_$t.c" $srcs $libs
  mkdir -p "$out/corpus_$t"
  cp "$top/tests/fuzz/seeds/$t"/* "$out/corpus_$t/" 2>/dev/null || true
  echo "fuzz_$t: ${secs}s"
  (cd "$out" && "./fuzz_$t" -max_total_time="$secs" -max_len=4096 -print_final_stats=0 \
     "corpus_$t" 2>"fuzz_$t.log") || { tail -40 "$out/fuzz_$t.log"; exit 1; }
  grep -E '^#[0-9]+ +DONE' "$out/fuzz_$t.log" | tail -1 || true
done
echo "fuzzing: no crash"
