// What a CUDA architecture offers and what a kernel configuration costs, checked before emitting so
// a configuration that cannot run is rejected with the limit it breaks, not with a launch failure.
import type { KernelConfig, KernelIR } from "../../compiler/lower.ts";

export type CudaArch = "sm_80" | "sm_86" | "sm_89" | "sm_90";
export const CUDA_ARCHS: readonly CudaArch[] = ["sm_80", "sm_86", "sm_89", "sm_90"];

export interface CudaLimits {
  /** Opt-in dynamic shared memory per block, bytes. */
  readonly maxSharedPerBlock: number;
  readonly maxThreadsPerBlock: number;
}

export const LIMITS: Record<CudaArch, CudaLimits> = {
  sm_80: { maxSharedPerBlock: 166_912, maxThreadsPerBlock: 1024 },
  sm_86: { maxSharedPerBlock: 101_376, maxThreadsPerBlock: 1024 },
  sm_89: { maxSharedPerBlock: 101_376, maxThreadsPerBlock: 1024 },
  sm_90: { maxSharedPerBlock: 232_448, maxThreadsPerBlock: 1024 },
};

/** Which device template a kernel uses. */
export function templateOf(ir: Pick<KernelIR, "dtype">): "sm80" | "f32" {
  return ir.dtype === "fp32" ? "f32" : "sm80";
}

/**
 * Dynamic shared memory, the same formula as TILEC_SMEM_BYTES in the template (the generated source
 * static_asserts that the two agree).
 */
export function sharedBytes(
  ir: Pick<KernelIR, "dtype" | "headDim" | "blockQ" | "blockKv">,
  c: KernelConfig,
): number {
  const { headDim: d, blockQ: bq, blockKv: bkv } = ir;
  if (ir.dtype === "fp32") {
    const skv = bkv % 32 === 0 ? 32 : 16;
    return ((bq + 2 * c.stages * bkv) * (d + 4) + bq * (skv + 8)) * 4;
  }
  return (bq + 2 * c.stages * bkv) * d * 2 + 128;
}

/** Reasons this configuration cannot be built for `arch`; empty when it can. */
export function configProblems(ir: KernelIR, arch: CudaArch): string[] {
  const c = ir.config;
  const out: string[] = [];
  const lim = LIMITS[arch];
  if (ir.headDim % 16 !== 0 || ir.headDim > 256)
    out.push(`head_dim ${ir.headDim} is not a multiple of 16 up to 256 (CUDA tensor-core tiles)`);
  if (ir.blockQ % (c.warps * 16) !== 0)
    out.push(`block ${ir.blockQ} query rows do not split into ${c.warps} warps of a multiple of 16 rows`);
  if (c.warps < 2 || c.warps > 16) out.push(`warps must be 2..16, not ${c.warps}`);
  if (c.stages < 2) out.push(`stages must be at least 2 (double buffering), not ${c.stages}`);
  if (c.warps * 32 > lim.maxThreadsPerBlock)
    out.push(`${c.warps * 32} threads exceed ${lim.maxThreadsPerBlock} per block on ${arch}`);
  const smem = sharedBytes(ir, c);
  if (smem > lim.maxSharedPerBlock)
    out.push(
      `needs ${smem} bytes of shared memory per block, more than ${arch} offers (${lim.maxSharedPerBlock}): use smaller blocks or fewer stages`,
    );
  return out;
}
