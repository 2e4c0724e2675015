#!/usr/bin/env bash
# The sequence-parallel checks for a machine with several GPUs, in one command (about 6 minutes on 2):
# the GPUs and their links, the benchmark (bench/sp-bench.ts on 1, 2 and 4 GPUs where the machine has
# them; it writes sp.json), then the DiT and parallel GPU test files (world sizes 1, 2 and 4 where there are
# GPUs for them). On the GPU host, with .gpu and runtime/cuda/build carried:
#   source .gpu/setup.sh && bash bench/sp-session.sh "$OUT" [reps]
# Writes topo.txt, sp-bench.log, sp.json and vitest-parallel.log to OUT.
set -uo pipefail
out=${1:?usage: sp-session.sh OUT_DIR [reps]}
reps=${2:-3}
mkdir -p "$out"
# NVLink multicast stays off on shared hosts (the launcher sets it too, for the ranks it starts).
export TILEC_CACHE_DIR=${TILEC_CACHE_DIR:-/tmp/tc} NCCL_NVLS_ENABLE=0 PYTHONUNBUFFERED=1
tsx="node node_modules/tsx/dist/cli.mjs"
status=0
{ nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv; nvidia-smi topo -m; } > "$out/topo.txt" 2>&1
cat "$out/topo.txt"
$tsx bench/sp-bench.ts --gpus 1,2,4 --reps "$reps" --out "$out/sp.json" 2>&1 | tee "$out/sp-bench.log" || status=1
node node_modules/vitest/vitest.mjs run --reporter=verbose test/runtime/dit-gpu.test.ts test/runtime/parallel-gpu.test.ts \
  test/runtime/parallel-dit-gpu.test.ts > "$out/vitest-parallel.log" 2>&1 || status=1
grep -E "✓|×|↓|Test Files|Tests " "$out/vitest-parallel.log" | tail -60
exit $status
