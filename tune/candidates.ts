// A candidate of a tuning run: a choice, why it was pruned (if it was), and the cost model's
// estimate. Shared by the CUDA and WGSL spaces.
import type { KernelPlan } from "../compiler/pipeline.ts";
import type { BlockPlan } from "../compiler/plan.ts";
import { choiceKey, type TuneChoice } from "./choice.ts";

export interface Candidate<C extends TuneChoice = TuneChoice> {
  readonly key: string;
  readonly choice: C;
  /** Limits it breaks; pruned candidates are never compiled. */
  readonly pruned: readonly string[];
  /** The cost model's estimate, ms (undefined for pruned candidates). */
  readonly estimateMs?: number;
  /** The configuration compile() uses without a tuned winner. */
  readonly isDefault: boolean;
  /** The device template / code path it runs (e.g. sm80, sm90, f32; WGSL: f32 or f16 storage). */
  readonly codePath: string;
}

export function candidate<C extends TuneChoice>(
  choice: C,
  pruned: string[],
  isDefault: boolean,
  estimateMs: number | undefined,
  codePath: string,
): Candidate<C> {
  const estimate = pruned.length ? undefined : estimateMs;
  return { key: choiceKey(choice), choice, pruned, isDefault, estimateMs: estimate, codePath };
}

/**
 * Per query block, the work a kernel does at its own tiles: full tiles plus partial ones weighted by
 * the element-mask cost (the 1.1 of lowerKernel's launch order plus the mask's evaluation).
 */
export function tileWork(plan: BlockPlan, partialWeight = 1.15): Float64Array {
  const w = new Float64Array(plan.numQBlocks);
  for (let qb = 0; qb < plan.numQBlocks; qb++)
    w[qb] =
      plan.full.offsets[qb + 1]! -
      plan.full.offsets[qb]! +
      partialWeight * (plan.partial.offsets[qb + 1]! - plan.partial.offsets[qb]!);
  return w;
}

/** Plans of a kernel at other (blockQ × kvTile) tiles, built once per tile pair. */
export class PlanMemo {
  private readonly plans = new Map<string, BlockPlan>();
  constructor(private readonly base: KernelPlan) {}
  get(blockQ: number, kvTile: number, build: (q: number, kv: number) => BlockPlan): BlockPlan {
    const k = `${blockQ}x${kvTile}`;
    let p = this.plans.get(k);
    if (!p) {
      const b = this.base.plan;
      p = b.blockQ === blockQ && b.blockKv === kvTile ? b : build(blockQ, kvTile);
      this.plans.set(k, p);
    }
    return p;
  }
}

/**
 * Candidates to time: the `top` best estimates that are not pruned, spread over the code paths (at
 * most ⌈top / paths⌉ from one path while others have candidates left, so a cost model that
 * misjudges one path cannot fill the list with it), plus the default.
 */
export function selectForTiming<C extends TuneChoice>(
  all: readonly Candidate<C>[],
  top?: number,
): Candidate<C>[] {
  const live = all.filter((c) => !c.pruned.length);
  const ranked = [...live].sort(
    (a, b) => (a.estimateMs ?? Infinity) - (b.estimateMs ?? Infinity) || a.key.localeCompare(b.key),
  );
  let chosen: Candidate<C>[];
  if (top === undefined) chosen = ranked;
  else {
    const paths = new Set(ranked.map((c) => c.codePath));
    const cap = Math.ceil(top / Math.max(1, paths.size));
    const taken = new Map<string, number>();
    chosen = [];
    for (const c of ranked) {
      if (chosen.length >= top) break;
      if ((taken.get(c.codePath) ?? 0) >= cap) continue;
      chosen.push(c);
      taken.set(c.codePath, (taken.get(c.codePath) ?? 0) + 1);
    }
    // Fewer paths than slots: fill up with the next best of any path.
    for (const c of ranked) if (chosen.length < top && !chosen.includes(c)) chosen.push(c);
  }
  const def = live.find((c) => c.isDefault);
  if (def && !chosen.includes(def)) chosen.push(def);
  return chosen;
}
