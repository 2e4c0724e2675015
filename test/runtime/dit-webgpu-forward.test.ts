// The WebGPU DiT forward (WGSL matmul, tilec's WGSL attention per the model section, WGSL elementwise
// kernels) against the float64 CPU forward on the tiny config, on SwiftShader (a CPU Vulkan driver) or,
// with TILEC_WEBGPU_GPU=1, on the machine's GPU. Skips with the reason where neither exists.
//
// Tolerance: relative L2 error < 1e-4 (the guide's fp32 bound). Everything on the device is f32 —
// storage, accumulation, softmax, LayerNorm — so the error is f32 rounding through two blocks
// (measured ~1e-6); bf16 anywhere would show as ~1e-3 and fail.
import { afterAll, describe, expect, it } from "vitest";
import { compileSpec } from "../../compiler/pipeline.ts";
import { forwardCpu } from "../../runtime/dit/cpu.ts";
import { DIT_WGSL_KERNELS } from "../../runtime/dit/kernels/dit.wgsl.ts";
import { WebGpuDit } from "../../runtime/dit/webgpu.ts";
import { computeKernel } from "../../runtime/webgpu/dispatch.ts";
import { memoryWeights, randomWeights, WeightError } from "../../runtime/dit/weights.ts";
import { relativeError } from "../../runtime/reference.ts";
import { openNodeDevice, openSwiftShader } from "../../runtime/webgpu/node.ts";
import { TINY, TINY_LATENT, TINY_SPEC, TINY_TEXT, tinyInputs, tinyMasks } from "./dit-fixture.ts";

const onGpu = process.env.TILEC_WEBGPU_GPU === "1";
const ss = onGpu
  ? { device: await openNodeDevice({ backend: "vulkan", powerPreference: "high-performance" }), reason: "" }
  : await openSwiftShader();
const dev = ss.device;
const where = onGpu ? `the GPU (${dev?.adapter.device})` : "SwiftShader";
// SwiftShader's JIT takes ~11 s for the 128×128 matmul tiling its limits admit; the CPU runs use the
// 64×64 one (test/backends/wgsl-matmul.test.ts says more), the GPU runs the default.
const matmulTiling = onGpu ? undefined : { tx: 16, ty: 16, rm: 4, rn: 4, bk: 16 };
afterAll(() => dev?.destroy());

describe.skipIf(!dev)(`the DiT forward on WebGPU (${where})${dev ? "" : ` (skipped: ${ss.reason})`}`, () => {
  // The fixture's spec (same layout, masks and model section) with 16 × 16 blocks for WGSL: SwiftShader
  // JIT-compiles a 64 × 32-block attention kernel in ~5 s, a 16 × 16 one in a fraction of that.
  const spec = compileSpec(
    TINY_SPEC.replaceAll("block 64 x 32 targets cuda, cpu", "block 16 x 16 targets wgsl, cpu"),
    "tiny-wgsl.tile",
  ).spec!;
  const { tensors, shapes } = randomWeights(TINY, 3);
  const weights = memoryWeights(tensors, shapes);

  it("equals the float64 forward (rel < 1e-4) with the model section's masks, per step, padded text", async () => {
    const dit = await WebGpuDit.create(TINY, {
      device: dev!,
      spec,
      model: "tiny_model",
      latent: TINY_LATENT,
      textTokens: TINY_TEXT,
      matmulTiling,
    });
    try {
      expect(spec.kernels.get("tile1")!.blockQ).toBe(16);
      expect([
        dit.kernelName(0),
        dit.kernelName(1),
        dit.kernelName(1, 0, 20),
        dit.kernelName(1, 19, 20),
      ]).toEqual(["full", "tile1", "full", "tile1"]);
      dit.loadWeights(weights);
      const inp = tinyInputs(1); // second sample: 5 of 9 text tokens valid
      await dit.encodeText(Float32Array.from(inp.text), inp.textValid);
      // Outside a sampler: layer 1 runs Attention Tile 1:2.
      const sparse = await dit.forwardHost(inp.latent, inp.timesteps);
      const wantSparse = forwardCpu(TINY, weights, inp, tinyMasks(spec));
      expect(relativeError(sparse, wantSparse)).toBeLessThan(1e-4);
      // New text and timesteps through the same prepared dispatches; at step 0 of 20 every layer runs full.
      const other = { ...tinyInputs(2, [TINY_TEXT, TINY_TEXT]), timesteps: [5, 999] };
      await dit.encodeText(Float32Array.from(other.text), other.textValid);
      const dense = await dit.forwardHost(other.latent, other.timesteps, { step: 0, steps: 20 });
      const wantDense = forwardCpu(TINY, weights, other, tinyMasks(spec, 0));
      expect(relativeError(dense, wantDense)).toBeLessThan(1e-4);
      // The sparse layer really differs from full attention by far more than the tolerance.
      expect(relativeError(forwardCpu(TINY, weights, other, tinyMasks(spec)), wantDense)).toBeGreaterThan(
        1e-3,
      );
    } finally {
      dit.destroy();
    }
  });

  it("rejects weights that do not match the config, and a forward before encodeText", async () => {
    const dit = await WebGpuDit.create(TINY, {
      device: dev!,
      spec,
      kernel: "full",
      latent: TINY_LATENT,
      textTokens: TINY_TEXT,
      matmulTiling,
    });
    try {
      const partial = new Map(tensors);
      partial.delete("transformer_blocks.1.ff.net.2.bias");
      expect(() => dit.loadWeights(memoryWeights(partial, shapes))).toThrow(WeightError);
      expect(() => dit.loadWeights(memoryWeights(partial, shapes))).toThrow(
        /missing \(1\): transformer_blocks\.1\.ff\.net\.2\.bias/,
      );
      const inp = tinyInputs(1);
      await expect(dit.forwardHost(inp.latent, inp.timesteps)).rejects.toThrow(/encodeText/);
    } finally {
      dit.destroy();
    }
  });

  it("rejects a spec whose layout does not fit the DiT", async () => {
    const bad = spec.kernels.get("full")!;
    await expect(
      WebGpuDit.create(TINY, {
        device: dev!,
        spec,
        kernel: "full",
        latent: { ...TINY_LATENT, frames: 4 },
        textTokens: TINY_TEXT,
      }),
    ).rejects.toThrow(
      new RegExp(
        `kernel 'full' \\(layout '${bad.layout.name}'\\) does not fit the DiT: video 3×5×7, but the latent patchifies to 4×5×7`,
      ),
    );
  });
});

describe("the DiT's WGSL kernels through Dawn's validation (null backend)", () => {
  it("compile and build pipelines without warnings", async () => {
    const nul = await openNodeDevice({ backend: "null" });
    try {
      for (const k of DIT_WGSL_KERNELS) {
        const compiled = await computeKernel(nul, k.source, k.entry, k.bindings, `${k.entry}.wgsl`);
        expect(compiled.warnings, k.entry).toEqual([]);
      }
    } finally {
      nul.destroy();
    }
  });
});
