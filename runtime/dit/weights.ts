// The DiT's parameters by their diffusers names (as in Open-Sora-Plan v1.2's transformer checkpoint:
// `transformer_blocks.N.attn1.to_q.weight`, `adaln_single.linear.weight`, `scale_shift_table` …), the
// shapes the config implies, validation of a checkpoint against them (missing, extra, wrong shape,
// unsupported dtype — all reported at once), and reading them from safetensors.
import { SafetensorsReader, toFloat64, type Dtype } from "../io/safetensors.ts";
import { randomArray } from "../reference.ts";
import type { DitConfig } from "./config.ts";

export interface WeightSpec {
  readonly name: string;
  readonly shape: readonly number[];
  /** Input width of a linear layer (for initialisation scales); 0 for tables. */
  readonly fanIn: number;
}

/** Float dtypes a checkpoint may store parameters in (converted on load). */
export const WEIGHT_DTYPES: readonly Dtype[] = ["F32", "BF16", "F16", "F64"];

function linear(name: string, out: number, inF: number, bias = true): WeightSpec[] {
  const w: WeightSpec = { name: `${name}.weight`, shape: [out, inF], fanIn: inF };
  return bias ? [w, { name: `${name}.bias`, shape: [out], fanIn: inF }] : [w];
}

/** Every parameter of the model, in a stable order. */
export function weightSpecs(c: DitConfig): WeightSpec[] {
  const C = c.hidden;
  const p = c.patchSize;
  const specs: WeightSpec[] = [
    { name: "pos_embed.proj.weight", shape: [C, c.inChannels, p, p], fanIn: c.inChannels * p * p },
    { name: "pos_embed.proj.bias", shape: [C], fanIn: c.inChannels * p * p },
    ...linear("caption_projection.linear_1", C, c.captionChannels),
    ...linear("caption_projection.linear_2", C, C),
    ...linear("adaln_single.emb.timestep_embedder.linear_1", C, c.timestepChannels),
    ...linear("adaln_single.emb.timestep_embedder.linear_2", C, C),
    ...linear("adaln_single.linear", 6 * C, C),
  ];
  const qkvBias = c.attentionBias;
  for (let i = 0; i < c.numLayers; i++) {
    const b = `transformer_blocks.${i}`;
    specs.push(
      { name: `${b}.scale_shift_table`, shape: [6, C], fanIn: 0 },
      ...linear(`${b}.attn1.to_q`, C, C, qkvBias),
      ...linear(`${b}.attn1.to_k`, C, C, qkvBias),
      ...linear(`${b}.attn1.to_v`, C, C, qkvBias),
      ...linear(`${b}.attn1.to_out.0`, C, C),
      ...linear(`${b}.attn2.to_q`, C, C, qkvBias),
      ...linear(`${b}.attn2.to_k`, C, c.crossAttentionDim, qkvBias),
      ...linear(`${b}.attn2.to_v`, C, c.crossAttentionDim, qkvBias),
      ...linear(`${b}.attn2.to_out.0`, C, C),
      ...linear(`${b}.ff.net.0.proj`, c.ffInnerDim, C),
      ...linear(`${b}.ff.net.2`, C, c.ffInnerDim),
    );
  }
  specs.push(
    { name: "scale_shift_table", shape: [2, C], fanIn: 0 },
    ...linear("proj_out", c.patchSizeT * p * p * c.outChannels, C),
  );
  return specs;
}

export interface TensorMeta {
  readonly dtype: Dtype;
  readonly shape: readonly number[];
}

export interface WeightReport {
  readonly missing: readonly string[];
  readonly extra: readonly string[];
  readonly wrongShape: readonly { name: string; expected: readonly number[]; found: readonly number[] }[];
  readonly wrongDtype: readonly { name: string; dtype: Dtype }[];
  readonly ok: boolean;
}

export function checkWeights(c: DitConfig, found: ReadonlyMap<string, TensorMeta>): WeightReport {
  const specs = weightSpecs(c);
  const wanted = new Set(specs.map((s) => s.name));
  const missing: string[] = [];
  const wrongShape: WeightReport["wrongShape"][number][] = [];
  const wrongDtype: WeightReport["wrongDtype"][number][] = [];
  for (const s of specs) {
    const t = found.get(s.name);
    if (!t) {
      missing.push(s.name);
      continue;
    }
    if (t.shape.length !== s.shape.length || t.shape.some((d, i) => d !== s.shape[i]))
      wrongShape.push({ name: s.name, expected: s.shape, found: t.shape });
    if (!WEIGHT_DTYPES.includes(t.dtype)) wrongDtype.push({ name: s.name, dtype: t.dtype });
  }
  const extra = [...found.keys()].filter((n) => !wanted.has(n));
  const ok = !missing.length && !extra.length && !wrongShape.length && !wrongDtype.length;
  return { missing, extra, wrongShape, wrongDtype, ok };
}

/** Compresses `transformer_blocks.0.x … transformer_blocks.31.x` into `transformer_blocks.{0..31}.x`. */
function summarize(names: readonly string[], limit = 12): string {
  const groups = new Map<string, number[]>();
  const plain: string[] = [];
  for (const n of names) {
    const m = /^transformer_blocks\.(\d+)\.(.*)$/.exec(n);
    if (!m) plain.push(n);
    else groups.set(m[2]!, [...(groups.get(m[2]!) ?? []), Number(m[1])]);
  }
  const parts = [...plain];
  for (const [rest, layers] of groups) {
    const lo = Math.min(...layers);
    const hi = Math.max(...layers);
    const label =
      layers.length === hi - lo + 1 ? (lo === hi ? `${lo}` : `{${lo}..${hi}}`) : `{${layers.join(",")}}`;
    parts.push(`transformer_blocks.${label}.${rest}`);
  }
  return parts.length > limit
    ? `${parts.slice(0, limit).join(", ")} … (${parts.length - limit} more)`
    : parts.join(", ");
}

export function formatWeightReport(r: WeightReport, source: string): string {
  const lines = [`${source}: the checkpoint does not match the DiT config`];
  if (r.missing.length) lines.push(`  missing (${r.missing.length}): ${summarize(r.missing)}`);
  if (r.extra.length) lines.push(`  extra (${r.extra.length}): ${summarize(r.extra)}`);
  for (const w of r.wrongShape.slice(0, 12))
    lines.push(`  ${w.name}: shape [${w.found.join(", ")}], expected [${w.expected.join(", ")}]`);
  if (r.wrongShape.length > 12) lines.push(`  … ${r.wrongShape.length - 12} more wrong shapes`);
  for (const w of r.wrongDtype.slice(0, 12))
    lines.push(`  ${w.name}: dtype ${w.dtype}; parameters must be ${WEIGHT_DTYPES.join(", ")}`);
  lines.push(
    "  fix: check that the config (num_layers, attention_head_dim, in_channels, caption_channels…) is the checkpoint's, or strip a prefix such as 'transformer.' from the names",
  );
  return lines.join("\n");
}

export class WeightError extends Error {
  override readonly name = "WeightError";
}

/** Where parameters come from: a checkpoint on disk or tensors in memory. */
export interface WeightSource {
  readonly description: string;
  meta(): ReadonlyMap<string, TensorMeta>;
  /** The parameter's values (row-major, the checkpoint's shape). */
  read(name: string): Float64Array;
}

/** Parameters held in memory (tests; converted checkpoints). */
export function memoryWeights(
  tensors: ReadonlyMap<string, Float64Array>,
  shapes: ReadonlyMap<string, readonly number[]>,
  description = "<memory>",
): WeightSource {
  return {
    description,
    meta: () =>
      new Map(
        [...tensors.keys()].map((n) => [
          n,
          { dtype: "F64" as Dtype, shape: shapes.get(n) ?? [tensors.get(n)!.length] },
        ]),
      ),
    read: (name) => {
      const t = tensors.get(name);
      if (!t) throw new WeightError(`${description}: no parameter ${name}`);
      return t;
    },
  };
}

/** A safetensors checkpoint, read tensor by tensor. Call `close()` when done. */
export function safetensorsWeights(path: string): WeightSource & { close(): void } {
  const reader = SafetensorsReader.open(path);
  return {
    description: path,
    meta: () => new Map(reader.header.tensors.map((t) => [t.name, { dtype: t.dtype, shape: t.shape }])),
    read: (name) => toFloat64(reader.read(name)),
    close: () => reader.close(),
  };
}

/** Validates a source against the config; throws a WeightError listing every problem. */
export function validateWeights(c: DitConfig, source: WeightSource): void {
  const r = checkWeights(c, source.meta());
  if (!r.ok) throw new WeightError(formatWeightReport(r, source.description));
}

/**
 * Random parameters for tests: linear layers uniform in ±1/√fan_in (PyTorch's default), biases and
 * scale-shift tables small, so activations stay O(1) through the blocks.
 */
export function randomWeights(
  c: DitConfig,
  seed: number,
): { tensors: Map<string, Float64Array>; shapes: Map<string, readonly number[]> } {
  const tensors = new Map<string, Float64Array>();
  const shapes = new Map<string, readonly number[]>();
  let s = seed;
  for (const spec of weightSpecs(c)) {
    const n = spec.shape.reduce((a, b) => a * b, 1);
    const values = randomArray(n, s++);
    const scale = spec.fanIn === 0 ? 0.3 : spec.name.endsWith(".bias") ? 0.1 : 1 / Math.sqrt(spec.fanIn);
    for (let i = 0; i < n; i++) values[i]! *= scale;
    tensors.set(spec.name, values);
    shapes.set(spec.name, spec.shape);
  }
  return { tensors, shapes };
}
