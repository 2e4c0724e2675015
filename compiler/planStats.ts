// What a plan costs: density against the dense grid, FLOPs of computed blocks only (4·rows·cols·d per
// block pair, rows and cols clipped at the sequence end — the convention every number in
// bench/RESULTS.md uses), and the bytes a FlashAttention-style kernel moves.
import type { Layout } from "./layout.ts";
import type { BlockPlan } from "./plan.ts";

export interface PlanStats {
  readonly blocks: {
    readonly full: number;
    readonly partial: number;
    readonly empty: number;
    readonly total: number;
  };
  /** computed blocks / all blocks */
  readonly density: number;
  readonly sparsity: number;
  /** FLOPs of the computed blocks, all heads and batches. */
  readonly flops: number;
  /** FLOPs of dense attention over the same sequence. */
  readonly denseFlops: number;
  /** Bytes read and written: Q and O once, K and V once per computed block, all heads and batches. */
  readonly bytes: number;
}

export function bytesPerElement(dtype: Layout["dtype"]): number {
  return dtype === "fp32" ? 4 : 2;
}

export function planStats(plan: BlockPlan, layout: Layout): PlanStats {
  const total = plan.numQBlocks * plan.numKvBlocks;
  const computed = plan.counts.full + plan.counts.partial;
  let pairs = 0; // Σ rows·cols over computed blocks
  let kvRows = 0; // Σ cols over computed blocks
  const lastKv = plan.numKvBlocks - 1;
  const lastCols = plan.seqLen - lastKv * plan.blockKv;
  for (let qb = 0; qb < plan.numQBlocks; qb++) {
    const r = Math.min(plan.blockQ, plan.seqLen - qb * plan.blockQ);
    let c = 0;
    for (const list of [plan.full, plan.partial]) {
      for (let p = list.offsets[qb]!; p < list.offsets[qb + 1]!; p++)
        c += list.indices[p] === lastKv ? lastCols : plan.blockKv;
    }
    pairs += r * c;
    kvRows += c;
  }
  const perHead = 4 * layout.headDim;
  const hb = layout.heads * layout.batch;
  const e = bytesPerElement(layout.dtype);
  return {
    blocks: { ...plan.counts, total },
    density: computed / total,
    sparsity: 1 - computed / total,
    flops: pairs * perHead * hb,
    denseFlops: plan.seqLen * plan.seqLen * perHead * hb,
    bytes: hb * e * layout.headDim * (2 * plan.seqLen + 2 * kvRows),
  };
}
