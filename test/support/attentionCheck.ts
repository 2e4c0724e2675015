// Runs a compiled kernel on fresh random inputs (rounded to the kernel's dtype, so the reference sees
// exactly what the GPU sees), with the output and LSE poisoned first, and compares the given rows
// against the float64 reference. Shared by the GPU tests and the benchmark's correctness gate.
import type { KernelSpec } from "../../compiler/check.ts";
import { elementMask } from "../../compiler/elementMask.ts";
import { seqLen } from "../../compiler/layout.ts";
import type { CudaAttention, TensorLayout } from "../../runtime/attention.ts";
import { CudaDevice, type DeviceBuffer } from "../../runtime/cuda/device.ts";
import { f32ToHalfBits, halfBitsToF32 } from "../../runtime/cuda/dtype.ts";
import { compareRows, randomArray, referenceAttention, type RowComparison } from "../../runtime/reference.ts";

export type CheckResult = RowComparison;

function rounded(x: Float64Array, dtype: "bf16" | "fp16" | "fp32"): Float32Array {
  const f = Float32Array.from(x);
  return dtype === "fp32" ? f : halfBitsToF32(f32ToHalfBits(f, dtype), dtype);
}

/** Rows worth checking: block edges, frame edges, the ends, and a random sample. */
export function sampleRows(n: number, blockQ: number, count: number, seed: number): number[] {
  const rows = new Set<number>([0, 1, n - 1, n - 2]);
  for (let b = blockQ; b < n && rows.size < count / 2; b += blockQ * 7)
    [b - 1, b].forEach((r) => rows.add(r));
  const r = randomArray(count, seed);
  for (let i = 0; rows.size < count && i < r.length; i++) rows.add(Math.floor(((r[i]! + 1) / 2) * n));
  return [...rows].filter((x) => x >= 0 && x < n).sort((a, b) => a - b);
}

/**
 * A keyGain for checkKernel: keys grow 12x and then 200x by thirds of an n-token sequence, so a row's
 * max jumps by orders of magnitude from one key tile to the next (the wgmma template's fast softmax
 * then falls back).
 */
export function jumpingKeys(n: number): (token: number) => number {
  return (t) => (t < n / 3 ? 1 : t < (2 * n) / 3 ? 12 : 200);
}

export function checkKernel(
  attn: CudaAttention,
  kernel: KernelSpec,
  opts: {
    seed: number;
    rows?: number[];
    layout?: TensorLayout;
    /** Multiplies the keys of token t (every kv head) by keyGain(t): scores that jump from tile to tile. */
    keyGain?: (token: number) => number;
  },
): CheckResult {
  const ir = attn.ir;
  const { batch, heads, kvHeads, headDim: d, dtype } = ir;
  const n = seqLen(kernel.layout);
  const layout = opts.layout ?? "bshd";
  const dev = CudaDevice.open();
  // Host tensors in [b, s, h, d] order for the reference; permuted on upload for "bhsd".
  const qh = rounded(randomArray(batch * n * heads * d, opts.seed), dtype);
  const kRaw = randomArray(batch * n * kvHeads * d, opts.seed + 1);
  if (opts.keyGain)
    for (let i = 0; i < kRaw.length; i++) kRaw[i]! *= opts.keyGain(Math.floor(i / (kvHeads * d)) % n);
  const kh = rounded(kRaw, dtype);
  const vh = rounded(randomArray(batch * n * kvHeads * d, opts.seed + 2), dtype);
  const toLayout = (x: Float32Array, h: number) => (layout === "bshd" ? x : permute(x, batch, n, h, d));
  const q = dev.fromHost(toLayout(qh, heads), dtype);
  const k = dev.fromHost(toLayout(kh, kvHeads), dtype);
  const v = dev.fromHost(toLayout(vh, kvHeads), dtype);
  const out = dev.allocElements(dtype, batch * n * heads * d).poison();
  const lse = dev.allocElements("fp32", batch * heads * n).poison();
  try {
    attn.run(q, k, v, out, { lse, layout });
    dev.synchronize();
    const gotRaw = out.download() as Float32Array;
    const got = layout === "bshd" ? gotRaw : unpermute(gotRaw, batch, n, heads, d);
    const gotLse = lse.download() as Float32Array;
    const rows = opts.rows ?? [...Array(n).keys()];
    const allowed = elementMask(kernel.layout, kernel.mask);
    const ref = referenceAttention(
      qh,
      kh,
      vh,
      { batch, seqLen: n, heads, kvHeads, headDim: d },
      allowed,
      ir.scale,
      rows,
    );
    return compareRows(got, gotLse, ref, { batch, seqLen: n, heads, kvHeads, headDim: d }, rows);
  } finally {
    for (const b of [q, k, v, out, lse] as DeviceBuffer[]) b.free();
  }
}

export function permute(x: Float32Array, batch: number, n: number, h: number, d: number): Float32Array {
  const y = new Float32Array(x.length);
  for (let b = 0; b < batch; b++)
    for (let s = 0; s < n; s++)
      for (let hh = 0; hh < h; hh++)
        y.set(
          x.subarray(((b * n + s) * h + hh) * d, ((b * n + s) * h + hh + 1) * d),
          ((b * h + hh) * n + s) * d,
        );
  return y;
}

export function unpermute(y: Float32Array, batch: number, n: number, h: number, d: number): Float32Array {
  const x = new Float32Array(y.length);
  for (let b = 0; b < batch; b++)
    for (let s = 0; s < n; s++)
      for (let hh = 0; hh < h; hh++)
        x.set(
          y.subarray(((b * h + hh) * n + s) * d, ((b * h + hh) * n + s + 1) * d),
          ((b * n + s) * h + hh) * d,
        );
  return x;
}
