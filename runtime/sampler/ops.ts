// The vector arithmetic a sampler needs, for host arrays (tests, toy problems) and for fp32 device
// buffers (the DiT's latents). Samplers are written once against `VectorOps<T>`.
import type { DeviceBuffer } from "../cuda/device.ts";
import { DeviceBuffer as Buffer } from "../cuda/device.ts";
import type { DitKernels } from "../dit/kernels.ts";

export type Term<T> = readonly [coefficient: number, vector: T];

export interface VectorOps<T> {
  /** out ← Σ cᵢ·vᵢ; `out` may be one of the vᵢ. */
  combine(out: T, terms: readonly Term<T>[]): void;
  /** Fills `out` with standard normal samples drawn from `seed` (reproducible). */
  normal(out: T, seed: number): void;
  /** A new vector shaped like `like` (contents unspecified). */
  alloc(like: T): T;
  free(x: T): void;
}

/** Float64Array vectors; normals from a seeded xorshift + Box–Muller. */
export const hostOps: VectorOps<Float64Array> = {
  combine(out, terms) {
    const n = out.length;
    // Read every term before writing: `out` may alias one of them.
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (const [c, v] of terms) s += c * v[i]!;
      out[i] = s;
    }
  },
  normal(out, seed) {
    let s = (seed ^ 0x9e3779b9) >>> 0 || 1;
    const uniform = () => {
      s ^= s << 13;
      s >>>= 0;
      s ^= s >>> 17;
      s ^= s << 5;
      s >>>= 0;
      return (s + 0.5) / 4294967296;
    };
    for (let i = 0; i < out.length; i++)
      out[i] = Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
  },
  alloc: (like) => new Float64Array(like.length),
  free: () => {},
};

/** fp32 device buffers through the DiT's elementwise kernels (dit_lincomb, dit_random_normal). */
export function deviceOps(kernels: DitKernels): VectorOps<DeviceBuffer> {
  return {
    combine(out, terms) {
      if (!terms.length) throw new RangeError("combine needs at least one term");
      // dit_lincomb takes three terms; longer sums fold into `out` three at a time.
      if (terms.slice(3).some(([, v]) => v === out))
        throw new RangeError("combine: only the first three terms may alias the output");
      const [first, ...rest] = terms;
      let head: Term<DeviceBuffer>[] = [first!, ...rest.slice(0, 2)];
      let remaining = rest.slice(2);
      for (;;) {
        const [a, b, c] = head;
        kernels.lincomb(out, a![0], a![1], b?.[0] ?? 0, b?.[1] ?? null, c?.[0] ?? 0, c?.[1] ?? null);
        if (!remaining.length) return;
        head = [[1, out], ...remaining.slice(0, 2)];
        remaining = remaining.slice(2);
      }
    },
    normal: (out, seed) => kernels.randomNormal(out, seed),
    alloc: (like) => Buffer.alloc(like.bytes, "fp32"),
    free: (x) => x.free(),
  };
}
