#!/usr/bin/env bash
# Build and run the tilec CUDA template harness on a GPU machine.
#   bash test/cuda-harness/run.sh            # everything
#   CONFIGS="bf16_d96_q128_kv64_w4_s2" bash test/cuda-harness/run.sh   # a subset
#   SKIP_SANITIZER=1 / SKIP_NVRTC=1 / SKIP_BENCH=1 to leave steps out; BUILD_ONLY=1
#   compiles and reports registers/spills only (works without a GPU)
# Each config is a separate binary (tile shape and dtype are compile-time -D flags,
# as in the generated code). Logs go to $OUT (if set) or ./build/logs.
set -u
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BUILD="${BUILD:-$HERE/build}"
LOGS="${OUT:-$BUILD/logs}"
mkdir -p "$BUILD" "$LOGS"
ARCH="${ARCH:-sm_90}"
BUDGET="${TIME_BUDGET:-270}"  # seconds; optional late steps are skipped past this
T_START=$(date +%s)
elapsed() { echo $(( $(date +%s) - T_START )); }
NVCC_FLAGS="-O3 -arch=$ARCH -std=c++17 -lineinfo -Xptxas -v"

# name | -D flags | bench? (1 = time at seq 28,800)
ALL_CONFIGS="
bf16_d96_q128_kv64_w4_s2|-DTILEC_HEAD_DIM=96 -DTILEC_BLOCK_Q=128 -DTILEC_BLOCK_KV=64 -DTILEC_NUM_WARPS=4 -DTILEC_STAGES=2|1
bf16_d96_q128_kv64_w4_s3|-DTILEC_HEAD_DIM=96 -DTILEC_BLOCK_Q=128 -DTILEC_BLOCK_KV=64 -DTILEC_NUM_WARPS=4 -DTILEC_STAGES=3|0
bf16_d96_q128_kv64_w4_s2_qreg|-DTILEC_HEAD_DIM=96 -DTILEC_BLOCK_Q=128 -DTILEC_BLOCK_KV=64 -DTILEC_NUM_WARPS=4 -DTILEC_STAGES=2 -DTILEC_Q_IN_REGS=1 -DTILEC_SUB_KV=32|0
bf16_d128_q128_kv64_w4_s2|-DTILEC_HEAD_DIM=128 -DTILEC_BLOCK_Q=128 -DTILEC_BLOCK_KV=64 -DTILEC_NUM_WARPS=4 -DTILEC_STAGES=2|1
bf16_d64_q128_kv64_w4_s2|-DTILEC_HEAD_DIM=64 -DTILEC_BLOCK_Q=128 -DTILEC_BLOCK_KV=64 -DTILEC_NUM_WARPS=4 -DTILEC_STAGES=2|1
bf16_d64_q128_kv64_w4_s2_qsmem|-DTILEC_HEAD_DIM=64 -DTILEC_BLOCK_Q=128 -DTILEC_BLOCK_KV=64 -DTILEC_NUM_WARPS=4 -DTILEC_STAGES=2 -DTILEC_Q_IN_REGS=0|1
bf16_d96_q128_kv64_w8_s2|-DTILEC_HEAD_DIM=96 -DTILEC_BLOCK_Q=128 -DTILEC_BLOCK_KV=64 -DTILEC_NUM_WARPS=8 -DTILEC_STAGES=2|0
bf16_d96_q128_kv128_w8_s2|-DTILEC_HEAD_DIM=96 -DTILEC_BLOCK_Q=128 -DTILEC_BLOCK_KV=128 -DTILEC_NUM_WARPS=8 -DTILEC_STAGES=2|0
fp16_d96_q128_kv64_w4_s2|-DTILEC_DTYPE_FP16=1 -DTILEC_HEAD_DIM=96 -DTILEC_BLOCK_Q=128 -DTILEC_BLOCK_KV=64 -DTILEC_NUM_WARPS=4 -DTILEC_STAGES=2|0
bf16_d256_q64_kv64_w4_s2|-DTILEC_HEAD_DIM=256 -DTILEC_BLOCK_Q=64 -DTILEC_BLOCK_KV=64 -DTILEC_NUM_WARPS=4 -DTILEC_STAGES=2|0
bf16_d48_q64_kv32_w2_s4|-DTILEC_HEAD_DIM=48 -DTILEC_BLOCK_Q=64 -DTILEC_BLOCK_KV=32 -DTILEC_NUM_WARPS=2 -DTILEC_STAGES=4|0
fp32_d96_q64_kv64_w4_s2|-DTILEC_DTYPE_FP32=1 -DTILEC_HEAD_DIM=96 -DTILEC_BLOCK_Q=64 -DTILEC_BLOCK_KV=64 -DTILEC_NUM_WARPS=4 -DTILEC_STAGES=2|0
fp32_d128_q128_kv32_w8_s3|-DTILEC_DTYPE_FP32=1 -DTILEC_HEAD_DIM=128 -DTILEC_BLOCK_Q=128 -DTILEC_BLOCK_KV=32 -DTILEC_NUM_WARPS=8 -DTILEC_STAGES=3|0
"
CONFIGS="${CONFIGS:-$(echo "$ALL_CONFIGS" | awk -F'|' 'NF {print $1}')}"

cfg_field() { echo "$ALL_CONFIGS" | awk -F'|' -v n="$1" -v f="$2" '$1 == n {print $f}'; }

echo "== machine"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv 2>&1 | tee "$LOGS/gpu.txt"
nvcc --version | tail -2

echo "== build (parallel)"
t0=$(date +%s)
for c in $CONFIGS; do
  ( nvcc $NVCC_FLAGS $(cfg_field "$c" 2) "$HERE/harness.cu" -o "$BUILD/h_$c" >"$LOGS/build_$c.txt" 2>&1 \
      || echo "BUILD FAILED: $c" >>"$LOGS/build_$c.txt" ) &
done
wait
echo "built in $(( $(date +%s) - t0 )) s"
for c in $CONFIGS; do
  spill=$(grep -E "spill" "$LOGS/build_$c.txt" | grep -v " 0 bytes spill stores, 0 bytes spill loads" | head -1)
  regs=$(grep -oE "Used [0-9]+ registers" "$LOGS/build_$c.txt" | head -1)
  printf "  %-32s %s %s\n" "$c" "$regs" "${spill:+SPILL: $spill}"
  grep -E "error|BUILD FAILED" "$LOGS/build_$c.txt" | head -5
done

[ -n "${BUILD_ONLY:-}" ] && exit 0

echo "== correctness"
for c in $CONFIGS; do
  [ -x "$BUILD/h_$c" ] || continue
  timeout 40 "$BUILD/h_$c" test >"$LOGS/test_$c.txt" 2>&1
  echo "  $c: exit $?"
  grep -E "^RESULT FAIL|DIAG|error|CUDA" "$LOGS/test_$c.txt" | head -24
done

if [ -z "${SKIP_BENCH:-}" ]; then
  echo "== timing (seq 28800, 24 heads, [b,s,h,d], median of 20)"
  for c in $CONFIGS; do
    [ "$(cfg_field "$c" 3)" = "1" ] && [ -x "$BUILD/h_$c" ] || continue
    [ "$(elapsed)" -lt "$BUDGET" ] || { echo "  (time budget spent, skipping $c)"; continue; }
    timeout 60 "$BUILD/h_$c" bench >"$LOGS/bench_$c.txt" 2>&1
    grep -E "^BENCH|error|CUDA" "$LOGS/bench_$c.txt"
  done
  # run-to-run spread: the first config once more, last
  first=$(echo $CONFIGS | awk '{print $1}')
  if [ "$(cfg_field "$first" 3)" = "1" ] && [ -x "$BUILD/h_$first" ] && [ "$(elapsed)" -lt "$BUDGET" ]; then
    timeout 60 "$BUILD/h_$first" bench >"$LOGS/bench_${first}_repeat.txt" 2>&1
    grep -E "^BENCH" "$LOGS/bench_${first}_repeat.txt" | sed 's/^BENCH/BENCH(repeat)/'
  fi
fi

if [ -z "${SKIP_SANITIZER:-}" ] && command -v compute-sanitizer >/dev/null; then
  first=$(echo $CONFIGS | awk '{print $1}')
  f32=$(echo $CONFIGS | tr ' ' '\n' | grep '^fp32' | head -1)
  for job in "memcheck $first small" "racecheck $first small" "memcheck $f32 mid"; do
    set -- $job
    [ -n "${3:-}" ] && [ -x "$BUILD/h_$2" ] || continue
    [ "$(elapsed)" -lt "$BUDGET" ] || { echo "(time budget spent, skipping sanitizer $1 $2)"; continue; }
    echo "== compute-sanitizer $1 ($2, $3)"
    timeout 60 compute-sanitizer --tool $1 --error-exitcode 3 "$BUILD/h_$2" $3 >"$LOGS/sanitizer_$1_$2.txt" 2>&1
    echo "  exit $?"; grep -E "ERROR SUMMARY|RACECHECK SUMMARY|^RESULT|Error|Hazard" "$LOGS/sanitizer_$1_$2.txt" | head -6
  done
fi

if [ -z "${SKIP_NVRTC:-}" ]; then
  echo "== NVRTC compile check (prelude + ptx.cuh + kernel, no include paths)"
  timeout 60 python3 "$HERE/nvrtc_check.py" 2>&1 | tee "$LOGS/nvrtc.txt" | tail -8
fi

echo "== summary (after $(elapsed) s)"
{
  printf "%-6s %-40s %-28s %s\n" "status" "config" "case" "numbers"
  cat "$LOGS"/test_*.txt 2>/dev/null | grep "^RESULT" | \
    awk '{st=$2; cfg=$3; $1=$2=$3=""; print st "|" cfg "|" $0}' | \
    while IFS='|' read -r st cfg rest; do
      name=$(echo "$rest" | sed -E 's/^ +//; s/ B=.*//'); nums=$(echo "$rest" | grep -oE "(rel_l2|lse_err|nan_o|nan_lse|masked_bad)=[^ ]+" | tr '\n' ' ')
      printf "%-6s %-40s %-28s %s\n" "$st" "$cfg" "$name" "$nums"
    done
  echo
  printf "%-40s %-6s %9s %11s %11s %s\n" "config" "mask" "ms" "eff_TFLOPs" "dense_eq" "check"
  cat "$LOGS"/bench_*.txt 2>/dev/null | grep "^BENCH" | awk '{
      for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
      printf "%-40s %-6s %9s %11s %11s %s\n", $2, $3, v["ms"], v["eff_TFLOPs"], v["dense_equiv_TFLOPs"], v["check"] }'
  echo
  grep -h "^CONFIG" "$LOGS"/test_*.txt 2>/dev/null | sed 's/device="[^"]*" //'
  grep -h "2:6-nopred" "$LOGS"/bench_*.txt 2>/dev/null | sed -E 's/^BENCH ([^ ]+) +2:6-nopred.*ms=([^ ]+).*\((.*)\)/\1 2:6 partials-as-full ms=\2 (\3)/'
  grep -h "^BENCH" "$LOGS"/bench_*.txt 2>/dev/null | grep -oE "^BENCH [^ ]+ +[^ ]+|sched_model=[^ ]+" | paste - - | grep sched | head -4
  grep -h "NVRTC" "$LOGS/nvrtc.txt" 2>/dev/null
  fails=$(cat "$LOGS"/test_*.txt "$LOGS"/bench_*.txt 2>/dev/null | grep -cE "^RESULT FAIL|check=FAIL")
  echo "failures: $fails"
} | tee "$LOGS/summary.txt"
# The device tool returns at most 8 files: ship everything as one archive.
if [ -n "${OUT:-}" ]; then
  tar -C "$LOGS" -czf "$BUILD/logs.tgz" --exclude=logs.tgz . && mkdir -p "$OUT/keep" && mv "$BUILD/logs.tgz" "$OUT/keep/" \
    && cp "$LOGS/summary.txt" "$OUT/keep/" && find "$OUT" -maxdepth 1 -type f -delete
fi
