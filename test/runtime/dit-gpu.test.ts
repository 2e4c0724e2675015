// The CUDA DiT against the float64 CPU forward, cuBLAS products against a float64 product, and the
// samplers' device arithmetic against the host one. Skips (with the reason) without a GPU or cuBLAS.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { available, CudaDevice, DeviceBuffer } from "../../runtime/cuda/index.ts";
import { cublasAvailable, gemm } from "../../runtime/cuda/cublas.ts";
import { CudaDit, DIT_PARTS } from "../../runtime/dit/cuda.ts";
import { forwardCpu } from "../../runtime/dit/cpu.ts";
import { memoryWeights, randomWeights } from "../../runtime/dit/weights.ts";
import { randomArray, relativeError } from "../../runtime/reference.ts";
import { consistencySample, ditVelocityModel, hostOps } from "../../runtime/sampler/index.ts";
import { TINY, TINY_LATENT, TINY_TEXT, tinyInputs, tinyMasks, tinySpec } from "./dit-fixture.ts";

const cuda = available();
const blas = cuda.ok ? cublasAvailable() : { ok: false, reason: cuda.reason };
const skip = !cuda.ok || !blas.ok;
const BF16_TOL = 1e-2;

describe.skipIf(skip)(`DiT on CUDA${skip ? ` (skipped: ${blas.reason})` : ""}`, () => {
  it("cuBLAS row-major products (bf16 in, fp32 out; transposed and plain B; strided batches)", () => {
    const dev = CudaDevice.open();
    const [m, n, k, batch] = [37, 29, 45, 3];
    const a = randomArray(batch * m * k, 1);
    const b = randomArray(batch * n * k, 2);
    const bufs = [
      dev.fromHost(Float32Array.from(a), "bf16"),
      dev.fromHost(Float32Array.from(b), "bf16"),
      dev.allocElements("fp32", batch * m * n).poison(),
    ] as const;
    try {
      // The float64 product of the bf16-rounded operands.
      const ar = bufs[0].download();
      const br = bufs[1].download();
      for (const transB of [true, false]) {
        gemm({
          m,
          n,
          k,
          batch,
          transB,
          a: { buf: bufs[0], stride: m * k },
          b: { buf: bufs[1], stride: n * k },
          c: { buf: bufs[2], stride: m * n },
        });
        const got = bufs[2].download();
        const want = new Float64Array(batch * m * n);
        for (let z = 0; z < batch; z++)
          for (let i = 0; i < m; i++)
            for (let j = 0; j < n; j++) {
              let s = 0;
              for (let x = 0; x < k; x++)
                s += ar[z * m * k + i * k + x]! * br[z * n * k + (transB ? j * k + x : x * n + j)]!;
              want[z * m * n + i * n + j] = s;
            }
        expect(relativeError(got, want), `transB=${transB}`).toBeLessThan(1e-5);
      }
      expect(() =>
        gemm({ m: m + 1, n, k, a: { buf: bufs[0] }, b: { buf: bufs[1] }, c: { buf: bufs[2] } }),
      ).not.toThrow();
      expect(() =>
        gemm({
          m: 100,
          n,
          k,
          batch,
          a: { buf: bufs[0], stride: m * k },
          b: { buf: bufs[1] },
          c: { buf: bufs[2] },
        }),
      ).toThrow(/overruns/);
    } finally {
      for (const x of bufs) x.free();
    }
  });

  describe("tiny DiT", () => {
    let dit: CudaDit;
    const spec = tinySpec();
    const { tensors, shapes } = randomWeights(TINY, 3);
    beforeAll(async () => {
      dit = await CudaDit.create(TINY, {
        spec,
        model: "tiny_model",
        latent: TINY_LATENT,
        textTokens: TINY_TEXT,
      });
      dit.loadWeights(memoryWeights(tensors, shapes));
    });
    afterAll(() => dit?.free());

    it.each([
      ["sparse layer 1 (step 5 of 10)", 5, 10],
      ["model step 0: full attention everywhere", 0, 10],
      ["outside a sampler", undefined, undefined],
    ] as const)("equals the float64 forward: %s", (_label, step, steps) => {
      const inp = tinyInputs(21);
      dit.encodeText(Float32Array.from(inp.text), inp.textValid);
      const got = dit.forwardHost(Float32Array.from(inp.latent), inp.timesteps, { step, steps });
      const want = forwardCpu(TINY, memoryWeights(tensors, shapes), inp, tinyMasks(spec, step));
      expect(got.every(Number.isFinite)).toBe(true);
      expect(relativeError(got, want)).toBeLessThan(BF16_TOL);
    });

    it("times the forward part by part without changing its output", () => {
      const inp = tinyInputs(22);
      dit.encodeText(Float32Array.from(inp.text), inp.textValid);
      const latent = DeviceBuffer.alloc(inp.latent.length * 4, "fp32").upload(Float32Array.from(inp.latent));
      const plain = DeviceBuffer.alloc(dit.latentLength(TINY.outChannels) * 4, "fp32");
      const timed = DeviceBuffer.alloc(dit.latentLength(TINY.outChannels) * 4, "fp32");
      try {
        expect(dit.forward(latent, inp.timesteps, plain)).toEqual({});
        const r = dit.forward(latent, inp.timesteps, timed, { timeParts: true, timeAttention: true });
        expect(Object.keys(r.partsMs!)).toEqual([...DIT_PARTS]);
        expect(Object.values(r.partsMs!).every((ms) => ms > 0)).toBe(true);
        // timeAttention reports the same part.
        expect(r.attentionMs).toBe(r.partsMs!["self-attention"]);
        expect(Object.keys(dit.forward(latent, inp.timesteps, timed, { timeAttention: true }))).toEqual([
          "attentionMs",
        ]);
        expect([...timed.download()]).toEqual([...plain.download()]);
      } finally {
        for (const b of [latent, plain, timed]) b.free();
      }
    });

    it("picks each layer's kernel from the model section, mapping sampler steps proportionally", () => {
      expect([0, 1].map((l) => dit.kernelName(l, 5, 10))).toEqual(["full", "tile1"]);
      expect([0, 1].map((l) => dit.kernelName(l, 2, 10))).toEqual(["full", "full"]);
      // Step 1 of 4 sampler steps is model step 2 of 10 (still in the full-attention range); step 2 is 5.
      expect(dit.kernelName(1, 1, 4)).toBe("full");
      expect(dit.kernelName(1, 2, 4)).toBe("tile1");
    });

    it("routes every self-attention call through the replaceable attention function", () => {
      const seen: string[] = [];
      const original = dit.attention;
      dit.attention = (call) => {
        seen.push(`${call.layer}:${call.kernelName}`);
        original(call);
      };
      try {
        const inp = tinyInputs(5);
        dit.encodeText(Float32Array.from(inp.text));
        dit.forwardHost(Float32Array.from(inp.latent), inp.timesteps, { step: 7, steps: 10 });
      } finally {
        dit.attention = original;
      }
      expect(seen).toEqual(["0:full", "1:tile1"]);
    });

    it("samples with the consistency sampler on device vectors like on host vectors", () => {
      const inp = tinyInputs(8);
      dit.encodeText(Float32Array.from(inp.text), inp.textValid);
      const m = ditVelocityModel(dit, { timeAttention: true });
      const x = DeviceBuffer.alloc(inp.latent.length * 4, "fp32").upload(Float32Array.from(inp.latent));
      try {
        const steps: number[] = [];
        // The same updates on the host, with the device model's velocities.
        const host = Float64Array.from(x.download());
        let lastV = new Float64Array(0);
        const r = consistencySample(
          (xd, t, info) => {
            steps.push(info.step);
            const v = m.model(xd, t, info);
            lastV = Float64Array.from(v.download());
            return v;
          },
          m.ops,
          x,
          {
            teacherSteps: 10,
            segments: 5,
            onStep: (_k, t, s) =>
              hostOps.combine(host, [
                [1, host],
                [s - t, lastV],
              ]),
          },
        );
        expect(r.evaluations).toBe(5);
        expect(steps).toEqual([0, 2, 4, 6, 8]);
        expect(m.attentionMs).toHaveLength(5);
        expect(m.attentionMs.every((ms) => ms > 0)).toBe(true);
        expect(relativeError(x.download(), host)).toBeLessThan(1e-6);
      } finally {
        x.free();
        m.free();
      }
    });
  });
});
