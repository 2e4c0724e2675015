// The search on the GPU: the compiled kernels must reach the same choices as the float64 CPU reference
// with errors that agree, for host arrays (also a batch larger than the layout's) and device buffers.
// Skipped (with the reason in the suite name) where CUDA is unavailable.
import { describe, expect, it } from "vitest";
import { compileSpec } from "../../compiler/pipeline.ts";
import { available, CudaDevice } from "../../runtime/cuda/index.ts";
import { halfBitsToF32Js, f32ToHalfBitsJs } from "../../runtime/half.ts";
import { searchLayers, type LayerQkv } from "../../search/search.ts";
import { frameLocalQkv } from "../../search/synthetic.ts";
import { CudaSquaredError } from "../../search/cudaError.ts";

const cuda = available();
const suite = cuda.ok ? "tilec search on a CUDA GPU" : `tilec search on a CUDA GPU (skipped: ${cuda.reason})`;

// Frames of 64 tokens on 64-token blocks; head_dim 64 is supported by every CUDA template.
const SPEC = `layout small { video 4 x 8 x 8  heads 2  head_dim 64  dtype bf16 }
kernel tile_1_3 { layout small  mask attention_tile(1)  block 64 x 64 }
kernel tile_2_2 { layout small  mask attention_tile(2)  block 64 x 64 }
`;
const spec = compileSpec(SPEC, "small.tile").spec!;
const layout = spec.layouts.get("small")!;
const LOCALITY = [0, 2, 0.6, 1];

/** Inputs rounded to bf16 first, so the CPU reference sees exactly what the kernels see. */
function bf16Layer(i: number, batch = 1): LayerQkv {
  const x = frameLocalQkv(layout, LOCALITY[i]!, 40 + i, batch);
  const round = (a: LayerQkv["q"]) => halfBitsToF32Js(f32ToHalfBitsJs(a as Float32Array, "bf16"), "bf16");
  return { ...x, q: round(x.q), k: round(x.k), v: round(x.v) };
}

describe.skipIf(!cuda.ok)(suite, () => {
  it("GPU and CPU searches agree (no dense kernel in the spec: one is synthesized)", async () => {
    const options = { layers: 4, threshold: 0.05 } as const;
    const gpu = await searchLayers(spec, (i) => bf16Layer(i, 2), { ...options, device: "cuda" });
    const cpu = await searchLayers(spec, (i) => bf16Layer(i, 2), { ...options, device: "cpu" });
    expect(gpu.layers.map((l) => l.kernel)).toEqual(cpu.layers.map((l) => l.kernel));
    expect(gpu.rows).toBe(256);
    for (let l = 0; l < 4; l++)
      gpu.layers[l]!.errors.forEach((e, c) => {
        const want = cpu.layers[l]!.errors[c]!;
        // bf16 outputs: a few 1e-3 of rounding on top of the mask's own error.
        expect(Math.abs(e.relL2 - want.relL2), `layer ${l} ${e.kernel}`).toBeLessThan(
          1e-2 + 0.02 * want.relL2,
        );
      });
    // No candidate is dense: diffuse layers end over the threshold, flagged.
    expect(gpu.layers[0]!.overThreshold).toBe(true);
    expect(gpu.layers[1]!).toMatchObject({ kernel: "tile_1_3", overThreshold: false });
  });

  it("takes device buffers as calibration", async () => {
    const dev = CudaDevice.open();
    const host = bf16Layer(1);
    const bufs = [host.q, host.k, host.v].map((x) => dev.fromHost(x as Float32Array, "bf16"));
    try {
      const r = await searchLayers(
        spec,
        () => ({ q: bufs[0]!, k: bufs[1]!, v: bufs[2]!, shape: host.shape }),
        { layers: 1, threshold: 0.05, device: "cuda" },
      );
      expect(r.layers[0]!.kernel).toBe("tile_1_3");
      expect(r.layers[0]!.relL2).toBeLessThan(0.02);
    } finally {
      for (const b of bufs) b.free();
    }
  });

  it("the error reduction sums exactly on small inputs and propagates NaN", async () => {
    const dev = CudaDevice.open();
    const err = await CudaSquaredError.create();
    const a = dev.fromHost(Float32Array.from([1, 2, 3, 4]), "fp32");
    const b = dev.fromHost(Float32Array.from([1, 0, 3, 8]), "fp32");
    const c = dev.fromHost(Float32Array.from([1, NaN, 3, 8]), "bf16");
    const d = dev.fromHost(Float32Array.from([1, 0, 3, 8]), "bf16");
    try {
      expect(err.measure(a, b)).toEqual({ sumSq: 4 + 16, refSq: 1 + 9 + 64, count: 4 });
      expect(err.measure(c, d).sumSq).toBeNaN();
    } finally {
      for (const x of [a, b, c, d]) x.free();
      err.free();
    }
  });
});
