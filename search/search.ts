// The layer-wise mask search (Efficient-vDiT, stage 2): for every layer, run dense attention and every
// candidate mask on that layer's calibration Q/K/V, measure the candidate's output error against dense
// attention, and keep the sparsest candidate whose error stays under the threshold r. Candidates are the
// spec's kernels, ordered densest to sparsest by their block plan's density (what a kernel's time
// follows); the predicted attention speedup is Σ dense / Σ chosen density over the layers.
//
// Two evaluators: the compiled CUDA kernels (every row, errors reduced on the GPU) and the float64 CPU
// reference (runtime/reference.ts; small inputs, or a sample of query rows on large ones).
import type { CheckedSpec, KernelSpec } from "../compiler/check.ts";
import { elementMask } from "../compiler/elementMask.ts";
import { seqLen, type Layout } from "../compiler/layout.ts";
import { planKernel } from "../compiler/pipeline.ts";
import { randomArray, referenceAttention, type AttentionShape } from "../runtime/reference.ts";
import type { DeviceBuffer } from "../runtime/cuda/device.ts";
import type { SquaredError } from "./cudaError.ts";

export type Metric = "rel-l2" | "mse";
export type SearchDevice = "cpu" | "cuda";

/** Q/K/V of one layer, [batch, seq, heads, head_dim] (k and v with kvHeads heads). */
export interface LayerQkv {
  readonly q: Float32Array | Float64Array | DeviceBuffer;
  readonly k: Float32Array | Float64Array | DeviceBuffer;
  readonly v: Float32Array | Float64Array | DeviceBuffer;
  readonly shape: AttentionShape;
}

export type Calibration = (layer: number) => LayerQkv | Promise<LayerQkv>;

export interface Candidate {
  readonly kernel: KernelSpec;
  /** Computed blocks / all blocks of the spec's plan. */
  readonly density: number;
  readonly flops: number;
  readonly denseFlops: number;
}

export interface CandidateError {
  readonly kernel: string;
  readonly relL2: number;
  readonly mse: number;
  readonly passed: boolean;
}

export interface LayerChoice {
  readonly layer: number;
  readonly kernel: string;
  readonly density: number;
  readonly relL2: number;
  readonly mse: number;
  /** Every candidate's error, densest first. */
  readonly errors: readonly CandidateError[];
  /** No candidate met the threshold: the lowest-error one was taken. */
  readonly overThreshold: boolean;
}

export interface SearchResult {
  readonly layout: Layout;
  readonly candidates: readonly Candidate[];
  readonly layers: readonly LayerChoice[];
  readonly metric: Metric;
  readonly threshold: number;
  readonly device: SearchDevice;
  /** Query rows the error was measured on (all rows unless sampled on the CPU). */
  readonly rows: number;
  readonly seqLen: number;
  /** Σ over layers of dense density (1) / Σ of the chosen plans' densities. */
  readonly predictedSpeedup: number;
  /** The same ratio in FLOPs of computed blocks. */
  readonly flopsSpeedup: number;
}

export interface SearchOptions {
  readonly layers: number;
  readonly threshold: number;
  readonly metric?: Metric;
  readonly device: SearchDevice;
  /** Kernel names to consider (default: every kernel of the spec; they must share one layout). */
  readonly kernels?: readonly string[];
  /** CPU only: how many query rows to measure on ("all", or a count sampled with `seed`). */
  readonly rows?: number | "all";
  readonly seed?: number;
  readonly cacheDir?: string;
  /** Called after each evaluation: `done` of `total` (layers × (candidates + 1)). */
  readonly onProgress?: (done: number, total: number, label: string) => void;
}

export class SearchError extends Error {
  override readonly name = "SearchError";
}

/** Above this many query rows the CPU evaluator samples by default (its cost is rows · seq · heads · dim). */
export const CPU_ALL_ROWS_LIMIT = 4096;
export const CPU_SAMPLED_ROWS = 256;

/** The candidates, densest first (ties keep the spec's order). */
export function candidatesOf(spec: CheckedSpec, names?: readonly string[]): Candidate[] {
  const all = [...spec.kernels.values()];
  const chosen = names
    ? names.map((n) => {
        const k = spec.kernels.get(n);
        if (!k)
          throw new SearchError(
            `the spec has no kernel '${n}'; its kernels are ${all.map((x) => x.name).join(", ")}`,
          );
        return k;
      })
    : all;
  if (!chosen.length) throw new SearchError("the spec declares no kernels to search over");
  const layouts = new Set(chosen.map((k) => k.layout.name));
  if (layouts.size > 1)
    throw new SearchError(
      `the candidate kernels use ${layouts.size} layouts (${[...layouts].join(", ")}); a model has one token layout — pick candidates with --kernels`,
    );
  return chosen
    .map((kernel) => {
      const { stats } = planKernel(kernel);
      return { kernel, density: stats.density, flops: stats.flops, denseFlops: stats.denseFlops };
    })
    .sort((a, b) => b.density - a.density);
}

/** Is this kernel exactly dense attention (every block of its plan full, none partial or empty)? */
export function isDense(c: Candidate): boolean {
  return c.density === 1 && planKernel(c.kernel).plan.counts.partial === 0;
}

function metricOf(e: SquaredError, metric: Metric): { relL2: number; mse: number; value: number } {
  const relL2 = e.refSq > 0 ? Math.sqrt(e.sumSq / e.refSq) : Math.sqrt(e.sumSq);
  const mse = e.count ? e.sumSq / e.count : 0;
  return { relL2, mse, value: metric === "mse" ? mse : relL2 };
}

/** Picks per layer; `errors` are densest first. Exported for tests of the rule itself. */
export function choose(
  layer: number,
  candidates: readonly Candidate[],
  measured: readonly SquaredError[],
  threshold: number,
  metric: Metric,
): LayerChoice {
  const errors = candidates.map((c, i) => {
    const m = metricOf(measured[i]!, metric);
    // NaN never passes: `<` is false for it.
    return { kernel: c.kernel.name, relL2: m.relL2, mse: m.mse, passed: m.value < threshold, value: m.value };
  });
  let pick = -1;
  for (let i = 0; i < errors.length; i++) {
    if (!errors[i]!.passed) continue;
    const sparser = pick < 0 || candidates[i]!.density < candidates[pick]!.density;
    const sameButBetter =
      pick >= 0 &&
      candidates[i]!.density === candidates[pick]!.density &&
      errors[i]!.value < errors[pick]!.value;
    if (sparser || sameButBetter) pick = i;
  }
  const overThreshold = pick < 0;
  if (overThreshold) pick = errors.reduce((best, e, i) => (!(e.value >= errors[best]!.value) ? i : best), 0);
  const e = errors[pick]!;
  return {
    layer,
    kernel: e.kernel,
    density: candidates[pick]!.density,
    relL2: e.relL2,
    mse: e.mse,
    errors: errors.map(({ value: _, ...rest }) => rest),
    overThreshold,
  };
}

interface Evaluator {
  /** Squared errors of every candidate against dense attention on this layer. */
  evaluate(qkv: LayerQkv, progress: (label: string) => void): Promise<SquaredError[]>;
  readonly rows: number;
  dispose(): void;
}

function checkShape(qkv: LayerQkv, layout: Layout, layer: number, device: SearchDevice): void {
  const s = qkv.shape;
  const n = seqLen(layout);
  const problems: string[] = [];
  if (s.seqLen !== n) problems.push(`sequence ${s.seqLen} ≠ layout's ${n} tokens`);
  if (s.heads !== layout.heads) problems.push(`heads ${s.heads} ≠ layout's ${layout.heads}`);
  if (s.kvHeads !== layout.kvHeads) problems.push(`kv heads ${s.kvHeads} ≠ layout's ${layout.kvHeads}`);
  if (s.headDim !== layout.headDim) problems.push(`head_dim ${s.headDim} ≠ layout's ${layout.headDim}`);
  if (device === "cuda" && s.batch !== layout.batch && layout.batch !== 1)
    problems.push(
      `batch ${s.batch} ≠ layout's ${layout.batch} (the GPU search runs a batch-1 layout per sample, or the layout's batch at once)`,
    );
  if (problems.length)
    throw new SearchError(
      `layer ${layer}: calibration Q/K/V [${s.batch}, ${s.seqLen}, ${s.heads}, ${s.headDim}] do not fit layout '${layout.name}': ${problems.join("; ")}. The search runs the spec's kernels, so calibrate with the layout's shape (or write a layout with the calibration's heads: masks do not depend on them).`,
    );
  const want = (name: string, x: LayerQkv["q"], heads: number) => {
    const len = s.batch * s.seqLen * heads * s.headDim;
    if (x.length !== len)
      throw new SearchError(`layer ${layer}: ${name} holds ${x.length} values, its shape needs ${len}`);
  };
  want("q", qkv.q, s.heads);
  want("k", qkv.k, s.kvHeads);
  want("v", qkv.v, s.kvHeads);
}

/** Query rows for the CPU evaluator: all, or a deterministic sample that includes both ends. */
export function searchRows(n: number, rows: number | "all" | undefined, seed: number): number[] {
  const count = rows === "all" ? n : (rows ?? (n <= CPU_ALL_ROWS_LIMIT ? n : CPU_SAMPLED_ROWS));
  if (count >= n) return [...Array(n).keys()];
  const picked = new Set<number>([0, n - 1]);
  const r = randomArray(4 * count, seed);
  for (let i = 0; picked.size < count && i < r.length; i++) picked.add(Math.floor(((r[i]! + 1) / 2) * n));
  return [...picked].sort((a, b) => a - b);
}

function cpuEvaluator(candidates: readonly Candidate[], layout: Layout, rows: number[]): Evaluator {
  const masks = candidates.map((c) => elementMask(layout, c.kernel.mask));
  return {
    rows: rows.length,
    async evaluate(qkv, progress) {
      const { q, k, v, shape } = qkv;
      if (!isHost(q) || !isHost(k) || !isHost(v))
        throw new SearchError(
          "the CPU search takes host arrays (Float32Array/Float64Array), not device buffers",
        );
      const dense = referenceAttention(q, k, v, shape, allowAll, undefined, rows).out;
      progress("dense");
      return candidates.map((c, i) => {
        const out = referenceAttention(q, k, v, shape, masks[i]!, undefined, rows).out;
        progress(c.kernel.name);
        return squaredErrorOnRows(out, dense, shape, rows);
      });
    },
    dispose() {},
  };
}

function allowAll(): boolean {
  return true;
}

function isHost(x: LayerQkv["q"]): x is Float32Array | Float64Array {
  return x instanceof Float32Array || x instanceof Float64Array;
}

function squaredErrorOnRows(
  got: Float64Array,
  want: Float64Array,
  s: AttentionShape,
  rows: readonly number[],
): SquaredError {
  let sumSq = 0;
  let refSq = 0;
  const width = s.heads * s.headDim;
  for (let b = 0; b < s.batch; b++)
    for (const r of rows) {
      const o = (b * s.seqLen + r) * width;
      for (let x = o; x < o + width; x++) {
        const e = got[x]! - want[x]!;
        sumSq += e * e;
        refSq += want[x]! * want[x]!;
      }
    }
  return { sumSq, refSq, count: s.batch * rows.length * width };
}

/** Runs Algorithm 1 over `options.layers` layers; calibration is asked for one layer at a time. */
export async function searchLayers(
  spec: CheckedSpec,
  calibration: Calibration,
  options: SearchOptions,
): Promise<SearchResult> {
  const metric = options.metric ?? "rel-l2";
  if (!(options.threshold > 0))
    throw new SearchError(`threshold must be a positive number, got ${options.threshold}`);
  if (!Number.isInteger(options.layers) || options.layers < 1)
    throw new SearchError(`layers must be a positive integer, got ${options.layers}`);
  const candidates = candidatesOf(spec, options.kernels);
  const layout = candidates[0]!.kernel.layout;
  const n = seqLen(layout);
  const evaluator =
    options.device === "cuda"
      ? await (await import("./cudaEvaluator.ts")).cudaEvaluator(spec, candidates, options.cacheDir)
      : cpuEvaluator(candidates, layout, searchRows(n, options.rows, options.seed ?? 1));
  const total = options.layers * (candidates.length + 1);
  let done = 0;
  const layers: LayerChoice[] = [];
  try {
    for (let layer = 0; layer < options.layers; layer++) {
      const qkv = await calibration(layer);
      checkShape(qkv, layout, layer, options.device);
      const measured = await evaluator.evaluate(qkv, (label) =>
        options.onProgress?.(++done, total, `layer ${layer}: ${label}`),
      );
      layers.push(choose(layer, candidates, measured, options.threshold, metric));
    }
  } finally {
    evaluator.dispose();
  }
  const byName = new Map(candidates.map((c) => [c.kernel.name, c]));
  const chosen = layers.map((l) => byName.get(l.kernel)!);
  return {
    layout,
    candidates,
    layers,
    metric,
    threshold: options.threshold,
    device: options.device,
    rows: evaluator.rows,
    seqLen: n,
    predictedSpeedup: chosen.length / chosen.reduce((s, c) => s + c.density, 0),
    flopsSpeedup: chosen.reduce((s, c) => s + c.denseFlops, 0) / chosen.reduce((s, c) => s + c.flops, 0),
  };
}
