// KernelIR (a forward kernel) → BackwardIR: what the CUDA backend needs to render the kernels of the
// attention backward pass and a runtime needs to launch them. Like lowerKernel, the only place where
// the backward's tiles, plans, launch orders and workspace sizes are derived.
//
// The backward runs two passes over the same mask, each on a plan re-derived from the spec's at its
// own tile (never computing a pair the spec's plan skips):
//   dK/dV — key-major: one thread block per (key block, kv head, batch) walks the plan's transposed
//           lists (fullT / partialT), for every query head of its GQA group, accumulating dK and dV in
//           registers; in the default variant it also adds each step's dQ into an fp32 workspace with
//           atomics (order-dependent rounding), in the deterministic one it leaves dQ to …
//   dQ    — query-major: one thread block per (query block, head, batch) walks the full/partial
//           lists as the forward does and writes dQ once (bit-identical run to run).
// Query rows are padded to a multiple of ROW_PAD in the fp32 workspace (lse·log2 e, rowsum(dO∘O),
// dQ accumulator), so every tile of rows is whole and 16-byte aligned.
import type { KernelIR } from "./lower.ts";
import { workOrder } from "./lower.ts";
import { buildPlan, type BlockPlan } from "./plan.ts";
import { subTilePlan, type SubTilePlan } from "./subPlan.ts";

export type BackwardTemplate = "sm90" | "sm80";

/** Query rows per tile of the workspace (and of every backward tile). */
export const ROW_PAD = 64;

/** Query rows per block of the row-statistics and dQ-conversion launches (4 threads a row, 128 a block). */
export const STAT_ROWS = 32;

export interface BackwardPass {
  /** The plan the pass walks, at blockQ × blockKv. */
  readonly plan: BlockPlan;
  readonly blockQ: number;
  readonly blockKv: number;
  readonly threads: number;
  readonly stages: number;
  /** Rows of the pass's major side (key blocks for dK/dV, query blocks for dQ), heaviest first. */
  readonly order: Int32Array;
  /** How many of `order`'s first rows are heavy (dispatched first for every head). */
  readonly heavy: number;
  /** Sub-tile classes of the partial blocks, in the pass's orientation. */
  readonly subTiles: SubTilePlan;
}

export interface BackwardIR {
  /** The forward kernel this is the backward of (shape, dtype, mask, layout, hash, scale). */
  readonly forward: KernelIR;
  readonly template: BackwardTemplate;
  /** Base of the entry points: `${forward.entry}_bwd_…`. */
  readonly entry: string;
  /** Query rows per (batch, head) in the fp32 workspace: seqLen rounded up to ROW_PAD. */
  readonly seqPad: number;
  /** Query rows per block of the statistics and conversion launches (their grid: seqPad / statRows). */
  readonly statRows: number;
  readonly dkdv: BackwardPass;
  readonly dq: BackwardPass;
}

export interface BackwardConfig {
  readonly template: BackwardTemplate;
  /** Query/dO tiles in flight in the dK/dV pass. */
  readonly dkdvStages: number;
  /** K/V tiles in flight in the dQ pass. */
  readonly dqStages: number;
}

/** Why a kernel has no backward on this architecture; empty when it has one. */
export function backwardProblems(ir: Pick<KernelIR, "dtype" | "headDim">): string[] {
  const out: string[] = [];
  if (ir.dtype === "fp32") out.push("the backward runs in bf16 or fp16, not fp32");
  if (ir.headDim % 16 !== 0 || ir.headDim < 16 || ir.headDim > 128)
    out.push(`head_dim ${ir.headDim} is not a multiple of 16 up to 128 (backward tensor-core tiles)`);
  return out;
}

/**
 * The default backward configuration on `arch`: on sm_90 the wgmma dK/dV kernel (head dims 64, 96,
 * 128: 128-key blocks, two consumer warpgroups of 64 keys, 64-query steps), elsewhere and for other
 * head dims the mma.sync one (64-key blocks, four warps of 16 keys). The dQ pass is mma.sync on both.
 */
export function defaultBackwardConfig(
  ir: Pick<KernelIR, "headDim">,
  arch: string | undefined,
): BackwardConfig {
  const hopper = !!arch?.startsWith("sm_90") && [64, 96, 128].includes(ir.headDim);
  return { template: hopper ? "sm90" : "sm80", dkdvStages: 2, dqStages: 2 };
}

export function lowerBackward(ir: KernelIR, arch: string | undefined, config?: BackwardConfig): BackwardIR {
  const problems = backwardProblems(ir);
  if (problems.length) throw new RangeError(`kernel '${ir.name}' has no backward: ${problems.join("; ")}`);
  const cfg = config ?? defaultBackwardConfig(ir, arch);
  const planInput = { layout: ir.layout, mask: ir.mask };
  const dkdvBlockKv = cfg.template === "sm90" ? 128 : 64;
  const dkdvPlan = buildPlan({ ...planInput, blockQ: ROW_PAD, blockKv: dkdvBlockKv });
  const dqPlan = dkdvBlockKv === 64 ? dkdvPlan : buildPlan({ ...planInput, blockQ: ROW_PAD, blockKv: 64 });
  const kvOrder = workOrder(dkdvPlan.fullT, dkdvPlan.partialT);
  const qOrder = workOrder(dqPlan.full, dqPlan.partial);
  return {
    forward: ir,
    template: cfg.template,
    entry: `${ir.entry}_bwd`,
    seqPad: Math.ceil(ir.seqLen / ROW_PAD) * ROW_PAD,
    statRows: STAT_ROWS,
    dkdv: {
      plan: dkdvPlan,
      blockQ: ROW_PAD,
      blockKv: dkdvBlockKv,
      // sm90: a producer warpgroup and one consumer warpgroup per 64 keys; sm80: a warp per 16 keys
      threads: cfg.template === "sm90" ? 128 * (1 + dkdvBlockKv / 64) : (dkdvBlockKv / 16) * 32,
      stages: cfg.dkdvStages,
      order: kvOrder.order,
      heavy: kvOrder.heavy,
      subTiles: subTilePlan(dkdvPlan, ir.layout, ir.mask, "k"),
    },
    dq: {
      plan: dqPlan,
      blockQ: ROW_PAD,
      blockKv: 64,
      threads: (ROW_PAD / 16) * 32,
      stages: cfg.dqStages,
      order: qOrder.order,
      heavy: qOrder.heavy,
      subTiles: subTilePlan(dqPlan, ir.layout, ir.mask, "q"),
    },
  };
}
