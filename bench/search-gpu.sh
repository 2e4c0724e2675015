#!/usr/bin/env bash
# `tilec search` on the GPU at Open-Sora-Plan 29-frame shape (8×45×80 = 28,800 tokens, head dim 96,
# bf16; HEADS heads instead of 24 to keep the calibration file small), then the searched model section
# compiled, checked against the reference and timed. One command on the device:
#   source .gpu/setup.sh && export TILEC_CACHE_DIR=/tmp/tc && OUT=$OUT bash bench/search-gpu.sh
# Writes to $OUT: tests.txt, search.txt (table), search.json, osp29_searched.tile, model.txt and
# search-model.json (measured vs predicted attention speedup), python-capture.txt (dump_qkv.py self-test
# through `tilec search`, where torch and safetensors are installed). Runs in about a minute on an H100.
set -euo pipefail
OUT=${OUT:-out/search-gpu}
HEADS=${HEADS:-8}
LAYERS=${LAYERS:-8}
R=${R:-0.1}
WORK=${WORK:-/tmp/tilec-search}
mkdir -p "$OUT" "$WORK"
tsx() { node node_modules/tsx/dist/cli.mjs "$@"; }
tilec() { node bin/tilec.js "$@"; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/device.txt" || true

echo "== tests (search, safetensors)"
node node_modules/vitest/vitest.mjs run test/search test/runtime/safetensors.test.ts 2>&1 | tee "$OUT/tests.txt" | tail -8

echo "== synthetic calibration: $LAYERS layers, $HEADS heads"
tsx bench/search-gpu.ts make "$WORK" --heads "$HEADS" --layers "$LAYERS"
spec="$WORK/osp29_h$HEADS.tile"

echo "== tilec search (r = $R)"
start=$(date +%s%N)
tilec search "$spec" --qkv "$WORK/calibration.safetensors" --threshold "$R" --device cuda \
  --out "$OUT/osp29_searched.tile" | tee "$OUT/search.txt"
echo "search wall time: $(( ($(date +%s%N) - start) / 1000000 )) ms (with NVRTC compiles on a cold cache)" | tee -a "$OUT/search.txt"
tilec search "$spec" --qkv "$WORK/calibration.safetensors" --threshold "$R" --device cuda --json \
  > "$OUT/search.json"
tilec check "$OUT/osp29_searched.tile"

echo "== the searched model: compile, check, time"
tsx bench/search-gpu.ts model "$OUT/osp29_searched.tile" "$OUT/search-model.json" | tee "$OUT/model.txt"

echo "== Q/K/V captured from PyTorch (examples/search/dump_qkv.py --selftest)"
if python3 -c "import torch, safetensors" 2>/dev/null; then
  python3 examples/search/dump_qkv.py --selftest "$WORK/toy.safetensors" --tile "$WORK/toy.tile"
  tilec search "$WORK/toy.tile" --qkv "$WORK/toy.safetensors" --threshold "$R" --device cuda \
    --out "$WORK/toy_searched.tile" 2>&1 | tee "$OUT/python-capture.txt"
else
  echo "skipped: python3 with torch and safetensors not installed" | tee "$OUT/python-capture.txt"
fi
