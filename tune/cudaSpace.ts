// The CUDA configuration space: declared axes, pruning against the device's limits (with the limit
// each pruned configuration breaks), and a cheap cost model that ranks the rest so only the best
// few are compiled and timed.
import {
  configProblems,
  CUDA_ARCHS,
  sharedBytes,
  templateOf,
  type CudaArch,
  type CudaTemplate,
} from "../backends/cuda/target.ts";
import { hopperWarps, type KernelConfig, type KernelIR } from "../compiler/lower.ts";
import type { KernelPlan } from "../compiler/pipeline.ts";
import { buildPlan } from "../compiler/plan.ts";
import { candidate, PlanMemo, tileWork, type Candidate } from "./candidates.ts";
import type { CudaChoice } from "./choice.ts";

/** The axes of the space. The query block also takes the spec's block halved (down to 64 rows). */
export const CUDA_AXES = {
  warps: [2, 4, 8],
  /**
   * 144, 160 and 176 do not divide a 128-key block: the wgmma template only (compiler/lower.ts). 144
   * divides 3600, the frame of the Open-Sora-Plan layouts, so its tiles never straddle a frame.
   */
  kvTile: [32, 64, 128, 144, 160, 176],
  stages: [2, 3, 4],
  /** How a query block finds its kv blocks: one encoding exists today (CSR lists in device memory). */
  planEncoding: ["csr-device"],
} as const;

/** What the pruning and the cost model need to know about a device. */
export interface CudaTuneLimits {
  /** The device's architecture, e.g. "sm_90". */
  readonly arch: string;
  readonly smCount: number;
  readonly sharedPerBlock: number;
  readonly sharedPerSm: number;
  readonly regsPerSm: number;
  readonly maxThreadsPerSm: number;
  readonly maxCtasPerSm: number;
}

const PER_SM: Record<string, { sharedPerSm: number; maxThreadsPerSm: number; maxCtasPerSm: number }> = {
  sm_80: { sharedPerSm: 167_936, maxThreadsPerSm: 2048, maxCtasPerSm: 32 },
  sm_86: { sharedPerSm: 102_400, maxThreadsPerSm: 1536, maxCtasPerSm: 16 },
  sm_89: { sharedPerSm: 102_400, maxThreadsPerSm: 1536, maxCtasPerSm: 24 },
  sm_90: { sharedPerSm: 233_472, maxThreadsPerSm: 2048, maxCtasPerSm: 32 },
};

/**
 * Limits of a device (from DeviceInfo where given; the per-SM figures from NVIDIA's tables for the
 * nearest known architecture). Without a device: an H100 SXM (132 SMs).
 */
export function cudaTuneLimits(
  arch: string,
  info?: { smCount: number; sharedMemPerBlockOptin: number },
): CudaTuneLimits {
  const base = baseArch(arch);
  const per = PER_SM[base] ?? PER_SM.sm_80!;
  return {
    arch,
    smCount: info?.smCount ?? 132,
    sharedPerBlock: info?.sharedMemPerBlockOptin ?? per.sharedPerSm - 1024,
    sharedPerSm: per.sharedPerSm,
    regsPerSm: 65_536,
    maxThreadsPerSm: per.maxThreadsPerSm,
    maxCtasPerSm: per.maxCtasPerSm,
  };
}

function archNumber(a: string): { n: number; suffix: string } | undefined {
  const m = /^sm_(\d+)([a-z]?)$/.exec(a);
  return m ? { n: Number(m[1]), suffix: m[2]! } : undefined;
}

/** The generic architecture tilec has limits for at or below `arch` (sm_90a → sm_90). */
function baseArch(arch: string): string {
  const cc = archNumber(arch)?.n ?? 80;
  const known = Object.keys(PER_SM).filter((a) => archNumber(a)!.n <= cc);
  return known[known.length - 1] ?? "sm_80";
}

/** The architecture tilec emits for on a device: the nearest one it knows at or below it. */
export function cudaArchFor(deviceArch: string): string | undefined {
  const dev = archNumber(deviceArch);
  const known = (CUDA_ARCHS as readonly string[]).filter((a) => {
    const x = archNumber(a);
    return dev && x && !x.suffix && x.n <= dev.n;
  });
  return known[known.length - 1];
}

/**
 * Registers per thread of the sm80 template, estimated as the template plans them (its
 * REG_BUDGET logic in flash_fwd_sm80.cuh): the O accumulator, one softmax step of S, Q fragments
 * when they still fit, and ~70 for row state, addresses and loop control.
 */
export function estimateRegisters(headDim: number, blockQ: number, warps: number, kvTile: number): number {
  const budget = 184;
  const mt = blockQ / warps / 16;
  const acc = mt * (headDim / 8) * 4;
  let skv = kvTile;
  while (skv > 16 && !(kvTile % skv === 0 && acc + (mt * skv) / 2 <= budget)) skv -= 16;
  const qRegs = mt * (headDim / 16) * 4;
  const inRegs = acc + (mt * skv) / 2 + qRegs <= budget;
  return 70 + acc + (mt * skv) / 2 + (inRegs ? qRegs : 0);
}

/** Thread blocks an SM holds at once, and what limits it. */
export function ctasPerSm(
  limits: CudaTuneLimits,
  smem: number,
  threads: number,
  regs: number,
): { ctas: number; by: string } {
  const bounds: [number, string][] = [
    [Math.floor(limits.sharedPerSm / (smem + 1024)), "shared memory"],
    [Math.floor(limits.regsPerSm / (Math.ceil(Math.min(regs, 255) / 8) * 8 * threads)), "registers"],
    [Math.floor(limits.maxThreadsPerSm / threads), "threads"],
    [limits.maxCtasPerSm, "blocks per SM"],
  ];
  const [ctas, by] = bounds.reduce((a, b) => (b[0] < a[0] ? b : a));
  return { ctas, by };
}

/** Effective per-SM FLOP rate of the sm80 template (H100 measurement: ~350 TFLOP/s over 132 SMs). */
const SM_FLOPS = 2.65e12;
/**
 * The wgmma template against the mma.sync one, and what narrower tiles cost it. Calibrated on H100
 * (`tilec tune`, 2026-11-23, osp29/osp93): at 128 × 128 tiles with 3 stages it ran 1.47× the sm80
 * rate; 64-key tiles took 2.2× as long (a wgmma of N = 64 per step, twice the barriers), 64-row
 * blocks (one consumer warpgroup) another 1.6×, and 2 stages 1.5× (its software pipeline holds a
 * slot one tile longer); 4 stages were within ±2% of 3. Key tiles of 160 and 176 (3 stages) ran
 * 0–5% faster than 128 at head dim 96 (bench/NOTES.md step 20). 144 (3 stages) took 0.94× 160's time
 * per tile on a dense plan, 4% slower in all, but its plan has half the partial tiles on the
 * Open-Sora-Plan masks and ran them 0–2% faster (step 23): rated beside 160 so that both are timed.
 * Used only to rank: the timings decide.
 */
const WGMMA_SPEEDUP = 1.47;
const WGMMA_KV_EFF: Record<number, number> = { 176: 1.03, 160: 1.03, 144: 1.02, 128: 1, 64: 0.45, 32: 0.25 };
const WGMMA_Q64_EFF = 0.63;

type CostIR = Pick<KernelIR, "headDim" | "heads" | "batch" | "blockQ" | "blockKv" | "config" | "dtype">;

/**
 * The cost model: FLOPs of the tiles the kernel visits (its own plan, so finer tiles that skip more
 * count), at a rate that falls with one 16-row mma tile per warp (K/V fragments re-read per 16
 * rows), with narrow K/V tiles (per-step softmax and barrier overhead), and with too few resident
 * warps to hide latency; the makespan is the larger of the even share per SM and the heaviest
 * thread block alone. Used only to rank: the timings decide.
 */
export function estimateCudaMs(
  ir: CostIR,
  plan: KernelPlan["plan"],
  limits: CudaTuneLimits,
  template: CudaTemplate = ir.dtype === "fp32" ? "f32" : "sm80",
): number {
  const { warps, stages } = ir.config;
  let rate: number;
  if (template === "sm90") {
    const { ctas } = ctasPerSm(limits, sharedBytes(ir, ir.config, template), warps * 32, 0);
    const kvEff = WGMMA_KV_EFF[ir.blockKv] ?? 0.25;
    const qEff = ir.blockQ >= 128 ? 1 : WGMMA_Q64_EFF;
    const stageEff = stages >= 3 ? 1 : 0.65;
    rate = SM_FLOPS * WGMMA_SPEEDUP * kvEff * qEff * stageEff * Math.min(1, ctas);
  } else {
    const mt = ir.blockQ / warps / 16;
    const regs = estimateRegisters(ir.headDim, ir.blockQ, warps, ir.blockKv);
    const { ctas } = ctasPerSm(limits, sharedBytes(ir, ir.config, template), warps * 32, regs);
    const mtEff = mt >= 2 ? 1 : 0.8;
    const kvEff = ir.blockKv >= 64 ? 1 : 0.88;
    const stageEff = stages > 2 ? 1.02 : 1;
    const latency = Math.min(1, Math.sqrt((ctas * warps) / 8));
    rate = SM_FLOPS * mtEff * kvEff * stageEff * latency;
  }
  const tileFlops = 4 * ir.blockQ * ir.blockKv * ir.headDim;
  let total = 0;
  let heaviest = 0;
  for (const w of tileWork(plan)) {
    const t = (w + 0.5) * tileFlops; // + Q load and epilogue, about half a tile
    total += t;
    if (t > heaviest) heaviest = t;
  }
  total *= ir.heads * ir.batch;
  return Math.max(total / (limits.smCount * rate), heaviest / rate) * 1e3;
}

export interface CudaSpaceOptions {
  /** Architectures to emit for (default: cudaArchFor the limits' arch). */
  readonly archs?: readonly string[];
  readonly warps?: readonly number[];
  readonly kvTiles?: readonly number[];
  readonly stages?: readonly number[];
}

/**
 * Every configuration of the space for one kernel, pruned ones with their reasons, the rest with
 * the cost model's estimate. `baseIR` is the kernel as compile() lowers it without a tuned winner:
 * its configuration is the default the winners are measured against. Code paths: the mma.sync
 * template (sm_80 and later), and on sm_90 the wgmma template where the backend has it (selected
 * by its warp count, hopperWarps: a producer warpgroup plus one consumer warpgroup per 64 rows).
 */
export function cudaCandidates(
  base: KernelPlan,
  baseIR: KernelIR,
  limits: CudaTuneLimits,
  options: CudaSpaceOptions = {},
): Candidate<CudaChoice>[] {
  const k = base.kernel;
  const archs = options.archs ?? [cudaArchFor(limits.arch) ?? limits.arch];
  const blockQs: number[] = [];
  for (let q = k.blockQ; q >= 64 && q % 16 === 0 && k.blockQ % q === 0; q /= 2) blockQs.push(q);
  if (!blockQs.length) blockQs.push(k.blockQ);
  const def = baseIR.config;
  const defaultArch = archs[0];
  const plans = new PlanMemo(base);
  const out: Candidate<CudaChoice>[] = [];
  const warpsFor = (arch: string, blockQ: number): number[] => {
    const hw = arch === "sm_90" && k.layout.dtype !== "fp32" ? hopperWarps(blockQ) : undefined;
    const mma = (options.warps ?? CUDA_AXES.warps).filter((w) => w !== hw);
    return hw === undefined ? mma : [...mma, hw];
  };
  for (const arch of archs)
    for (const blockQ of blockQs)
      for (const warps of warpsFor(arch, blockQ))
        for (const kvTile of options.kvTiles ?? CUDA_AXES.kvTile)
          for (const stages of options.stages ?? CUDA_AXES.stages) {
            const config: KernelConfig = { warps, stages, kvTile };
            const isDefault =
              arch === defaultArch &&
              blockQ === k.blockQ &&
              warps === def.warps &&
              stages === def.stages &&
              kvTile === def.kvTile;
            const pruned: string[] = [];
            const ir = { ...baseIR, blockQ, blockKv: kvTile, config, threads: warps * 32 };
            const cudaArch = baseArchOf(arch);
            const template = templateOf(ir, cudaArch);
            if (k.blockKv % kvTile !== 0 && template !== "sm90")
              pruned.push(`K/V tile ${kvTile} does not divide the spec's key block ${k.blockKv}`);
            const choice: CudaChoice = { target: "cuda", arch, template, blockQ, config };
            if (!pruned.length) pruned.push(...configProblems(ir, cudaArch));
            if (!pruned.length && template === "sm80") {
              const regs = estimateRegisters(ir.headDim, blockQ, warps, kvTile);
              if (regs > 255)
                pruned.push(
                  `~${regs} registers per thread (a ${blockQ / warps}-row warp holds ${(blockQ / warps / 16) * (ir.headDim / 8) * 4} accumulator registers) exceed 255: it would spill`,
                );
            }
            const smem = sharedBytes(ir, config, template);
            if (!pruned.length && smem > limits.sharedPerBlock)
              pruned.push(
                `needs ${smem} bytes of shared memory per block, more than this device allows (${limits.sharedPerBlock})`,
              );
            const estimate = pruned.length
              ? undefined
              : estimateCudaMs(
                  ir,
                  plans.get(blockQ, kvTile, (q, kv) => buildPlan({ ...k, blockQ: q, blockKv: kv })),
                  limits,
                  template,
                );
            out.push(candidate(choice, pruned, isDefault, estimate, template));
          }
  return out;
}

/** backends/cuda/target.ts knows limits per generic architecture; variants share their base's. */
function baseArchOf(arch: string): CudaArch {
  return ((CUDA_ARCHS as readonly string[]).includes(arch) ? arch : baseArch(arch)) as CudaArch;
}
