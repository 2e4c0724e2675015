// What a CUDA architecture offers and what a kernel configuration costs, checked before emitting so
// a configuration that cannot run is rejected with the limit it breaks, not with a launch failure.
import { hopperWarps, type KernelConfig, type KernelIR } from "../../compiler/lower.ts";
import { classWordsPerStripe } from "../../compiler/subPlan.ts";

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

export type CudaTemplate = "sm90" | "sm80" | "f32";

// The warp count that selects the sm_90a template: defined beside the compiler's Hopper configuration.
export { hopperWarps };

/** Why the sm_90a template (templates/flash_fwd_sm90.cuh) cannot run this kernel; empty when it can. */
export function hopperProblems(
  ir: Pick<KernelIR, "dtype" | "headDim" | "blockQ" | "blockKv" | "config">,
): string[] {
  const out: string[] = [];
  if (ir.dtype === "fp32") out.push("fp32 has no wgmma path (bf16/fp16 only)");
  if (![64, 96, 128].includes(ir.headDim)) out.push(`head_dim ${ir.headDim} is not 64, 96 or 128`);
  if (ir.blockQ !== 64 && ir.blockQ !== 128) out.push(`block ${ir.blockQ} query rows is not 64 or 128`);
  if (ir.blockKv % 16 !== 0 || ir.blockKv > 256)
    out.push(`key tile ${ir.blockKv} is not a multiple of 16 up to 256`);
  if (ir.config.stages < 2) out.push(`stages must be at least 2, not ${ir.config.stages}`);
  return out;
}

/**
 * Which device template a kernel uses: fp32 → f32; on sm_90, a configuration of hopperWarps(blockQ)
 * warps → sm90 (wgmma); everything else → sm80 (mma.sync), which also runs on sm_90.
 */
export function templateOf(
  ir: Pick<KernelIR, "dtype" | "headDim" | "blockQ" | "blockKv" | "config">,
  arch: CudaArch = "sm_80",
): CudaTemplate {
  if (ir.dtype === "fp32") return "f32";
  return arch === "sm_90" && ir.config.warps === hopperWarps(ir.blockQ) ? "sm90" : "sm80";
}

/** The architecture NVRTC / nvcc compile a template for: wgmma and setmaxnreg need sm_90a. */
export function compileArch(template: CudaTemplate, arch: string): string {
  return template === "sm90" ? "sm_90a" : arch;
}

/**
 * Dynamic shared memory, the same formula as TILEC_SMEM_BYTES in the template (the generated source
 * static_asserts that the two agree).
 */
export function sharedBytes(
  ir: Pick<KernelIR, "dtype" | "headDim" | "blockQ" | "blockKv">,
  c: KernelConfig,
  template: CudaTemplate = ir.dtype === "fp32" ? "f32" : "sm80",
): number {
  const { headDim: d, blockQ: bq, blockKv: bkv } = ir;
  // sm90: 1024 bytes of slack align the tiles to the 128-byte swizzle's 1024-byte atoms; each K/V
  // stage also holds the sub-tile class words of a partial tile (2 bits per 16 × 8 sub-tile).
  if (template === "sm90")
    return (bq + 2 * c.stages * bkv) * d * 2 + c.stages * sm90ClassBytes(bq, bkv) + 1024;
  if (ir.dtype === "fp32") {
    const skv = bkv % 32 === 0 ? 32 : 16;
    return ((bq + 2 * c.stages * bkv) * (d + 4) + bq * (skv + 8)) * 4;
  }
  return (bq + 2 * c.stages * bkv) * d * 2 + 128;
}

/** Bytes of one partial tile's sub-tile classes (compiler/subPlan.ts), as the sm_90a template stages them. */
export function sm90ClassBytes(blockQ: number, blockKv: number): number {
  return (blockQ / 16) * classWordsPerStripe(blockKv) * 4;
}

/** Reasons this configuration cannot be built for `arch`; empty when it can. */
export function configProblems(ir: KernelIR, arch: CudaArch): string[] {
  const c = ir.config;
  const lim = LIMITS[arch];
  if (templateOf(ir, arch) === "sm90") {
    const out = hopperProblems(ir).map((p) => `sm_90a template: ${p}`);
    // + the static mbarriers (Q, full and empty per stage), 8 bytes each
    const smem = sharedBytes(ir, c, "sm90") + 8 * (1 + 2 * c.stages);
    if (smem > lim.maxSharedPerBlock)
      out.push(
        `needs ${smem} bytes of shared memory per block, more than ${arch} offers (${lim.maxSharedPerBlock}): use fewer stages or a smaller key tile`,
      );
    return out;
  }
  const out: string[] = [];
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
