// What the autotuner chooses for one kernel, per target, and how a choice becomes a KernelIR.
// A choice never changes what is computed: a finer query block re-derives the plan from the mask
// (like a finer K/V tile does in lowerKernel), so every candidate computes the spec's attention.
import type { KernelSpec } from "../compiler/check.ts";
import { configKey, lowerKernel, type KernelConfig, type KernelIR } from "../compiler/lower.ts";
import { planKernel, type KernelPlan } from "../compiler/pipeline.ts";
import type { WgslTiling } from "../backends/wgsl/target.ts";

export type TuneTarget = "cuda" | "wgsl";

export interface CudaChoice {
  readonly target: "cuda";
  /** Code path / architecture variant the source is emitted for (e.g. sm_90, or sm_90a where tilec has it). */
  readonly arch: string;
  /** Query rows per thread block: the spec's block or a divisor of it. */
  readonly blockQ: number;
  readonly config: KernelConfig;
  /**
   * The device template it runs (sm80: mma.sync, sm90: wgmma, f32). Informational: the backend
   * derives it from the architecture and the warp count (templateOf).
   */
  readonly template: string;
}

export interface WgslChoice {
  readonly target: "wgsl";
  readonly blockQ: number;
  readonly config: KernelConfig;
  /** Workgroup shape and register tiles. */
  readonly tiling: WgslTiling;
  /** Row reductions by subgroup shuffles (needs the adapter's `subgroups`). */
  readonly subgroups: boolean;
}

export type TuneChoice = CudaChoice | WgslChoice;

/** A short, stable, human-readable name of a choice (table rows, JSON, logs). */
export function choiceKey(c: TuneChoice): string {
  if (c.target === "cuda") return `${c.arch}/${c.template} q${c.blockQ} ${configKey(c.config)}`;
  const t = c.tiling;
  return `q${c.blockQ} kv${c.config.kvTile} wg${t.threads}(${t.tr}x${t.tc}) r${t.rq}x${t.rk}${c.subgroups ? " sg" : ""}`;
}

/**
 * The IR a choice runs: the spec's kernel lowered at (blockQ × kvTile) with the choice's config. The
 * IR keeps the spec's hash, plan and density, which is what caches key on and tables report; only
 * `plan` (what the kernel walks) follows the choice's tiles.
 */
export function choiceIR(
  kernel: KernelSpec,
  file: string,
  choice: { blockQ: number; config: KernelConfig },
  base: KernelPlan = planKernel(kernel),
): KernelIR {
  if (kernel.blockQ % choice.blockQ !== 0 || choice.blockQ % 16 !== 0)
    throw new RangeError(
      `query block ${choice.blockQ} must be a multiple of 16 dividing the spec's block ${kernel.blockQ}`,
    );
  if (choice.blockQ === kernel.blockQ) return lowerKernel(base, file, choice.config);
  const finer = planKernel({ ...kernel, blockQ: choice.blockQ });
  const ir = lowerKernel(finer, file, choice.config);
  return { ...ir, specPlan: base.plan, density: base.stats.density };
}
