// Runs a compiled WGSL kernel on fresh random inputs (rounded to the storage type, so the reference
// sees exactly what the GPU sees), with out and lse poisoned (NaN) first, and compares the given rows
// against the float64 reference. Shared by the WebGPU tests and the benchmark's correctness gate.
import { elementMask } from "../../compiler/elementMask.ts";
import { compareRows, randomArray, referenceAttention, type RowComparison } from "../reference.ts";
import type { TensorLayout } from "../../backends/wgsl/emit.ts";
import type { WgslAttention } from "./attention.ts";
import { roundToF16 } from "./half.ts";

/** The verdict of one run against the reference (shared with the CUDA tests). */
export type WgslCheckResult = RowComparison;

/** [b, s, h, d] ↔ [b, h, s, d]. */
function transpose(x: Float32Array, batch: number, a: number, b: number, d: number): Float32Array {
  const y = new Float32Array(x.length);
  for (let n = 0; n < batch; n++)
    for (let i = 0; i < a; i++)
      for (let j = 0; j < b; j++) {
        const from = ((n * a + i) * b + j) * d;
        y.set(x.subarray(from, from + d), ((n * b + j) * a + i) * d);
      }
  return y;
}

export async function checkWgsl(
  attn: WgslAttention,
  opts: { seed: number; rows?: number[]; layout?: TensorLayout },
): Promise<WgslCheckResult> {
  const { batch, heads, kvHeads, headDim: d, seqLen: n, scale } = attn.ir;
  const storage = attn.compiled.storage;
  const layout = opts.layout ?? "bshd";
  const dev = attn.device;
  const host = (len: number, seed: number) => {
    const x = Float32Array.from(randomArray(len, seed));
    return storage === "f16" ? roundToF16(x) : x;
  };
  const qh = host(batch * n * heads * d, opts.seed);
  const kh = host(batch * n * kvHeads * d, opts.seed + 1);
  const vh = host(batch * n * kvHeads * d, opts.seed + 2);
  const put = (x: Float32Array, h: number) =>
    dev.upload(layout === "bshd" ? x : transpose(x, batch, n, h, d), storage);
  const q = put(qh, heads);
  const k = put(kh, kvHeads);
  const v = put(vh, kvHeads);
  const out = dev.empty(batch * n * heads * d, storage);
  const lse = dev.empty(batch * heads * n, "f32");
  try {
    await attn.run(q, k, v, out, { lse, layout });
    const raw = await dev.download(out);
    const got = layout === "bshd" ? raw : transpose(raw, batch, heads, n, d);
    const gotLse = await dev.download(lse);
    const rows = opts.rows ?? [...Array(n).keys()];
    const allowed = elementMask(attn.kernel.layout, attn.kernel.mask);
    const ref = referenceAttention(
      qh,
      kh,
      vh,
      { batch, seqLen: n, heads, kvHeads, headDim: d },
      allowed,
      scale,
      rows,
    );
    return compareRows(got, gotLse, ref, { batch, seqLen: n, heads, kvHeads, headDim: d }, rows);
  } finally {
    for (const t of [q, k, v, out, lse]) t.buffer.destroy();
  }
}
