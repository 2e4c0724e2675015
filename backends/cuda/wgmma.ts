// wgmma wrappers for the sm_90a template. One warpgroup-wide `wgmma.mma_async` names every
// accumulator register of its N/2-float fragment as an operand, so each (shape, dtype) is its own
// inline-asm statement: rendered here for exactly the shapes a kernel uses instead of written out
// by hand for every N. Deterministic: same arguments, same text.

export type WgmmaType = "bf16" | "fp16";

const PTX_TYPE: Record<WgmmaType, string> = { bf16: "bf16", fp16: "f16" };

function accOperands(n: number): { list: string; constraints: string } {
  const regs = n / 2;
  return {
    list: Array.from({ length: regs }, (_, i) => `%${i}`).join(", "),
    constraints: Array.from({ length: regs }, (_, i) => `"+f"(d[${i}])`).join(", "),
  };
}

/**
 * D(64×N, f32) (+)= A(64×16) · B(16×N), both operands in shared memory (descriptors), both K-major:
 * tilec_wgmma_ss_n{N}(d, descA, descB, accumulate). With accumulate = 0 D is overwritten. With
 * `transposed` both are MN-major instead (A stored [k][m], B [k][n]: imm-trans-a = imm-trans-b = 1):
 * tilec_wgmma_sstt_n{N}.
 */
function ssWrapper(n: number, t: WgmmaType, transposed = false): string {
  const { list, constraints } = accOperands(n);
  const r = n / 2;
  const tr = transposed ? 1 : 0;
  return [
    `__device__ __forceinline__ void tilec_wgmma_ss${transposed ? "tt" : ""}_n${n}(float* d, u64 da, u64 db, int accumulate) {`,
    `  asm volatile(`,
    `      "{\\n .reg .pred p;\\n setp.ne.b32 p, %${r + 2}, 0;\\n"`,
    `      " wgmma.mma_async.sync.aligned.m64n${n}k16.f32.${PTX_TYPE[t]}.${PTX_TYPE[t]} {${list}}, %${r}, %${r + 1}, p, 1, 1, ${tr}, ${tr};\\n}\\n"`,
    `      : ${constraints}`,
    `      : "l"(da), "l"(db), "r"(accumulate));`,
    `}`,
  ].join("\n");
}

/**
 * D(64×N, f32) (+)= A(64×16, registers: the mma.sync A-fragment layout per warp) · B(16×N), B read
 * N-major (imm-trans-b = 1: V stored [key][dim] is consumed as is): tilec_wgmma_rs_n{N}.
 */
function rsWrapper(n: number, t: WgmmaType): string {
  const { list, constraints } = accOperands(n);
  const r = n / 2;
  return [
    `__device__ __forceinline__ void tilec_wgmma_rs_n${n}(float* d, const u32* a, u64 db, int accumulate) {`,
    `  asm volatile(`,
    `      "{\\n .reg .pred p;\\n setp.ne.b32 p, %${r + 5}, 0;\\n"`,
    `      " wgmma.mma_async.sync.aligned.m64n${n}k16.f32.${PTX_TYPE[t]}.${PTX_TYPE[t]} {${list}}, {%${r}, %${r + 1}, %${r + 2}, %${r + 3}}, %${r + 4}, p, 1, 1, 1;\\n}\\n"`,
    `      : ${constraints}`,
    `      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(accumulate));`,
    `}`,
  ].join("\n");
}

/** The wrappers a kernel with key tile `kvTile` and head dim `headDim` needs. */
export function renderWgmmaWrappers(t: WgmmaType, kvTile: number, headDim: number): string {
  for (const n of [kvTile, headDim])
    if (n % 8 !== 0 || n < 8 || n > 256)
      throw new RangeError(`wgmma N must be a multiple of 8 in 8..256, not ${n}`);
  return [
    `// wgmma wrappers for this kernel (rendered by backends/cuda/wgmma.ts): S = Q K^T with N = ${kvTile}`,
    `// keys, O += P V with N = ${headDim} dims; ${t} operands, f32 accumulators.`,
    ssWrapper(kvTile, t),
    "",
    rsWrapper(headDim, t),
  ].join("\n");
}

/**
 * The wrappers of the backward's dK/dV kernel (templates/bwd_sm90.cuh) at head dim `headDim`: Sᵀ = K Qᵀ
 * and dPᵀ = V dOᵀ with N = 64 queries, dV += Pᵀ dO and dK += dSᵀ Q with N = headDim (Pᵀ, dSᵀ from
 * registers), and dQ = dS K with both operands MN-major and N = headDim / 2 (each of the two consumer
 * warpgroups computes half of dQ's columns).
 */
export function renderBackwardWgmmaWrappers(t: WgmmaType, headDim: number): string {
  if (headDim % 16 !== 0 || headDim < 16 || headDim > 256)
    throw new RangeError(`wgmma backward needs a head dim that is a multiple of 16, not ${headDim}`);
  return [
    `// wgmma wrappers of the backward (rendered by backends/cuda/wgmma.ts): Sᵀ, dPᵀ with N = 64 queries;`,
    `// dV, dK with N = ${headDim}; dQ with N = ${headDim / 2} (half the head dim per warpgroup); ${t} operands, f32 accumulators.`,
    ssWrapper(64, t),
    "",
    rsWrapper(headDim, t),
    "",
    ssWrapper(headDim / 2, t, true),
  ].join("\n");
}
