#!/bin/sh
# tests/bench/run.sh BUILDDIR -- run the foundation benchmarks and print one
# line per measurement.  Figures depend on the machine: compare ratios taken
# in one run, and note the machine with any absolute number.
set -eu
b=${1:-.}
dir=$(mktemp -d "${TMPDIR:-/tmp}/holdfast-bench.XXXXXX")
trap 'rm -rf "$dir"' EXIT
echo "# machine: $(nproc) cores, $(uname -m), $(date -u +%Y-%m-%d)"
for dur in normal full; do
  "$b/tests/bench/bench_publish" --db "$dir" --messages 20000 --procs 1 --durability $dur
  "$b/tests/bench/bench_publish" --db "$dir" --messages 10000 --procs 2 --durability $dur
done
"$b/tests/bench/bench_publish" --db "$dir" --messages 20000 --procs 1 --durability full --batch 32
"$b/tests/bench/bench_wake" "$dir" 2000
