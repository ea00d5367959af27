#!/usr/bin/env bash
# Runs the whole suite several times on Node 20 (this machine's node) and Node 24 while a CPU
# hog keeps one core busy, as on a shared CI machine, and prints how many runs passed:
#
#   bash scripts/busy-suite.sh          # 5 runs on each Node version
#   RUNS=2 bash scripts/busy-suite.sh   # fewer
#
# Each run's vitest output is kept in .ci/busy/ (node20-1.log, ...). Exits non-zero when any
# run failed. The hog is stopped whatever happens.
set -uo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-5}
out=.ci/busy
rm -rf "$out" && mkdir -p "$out"
npm run build >/dev/null || exit 1
node -e 'for(;;){}' &
hog=$!
trap 'kill $hog 2>/dev/null' EXIT
failed=0
for version in 20 24; do
  passed=0
  for i in $(seq 1 "$runs"); do
    if [ "$version" = 20 ]; then
      node node_modules/vitest/vitest.mjs run >"$out/node$version-$i.log" 2>&1
    else
      npx -y -p node@24 -- node node_modules/vitest/vitest.mjs run >"$out/node$version-$i.log" 2>&1
    fi
    rc=$?
    summary=$(sed 's/\x1b\[[0-9;]*m//g' "$out/node$version-$i.log" | grep -E 'Tests +[0-9]' | tail -1 | tr -s ' ')
    if [ $rc -eq 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
    echo "node $version run $i: $([ $rc -eq 0 ] && echo pass || echo FAIL) ($summary)"
  done
  echo "node $version: $passed of $runs runs passed with one core busy"
done
exit $((failed > 0))
