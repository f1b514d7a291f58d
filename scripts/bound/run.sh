#!/bin/sh
# Hindsight refresh-ahead bounds of trace-family members (issue #13; BENCHMARKS.md, "What a
# causal model can reach"). Generates each member, runs bound.py and bound2.py on it, deletes it.
#   cargo build --release -p prefetch
#   PREFETCH=target/release/prefetch sh scripts/bound/run.sh 10 15 20
set -eu
here=$(cd "$(dirname "$0")" && pwd)
prefetch=${PREFETCH:-target/release/prefetch}
out=${OUT:-.}
for s in "$@"; do
  "$prefetch" demo-traffic --family-seed "$s" --out "$out/s$s.ndjson" --family-config "$out/s$s.json" 2>/dev/null
  python3 "$here/bound.py" "$out/s$s.ndjson" "$out/s$s.json" > "$out/r$s.txt"
  python3 "$here/bound2.py" "$out/s$s.ndjson" "$out/s$s.json" > "$out/q$s.txt"
  rm -f "$out/s$s.ndjson"
  grep SUMMARY "$out/r$s.txt" || true
done
