// Runs a compiled kernel's forward and backward on fresh random inputs (rounded to the kernel's dtype,
// so the reference sees exactly what the GPU sees), with every gradient poisoned first, and compares
// them with the float64 reference (runtime/reference.ts). Shared by the GPU tests, the sanitizer run
// and the backward benchmark's correctness gate.
import type { KernelSpec } from "../../compiler/check.ts";
import { elementMask } from "../../compiler/elementMask.ts";
import { seqLen } from "../../compiler/layout.ts";
import type { CudaAttention, TensorLayout } from "../../runtime/attention.ts";
import { CudaDevice, type DeviceBuffer } from "../../runtime/cuda/device.ts";
import { f32ToHalfBits, halfBitsToF32 } from "../../runtime/cuda/dtype.ts";
import {
  compareGradients,
  randomArray,
  referenceAttentionBackward,
  type GradientComparison,
} from "../../runtime/reference.ts";
import { permute, unpermute } from "./attentionCheck.ts";

function rounded(x: Float64Array, dtype: "bf16" | "fp16"): Float32Array {
  return halfBitsToF32(f32ToHalfBits(Float32Array.from(x), dtype), dtype);
}

export interface BackwardCheck extends GradientComparison {
  /** The raw bytes of dq, dk, dv (for bit-identity checks between runs). */
  readonly bits: Uint8Array[];
}

export function checkBackward(
  attn: CudaAttention,
  kernel: KernelSpec,
  opts: { seed: number; layout?: TensorLayout; deterministic?: boolean; runs?: number },
): BackwardCheck[] {
  const ir = attn.ir;
  const { batch, heads, kvHeads, headDim: d } = ir;
  const dtype = ir.dtype;
  if (dtype === "fp32") throw new Error("the backward runs in bf16/fp16");
  const n = seqLen(kernel.layout);
  const layout = opts.layout ?? "bshd";
  const dev = CudaDevice.open();
  const qh = rounded(randomArray(batch * n * heads * d, opts.seed), dtype);
  const kh = rounded(randomArray(batch * n * kvHeads * d, opts.seed + 1), dtype);
  const vh = rounded(randomArray(batch * n * kvHeads * d, opts.seed + 2), dtype);
  const doh = rounded(randomArray(batch * n * heads * d, opts.seed + 3), dtype);
  const toLayout = (x: Float32Array, h: number) => (layout === "bshd" ? x : permute(x, batch, n, h, d));
  const fromLayout = (x: Float32Array, h: number) => (layout === "bshd" ? x : unpermute(x, batch, n, h, d));
  const q = dev.fromHost(toLayout(qh, heads), dtype);
  const k = dev.fromHost(toLayout(kh, kvHeads), dtype);
  const v = dev.fromHost(toLayout(vh, kvHeads), dtype);
  const dout = dev.fromHost(toLayout(doh, heads), dtype);
  const out = dev.allocElements(dtype, batch * n * heads * d);
  const lse = dev.allocElements("fp32", batch * heads * n);
  const dq = dev.allocElements(dtype, batch * n * heads * d);
  const dk = dev.allocElements(dtype, batch * n * kvHeads * d);
  const dv = dev.allocElements(dtype, batch * n * kvHeads * d);
  try {
    attn.run(q, k, v, out, { lse, layout });
    const allowed = elementMask(kernel.layout, kernel.mask);
    const ref = referenceAttentionBackward(
      qh,
      kh,
      vh,
      doh,
      { batch, seqLen: n, heads, kvHeads, headDim: d },
      allowed,
      ir.scale,
    );
    const results: BackwardCheck[] = [];
    for (let run = 0; run < (opts.runs ?? 1); run++) {
      for (const g of [dq, dk, dv]) g.poison();
      attn.backward(q, k, v, out, lse, dout, dq, dk, dv, { layout, deterministic: opts.deterministic });
      dev.synchronize();
      const got = {
        dq: fromLayout(dq.download() as Float32Array, heads),
        dk: fromLayout(dk.download() as Float32Array, kvHeads),
        dv: fromLayout(dv.download() as Float32Array, kvHeads),
      };
      results.push({ ...compareGradients(got, ref), bits: [dq, dk, dv].map((b) => b.downloadBytes()) });
    }
    return results;
  } finally {
    for (const b of [q, k, v, dout, out, lse, dq, dk, dv] as DeviceBuffer[]) b.free();
  }
}
