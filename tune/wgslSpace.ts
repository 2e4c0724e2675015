// The WGSL configuration space: query block, K/V tile, workgroup shape (invocations, their rows ×
// columns split, register tiles) and subgroup use; pruned against the adapter's limits with the
// limit each configuration breaks, ranked by a cheap cost model.
import {
  configProblems,
  defaultStorage,
  tilings,
  type WgslCaps,
  type WgslStorage,
  type WgslTiling,
} from "../backends/wgsl/target.ts";
import type { KernelIR } from "../compiler/lower.ts";
import type { KernelPlan } from "../compiler/pipeline.ts";
import { buildPlan } from "../compiler/plan.ts";
import { candidate, PlanMemo, tileWork, type Candidate } from "./candidates.ts";
import type { WgslChoice } from "./choice.ts";

export const WGSL_AXES = {
  kvTile: [32, 64, 128],
  /** Invocations per workgroup. */
  threads: [64, 128, 256],
  /** Invocations per query row (tc); the rest (tr = threads / tc) stack rows. */
  tc: [4, 8, 16],
  /** Query rows (rq) and keys (rk) per invocation. */
  rq: [1, 2, 4],
  rk: [1, 2, 4],
  subgroups: [true, false],
} as const;

/** f32 accumulators of the output one invocation may hold before most GPUs spill (target.ts's MAX_ACC). */
const MAX_ACC = 64;
/** Rough f32 FMA rate of the WGSL kernel on a discrete GPU, FLOP/s (H100: 15–17 TFLOP/s measured). */
const WGSL_FLOPS = 16e12;

export interface WgslSpaceOptions {
  readonly kvTiles?: readonly number[];
  readonly threads?: readonly number[];
  readonly storage?: WgslStorage;
}

/**
 * Every configuration for one kernel on an adapter with `caps`; `baseIR` is the kernel lowered with
 * its default configuration, and the default candidate is what compileWgsl picks for it
 * (chooseTiling at the default K/V tile, subgroups where offered).
 */
export function wgslCandidates(
  base: KernelPlan,
  baseIR: KernelIR,
  caps: WgslCaps,
  options: WgslSpaceOptions = {},
): Candidate<WgslChoice>[] {
  const k = base.kernel;
  const storage = options.storage ?? defaultStorage(baseIR, caps);
  const d4 = baseIR.headDim / 4;
  const defaultTiling = tilings(baseIR, caps.limits, storage)[0];
  const blockQs: number[] = [];
  for (let q = k.blockQ; q >= 64 && k.blockQ % q === 0; q /= 2) blockQs.push(q);
  if (!blockQs.length) blockQs.push(k.blockQ);
  const plans = new PlanMemo(base);
  const out: Candidate<WgslChoice>[] = [];
  for (const blockQ of blockQs)
    for (const kvTile of options.kvTiles ?? WGSL_AXES.kvTile)
      for (const threads of options.threads ?? WGSL_AXES.threads)
        for (const tc of WGSL_AXES.tc)
          for (const rq of WGSL_AXES.rq)
            for (const rk of WGSL_AXES.rk)
              for (const subgroups of caps.subgroups ? WGSL_AXES.subgroups : [false]) {
                const tr = threads / tc;
                const tiling: WgslTiling = { threads, tc, tr, rq, rk, qt: tr * rq, kc: tc * rk };
                const config = { warps: Math.max(1, threads / 32), stages: 1, kvTile };
                const choice: WgslChoice = { target: "wgsl", blockQ, config, tiling, subgroups };
                const isDefault =
                  blockQ === k.blockQ &&
                  kvTile === baseIR.config.kvTile &&
                  subgroups === caps.subgroups &&
                  sameTiling(tiling, defaultTiling);
                const pruned: string[] = [];
                if (k.blockKv % kvTile !== 0)
                  pruned.push(`K/V tile ${kvTile} does not divide the spec's key block ${k.blockKv}`);
                const ir = { ...baseIR, blockQ, blockKv: kvTile, threads, config };
                if (!pruned.length) pruned.push(...configProblems(ir, caps.limits, { storage, tiling }));
                if (!pruned.length && Number.isInteger(d4 / tc) && rq * (d4 / tc) * 4 > MAX_ACC)
                  pruned.push(
                    `${rq * (d4 / tc) * 4} f32 output accumulators per invocation (more than ${MAX_ACC} spill on most GPUs)`,
                  );
                if (!pruned.length && rq * rk > 16)
                  pruned.push(`${rq * rk} scores per invocation (more than 16 spill on most GPUs)`);
                let estimate: number | undefined;
                if (!pruned.length) {
                  const ranked = tilings(ir, caps.limits, storage);
                  const rank = ranked.findIndex((t) => sameTiling(t, tiling));
                  if (rank < 0) pruned.push("the WGSL backend's tiling rules reject it");
                  else {
                    const plan = plans.get(blockQ, kvTile, (q, kv) =>
                      buildPlan({ ...k, blockQ: q, blockKv: kv }),
                    );
                    const eff = (subgroups ? 1.05 : 1) / (1 + 0.03 * rank);
                    let work = 0;
                    for (const w of tileWork(plan)) work += w + 0.5;
                    const flops = work * 4 * blockQ * kvTile * ir.headDim * ir.heads * ir.batch;
                    estimate = (flops / (WGSL_FLOPS * eff)) * 1e3;
                  }
                }
                out.push(candidate(choice, pruned, isDefault, estimate, storage));
              }
  return out;
}

export function sameTiling(a: WgslTiling | undefined, b: WgslTiling | undefined): boolean {
  return (
    !!a && !!b && a.threads === b.threads && a.tc === b.tc && a.tr === b.tr && a.rq === b.rq && a.rk === b.rk
  );
}
