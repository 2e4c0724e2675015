// The correctness gate every candidate passes before it may win: the float64 reference of the first
// heads of batch 0 at sampled rows (block and frame edges, the ends, random rows), computed once per
// kernel; each candidate runs on inputs whose first heads (in [batch, heads, seq, dim] order, so they
// are one contiguous slice at the front of each buffer) are exactly the reference's inputs, with
// its output and LSE poisoned first, and is compared on those rows.
import type { KernelSpec } from "../compiler/check.ts";
import { elementMask } from "../compiler/elementMask.ts";
import {
  compareRows,
  randomArray,
  referenceAttention,
  type AttentionShape,
  type ReferenceResult,
  type RowComparison,
} from "../runtime/reference.ts";
import { sampleRows } from "../test/support/attentionCheck.ts";

export interface GateVerdict extends RowComparison {
  readonly ok: boolean;
  /** Why it failed, in words. */
  readonly reason?: string;
}

export interface GateShape {
  readonly seqLen: number;
  readonly heads: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly scale: number;
}

/** Relative error allowed for the storage type the kernel computes from. */
export function tolerance(storage: "bf16" | "fp16" | "fp32" | "f16" | "f32"): number {
  return storage === "fp32" || storage === "f32" ? 1e-4 : 1e-2;
}

export class ReferenceGate {
  /** Heads of batch 0 checked (at most 2) and the kv heads they read. */
  readonly heads: number;
  readonly kvHeads: number;
  readonly rows: number[];
  /** Inputs of the checked heads in [heads, seq, dim] order (the front of a bhsd buffer), as rounded. */
  readonly q: Float32Array;
  readonly k: Float32Array;
  readonly v: Float32Array;
  private readonly ref: ReferenceResult;
  private readonly shape: AttentionShape;

  /**
   * `round` maps values to what the device stores (bf16/fp16 rounding, or identity for f32), so
   * the reference sees exactly what the kernel sees.
   */
  constructor(
    kernel: KernelSpec,
    s: GateShape,
    round: (x: Float32Array) => Float32Array,
    readonly tol: number,
    options: { seed?: number; rows?: number } = {},
  ) {
    const seed = options.seed ?? 9;
    const n = s.seqLen;
    const d = s.headDim;
    const group = s.heads / s.kvHeads;
    this.heads = Math.min(2, s.heads);
    // Heads 0..heads-1 read kv heads floor(h / group): one kv head when the group is ≥ 2.
    this.kvHeads = Math.floor((this.heads - 1) / group) + 1;
    this.rows = sampleRows(n, kernel.blockQ, options.rows ?? 24, seed + 4);
    this.q = round(Float32Array.from(randomArray(this.heads * n * d, seed)));
    this.k = round(Float32Array.from(randomArray(this.kvHeads * n * d, seed + 1)));
    this.v = round(Float32Array.from(randomArray(this.kvHeads * n * d, seed + 2)));
    this.shape = { batch: 1, seqLen: n, heads: this.heads, kvHeads: this.kvHeads, headDim: d };
    const allowed = elementMask(kernel.layout, kernel.mask);
    this.ref = referenceAttention(
      hsdToShd(this.q, this.heads, n, d),
      hsdToShd(this.k, this.kvHeads, n, d),
      hsdToShd(this.v, this.kvHeads, n, d),
      this.shape,
      allowed,
      s.scale,
      this.rows,
    );
  }

  /**
   * Judges a run: `out` holds at least the checked heads of batch 0 in [heads, seq, dim] order,
   * `lse` at least their [heads, seq] log-sum-exps.
   */
  judge(out: Float32Array, lse: Float32Array): GateVerdict {
    const { seqLen: n, headDim: d } = this.shape;
    const got = hsdToShd(out.subarray(0, this.heads * n * d), this.heads, n, d);
    const r = compareRows(got, lse.subarray(0, this.heads * n), this.ref, this.shape, this.rows);
    const reason =
      r.unwritten > 0
        ? `${r.unwritten} outputs never written`
        : r.nonFinite > 0
          ? `${r.nonFinite} non-finite outputs`
          : !r.maskedRowsOk
            ? "fully masked rows are not 0 with lse -inf"
            : !(r.relError < this.tol)
              ? `relative error ${r.relError.toExponential(2)} above ${this.tol}`
              : undefined;
    return { ...r, ok: reason === undefined, reason };
  }
}

/** [heads, seq, dim] → [seq, heads, dim] (the reference's [batch = 1, seq, heads, dim]). */
function hsdToShd(x: Float32Array, heads: number, n: number, d: number): Float32Array {
  const y = new Float32Array(x.length);
  for (let h = 0; h < heads; h++)
    for (let s = 0; s < n; s++) y.set(x.subarray((h * n + s) * d, (h * n + s + 1) * d), (s * heads + h) * d);
  return y;
}
