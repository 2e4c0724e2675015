#!/usr/bin/env bash
# The H100 checks of the attention backward, in device calls of under 10 minutes each.
# On the GPU host, with .gpu and runtime/cuda/build carried:
#   source .gpu/setup.sh && bash bench/bwd-session.sh OUT bench            (backward benchmark + peers, same run)
#   source .gpu/setup.sh && bash bench/bwd-session.sh OUT tests COMMIT     (GPU test files + compute-sanitizer)
#   source .gpu/setup.sh && bash bench/bwd-session.sh OUT quick COMMIT     (about 5 minutes, three jobs at once on
#     the one GPU, no timings: the forward and backward GPU test files; compute-sanitizer memcheck then racecheck;
#     the PyTorch package check and the distillation example on packages built there)
# bench writes tilec-bwd.json, peers-bwd.json, cuda-bwd-h100.json, report-bwd.md; tests writes
# vitest.json, vitest.log, sanitize-*.log and gpu-tests.json (a row for bench/results/gpu-tests.json).
set -uo pipefail
out=${1:?usage: bwd-session.sh OUT_DIR bench|tests [COMMIT]}
part=${2:?bench or tests}
mkdir -p "$out"
export TILEC_CACHE_DIR=${TILEC_CACHE_DIR:-/tmp/tc} PYTHONUNBUFFERED=1
tsx="node node_modules/tsx/dist/cli.mjs"
status=0
device=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
if [ "$part" = bench ]; then
  timeout 260 $tsx bench/cuda-bwd-bench.ts "$out/tilec-bwd.json" --cases osp29,osp93 --rounds 3 || status=1
  timeout 90 $tsx bench/cuda-bwd-bench.ts "$out/tilec-bwd-hd.json" --cases osp29-d64,osp29-d128 --rounds 2 || status=1
  PEERS_ROUNDS=3 timeout 200 python3 bench/peers_bwd.py "$out/peers-bwd.json" osp29,osp93 || status=1
  node -e 'const f=require("fs");const a=JSON.parse(f.readFileSync(process.argv[1]));const b=JSON.parse(f.readFileSync(process.argv[2]));a.rows.push(...b.rows);f.writeFileSync(process.argv[1],JSON.stringify(a,null,2))' "$out/tilec-bwd.json" "$out/tilec-bwd-hd.json" || status=1
  $tsx bench/bwd-report.ts "$out/tilec-bwd.json" "$out/peers-bwd.json" "$out/cuda-bwd-h100.json" | tee "$out/report-bwd.md" || status=1
  exit $status
fi
commit=${3:?tests needs the commit under test}
if [ "$part" = quick ]; then
  (timeout 250 node node_modules/vitest/vitest.mjs run test/runtime/attention-gpu.test.ts \
    test/runtime/attention-backward-gpu.test.ts --reporter=default --reporter=json \
    --outputFile.json=/tmp/vitest.json > "$out/vitest.log" 2>&1) &
  (for tool in memcheck racecheck; do
    timeout 120 compute-sanitizer --tool $tool --error-exitcode 1 $tsx bench/sanitize.ts > "$out/sanitize-$tool.log" 2>&1
    echo "sanitize $tool rc=$?"
  done) &
  (timeout 90 node bin/tilec.js build test/pack/torch_check.tile -o /tmp/tilec_pk --arch sm_90 > /tmp/b1.log 2>&1 &
    timeout 90 node bin/tilec.js build examples/distill/distill.tile -o /tmp/tilec_pd --arch sm_90 > /tmp/b2.log 2>&1
    wait
    cat /tmp/b1.log /tmp/b2.log > "$out/torch-check.log"
    timeout 100 python3 test/pack/torch_package_check.py /tmp/tilec_pk "$out/torch-check.json" --flex eager >> "$out/torch-check.log" 2>&1
    echo "torch check rc=$?"
    timeout 70 python3 examples/distill/distill.py --package /tmp/tilec_pd --steps 100 --out "$out/distill.json" > "$out/distill.log" 2>&1
    echo "distill rc=$?") &
  wait
  grep -E "Test Files|Tests " "$out/vitest.log"
  grep -hE "SUMMARY|^FAIL" "$out"/sanitize-*.log
  tail -4 "$out/torch-check.log" "$out/distill.log"
  $tsx bench/gpu-tests.ts "$commit" "$device" /tmp/vitest.json "$out/sanitize-memcheck.log" "$out/sanitize-racecheck.log" "$out/gpu-tests.json" > /dev/null
  exit 0
fi
timeout 420 node node_modules/vitest/vitest.mjs run test/runtime/attention-gpu.test.ts test/runtime/attention-backward-gpu.test.ts \
  test/runtime/cuda-gpu.test.ts test/runtime/dit-gpu.test.ts test/runtime/parallel-gpu.test.ts \
  test/runtime/parallel-dit-gpu.test.ts test/search/search-gpu.test.ts test/tune/cuda-gpu.test.ts \
  --reporter=default --reporter=json --outputFile.json="$out/vitest.json" > "$out/vitest.log" 2>&1 || status=1
grep -E "✓|×|Test Files|Tests " "$out/vitest.log" | tail -40
for tool in memcheck racecheck; do
  timeout 150 compute-sanitizer --tool $tool --error-exitcode 1 $tsx bench/sanitize.ts > "$out/sanitize-$tool.log" 2>&1 ||
    { status=1; echo "sanitize $tool FAILED"; }
  grep -E "SUMMARY|FAIL" "$out/sanitize-$tool.log" | tail -3
done
$tsx bench/gpu-tests.ts "$commit" "$device" "$out/vitest.json" "$out/sanitize-memcheck.log" "$out/sanitize-racecheck.log" "$out/gpu-tests.json" > /dev/null || status=1
exit $status
