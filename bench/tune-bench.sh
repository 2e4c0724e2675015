#!/usr/bin/env bash
# On the GPU host (bench/RESULTS.md, "Autotuning"): tune the Open-Sora-Plan 29/93-frame masks,
# build the osp29 package with the winners, and check its PyTorch loader against the TypeScript
# runtime and loader on the same inputs, timing it beside FlexAttention in one PyTorch process.
#   bash bench/tune-bench.sh OUT_DIR [osp29|osp93|all|loader]   (default all)
set -euo pipefail
out=${1:?usage: tune-bench.sh OUT_DIR [osp29|osp93|all|loader]}
what=${2:-all}
mkdir -p "$out"
export TILEC_CACHE_DIR=${TILEC_CACHE_DIR:-/tmp/tc}
tsx="node node_modules/tsx/dist/cli.mjs"
tune() { # spec reps: top $TOP (default 4) by the cost model (spread over code paths) plus the default
  node bin/tilec.js tune "examples/efficient-vdit/$1.tile" --target cuda --top "${TOP:-4}" --reps "$2" --warmup 2 --json \
    > "$out/tune-$1.json" 2> >(tee "$out/tune-$1.log" >&2)
}
if [[ $what == all || $what == osp29 ]]; then tune osp29 10; fi
if [[ $what == all || $what == osp93 ]]; then tune osp93 5; fi
if [[ $what == all || $what == loader ]]; then
  pkg=/tmp/tilec-pkg-osp29
  node bin/tilec.js build examples/efficient-vdit/osp29.tile -o "$pkg" --target cuda | tail -3
  $tsx bench/tune-loader-check.ts "$pkg" /tmp/tilec-io | tee "$out/loader-node.log"
  python3 bench/tune-loader-check.py "$pkg" /tmp/tilec-io "$out/loader-python.json"
fi
