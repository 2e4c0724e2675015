#!/usr/bin/env bash
# Everything the H100 must re-check after this session's last device call, in one command (about 8
# minutes): the GPU test files (both CUDA templates, the DiT on CUDA and on token slices, sequence
# parallelism at world size 1, search, tuning), compute-sanitizer on both templates, then the full
# CUDA benchmark (mma.sync and wgmma templates beside FlexAttention and cuDNN/flash SDPA, one run).
# On the GPU host, with .gpu and runtime/cuda/build carried:
#   source .gpu/setup.sh && bash bench/h100-session.sh "$OUT" [all|tests|bench]
# `tests` (about 6 minutes) and `bench` (about 4) split it over two device calls of 10 minutes each.
# Writes vitest.log, sanitize-*.log, tilec.json, peers.json, cuda-h100.json and report.md to OUT.
set -uo pipefail
out=${1:?usage: h100-session.sh OUT_DIR [all|tests|bench]}
part=${2:-all}
mkdir -p "$out"
export TILEC_CACHE_DIR=${TILEC_CACHE_DIR:-/tmp/tc} PYTHONUNBUFFERED=1
tsx="node node_modules/tsx/dist/cli.mjs"
status=0
if [ "$part" != bench ]; then
node node_modules/vitest/vitest.mjs run test/runtime/attention-gpu.test.ts test/runtime/cuda-gpu.test.ts \
  test/runtime/dit-gpu.test.ts test/runtime/parallel-gpu.test.ts test/runtime/parallel-dit-gpu.test.ts \
  test/search/search-gpu.test.ts test/tune/cuda-gpu.test.ts 2>&1 | tee "$out/vitest.log" | tail -40 || status=1
fi
[ "$part" = tests ] && exit $status
for tool in memcheck racecheck; do
  compute-sanitizer --tool $tool --error-exitcode 1 $tsx bench/sanitize.ts > "$out/sanitize-$tool.log" 2>&1 ||
    { status=1; echo "sanitize $tool FAILED"; }
  tail -3 "$out/sanitize-$tool.log"
done
$tsx bench/cuda-bench.ts "$out/tilec.json" --impl tilec,tilec-sm90 || status=1
python3 bench/peers.py "$out/peers.json" || status=1
$tsx bench/report.ts "$out/tilec.json" "$out/peers.json" "$out/cuda-h100.json" | tee "$out/report.md" || status=1
exit $status
