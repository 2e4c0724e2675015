// The WGSL tiled matrix product: every shape class through Dawn's compiler and pipeline validation
// (null backend, f32 and f16, no GPU needed), limits rejected with the limit's name, and products
// EXECUTED on SwiftShader (or the GPU with TILEC_WEBGPU_GPU=1) against a float64 product — odd sizes,
// bias, activations, both B orientations, alpha/beta, batched strides — with C poisoned first.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  emitMatmul,
  MatmulConfigError,
  type MatmulActivation,
  type MatmulCall,
  type MatmulShapeClass,
  type MatmulTiling,
} from "../../backends/wgsl/matmul.ts";
import { DEFAULT_LIMITS } from "../../backends/wgsl/target.ts";
import { geluTanh, silu } from "../../runtime/dit/math.ts";
import { randomArray, relativeError } from "../../runtime/reference.ts";
import type { WebGpuDevice } from "../../runtime/webgpu/device.ts";
import { roundToF16 } from "../../runtime/webgpu/half.ts";
import { WgslMatmul } from "../../runtime/webgpu/matmul.ts";
import { openNodeDevice, openSwiftShader } from "../../runtime/webgpu/node.ts";

const ACT: Record<MatmulActivation, (x: number) => number> = { none: (x) => x, silu, gelu_tanh: geluTanh };

/** The float64 product of a call over whole buffers: C0's elements the call does not address stay. */
function reference(
  call: MatmulCall,
  shape: MatmulShapeClass,
  a: Float64Array,
  b: Float64Array,
  bias: Float64Array | undefined,
  c0: Float64Array,
): Float64Array {
  const c = c0.slice();
  const [outer, inner] = call.batch ?? [1, 1];
  const at = (o: MatmulCall["a"], z0: number, z1: number) =>
    (o.offset ?? 0) + z0 * (o.stride?.[0] ?? 0) + z1 * (o.stride?.[1] ?? 0);
  for (let z0 = 0; z0 < outer; z0++)
    for (let z1 = 0; z1 < inner; z1++) {
      const ab = at(call.a, z0, z1);
      const bb = at(call.b, z0, z1);
      const cb = at(call.c, z0, z1);
      for (let i = 0; i < call.m; i++)
        for (let j = 0; j < call.n; j++) {
          let s = 0;
          for (let p = 0; p < call.k; p++)
            s +=
              a[ab + i * call.a.ld + p]! * b[shape.transB ? bb + j * call.b.ld + p : bb + p * call.b.ld + j]!;
          let v = (call.alpha ?? 1) * s + (bias ? bias[(call.biasOffset ?? 0) + j]! : 0);
          v = ACT[call.activation ?? "none"](v);
          const ci = cb + i * call.c.ld + j;
          c[ci] = v + (call.beta ? call.beta * c[ci]! : 0);
        }
    }
  return c;
}

describe("WGSL matmul through Dawn's validation (null backend)", () => {
  let dev: WebGpuDevice;
  beforeAll(async () => {
    dev = await openNodeDevice({ backend: "null" });
  });
  afterAll(() => dev?.destroy());

  it("compiles every shape class in f32 and f16 without warnings", async () => {
    expect(dev.caps.f16).toBe(true);
    for (const storage of ["f32", "f16"] as const)
      for (const transB of [true, false]) {
        const mm = await WgslMatmul.create(dev, { storage, transB });
        expect(mm.source.source).not.toMatch(/\b[ij]\b\]/); // register tiles indexed by constants only
        expect(mm.source.source).toContain(`alias st = ${storage};`);
        expect(mm.kernel.warnings).toEqual([]);
      }
    // The 128×128 tiling needs more workgroup memory than the null adapter offers: compile the module only.
    const roomy = { ...dev.caps, limits: { ...dev.caps.limits, maxComputeWorkgroupStorageSize: 32768 } };
    for (const transB of [true, false]) {
      const big = emitMatmul({ storage: "f32", transB }, roomy);
      expect(big.tileM).toBe(128);
      const info = await dev.device.createShaderModule({ code: big.source }).getCompilationInfo();
      expect(info.messages.map((m) => `${m.lineNum}:${m.linePos} ${m.message}`)).toEqual([]);
    }
  });

  it("picks a smaller tiling under tight limits and rejects what cannot fit, naming the limit", () => {
    const caps = { f16: false, subgroups: false, limits: DEFAULT_LIMITS };
    const shape: MatmulShapeClass = { storage: "f32", transB: true };
    expect(emitMatmul(shape, caps).tileM).toBe(64);
    const roomy = { ...caps, limits: { ...DEFAULT_LIMITS, maxComputeWorkgroupStorageSize: 32768 } };
    expect(emitMatmul(shape, roomy).tiling).toMatchObject({ rm: 8, rn: 8, bk: 16 });
    const small = { ...caps, limits: { ...DEFAULT_LIMITS, maxComputeInvocationsPerWorkgroup: 64 } };
    expect(emitMatmul(shape, small).tiling).toMatchObject({ tx: 8, ty: 8 });
    const tiny = { ...caps, limits: { ...DEFAULT_LIMITS, maxComputeWorkgroupStorageSize: 256 } };
    expect(() => emitMatmul(shape, tiny)).toThrow(/maxComputeWorkgroupStorageSize \(256\)/);
    expect(() => emitMatmul({ ...shape, storage: "f16" }, caps)).toThrow(MatmulConfigError);
    expect(() => emitMatmul({ ...shape, storage: "f16" }, caps)).toThrow(/shader-f16/);
  });

  it("rejects calls that overrun a tensor or the dispatch limit", async () => {
    const mm = await WgslMatmul.create(dev, { storage: "f32", transB: true });
    const a = dev.upload(new Float32Array(12), "f32");
    const c = dev.empty(12, "f32");
    const op = (tensor: typeof a, ld: number) => ({ tensor, ld });
    expect(() => mm.prepare({ m: 4, n: 4, k: 4, a: op(a, 4), b: op(a, 4), c: op(c, 4) })).toThrow(
      /A \[4, 4\].*reaches element 16, the tensor holds 12/,
    );
    expect(() =>
      mm.prepare({
        m: 1,
        n: 1,
        k: 1,
        batch: [70000, 1],
        a: op(a, 1),
        b: op(a, 1),
        c: op(c, 1),
      }),
    ).toThrow(/70000 workgroups along z, more than maxComputeWorkgroupsPerDimension \(65535\)/);
    expect(() => mm.prepare({ m: 1, n: 1, k: 1, a: op(c, 1), b: op(a, 1), c: op(c, 1) })).toThrow(
      /share a buffer/,
    );
    a.buffer.destroy();
    c.buffer.destroy();
  });
});

const onGpu = process.env.TILEC_WEBGPU_GPU === "1";
const ss = onGpu
  ? { device: await openNodeDevice({ backend: "vulkan", powerPreference: "high-performance" }), reason: "" }
  : await openSwiftShader();
const gpu = ss.device;
const where = onGpu ? `the GPU (${gpu?.adapter.device})` : "SwiftShader";
/**
 * SwiftShader's 32 KB of workgroup memory admit the default 128×128 tiling (8×8 per invocation), which
 * its JIT takes ~11 s to compile; the CPU runs use the 64×64 one (the GPU runs and the benchmark's
 * gate execute the default). Dawn's null backend compiles the 8×8 one above.
 */
const CPU_TILING: MatmulTiling | undefined = onGpu ? undefined : { tx: 16, ty: 16, rm: 4, rn: 4, bk: 16 };
afterAll(() => gpu?.destroy());

describe.skipIf(!gpu)(`WGSL matmul on ${where}${gpu ? "" : ` (skipped: ${ss.reason})`}`, () => {
  async function expectProduct(
    shape: MatmulShapeClass,
    call: MatmulCall,
    sizes: { a: number; b: number; c: number; bias?: number },
    seed: number,
    tiling: MatmulTiling | undefined = CPU_TILING,
  ): Promise<void> {
    const dev = gpu!;
    const mm = await WgslMatmul.create(dev, shape, tiling);
    // f16 storage: the reference sees the f16-rounded operands the GPU sees.
    const stored = (x: Float64Array) => (shape.storage === "f16" ? Float64Array.from(roundToF16(x)) : x);
    const a = stored(randomArray(sizes.a, seed));
    const b = stored(randomArray(sizes.b, seed + 1));
    const bias = sizes.bias ? stored(randomArray(sizes.bias, seed + 2)) : undefined;
    // Poisoned (NaN) unless the call reads C: unwritten outputs then show as NaN.
    const c0 = call.beta ? stored(randomArray(sizes.c, seed + 3)) : new Float64Array(sizes.c).fill(NaN);
    const ta = dev.upload(a, shape.storage);
    const tb = dev.upload(b, shape.storage);
    const tbias = bias ? dev.upload(bias, shape.storage) : undefined;
    const tc = dev.upload(c0, shape.storage);
    try {
      await mm.run({
        ...call,
        a: { ...call.a, tensor: ta },
        b: { ...call.b, tensor: tb },
        c: { ...call.c, tensor: tc },
        bias: tbias,
      });
      const got = await dev.download(tc);
      const want = reference(call, shape, a, b, bias, c0);
      const addressed = [...want.keys()].filter((i) => !Number.isNaN(want[i]!));
      const label = `${JSON.stringify(shape)} ${JSON.stringify(call)}`;
      // Elements the call does not address keep their poison; the addressed ones match float64.
      expect(
        [...want.keys()].filter((i) => Number.isNaN(want[i]!) && !Number.isNaN(got[i]!)),
        label,
      ).toEqual([]);
      expect(
        relativeError(
          addressed.map((i) => got[i]!),
          addressed.map((i) => want[i]!),
        ),
        label,
      ).toBeLessThan(shape.storage === "f16" ? 1e-3 : 1e-5); // f16: the output's own rounding (2⁻¹¹)
    } finally {
      for (const t of [ta, tb, tbias, tc]) t?.buffer.destroy();
    }
  }

  const linear = (m: number, n: number, k: number): MatmulCall => ({
    m,
    n,
    k,
    a: { ld: k },
    b: { ld: k },
    c: { ld: n },
  });

  it.each([
    [64, 64, 16],
    [37, 29, 45],
    [130, 70, 100],
    [1, 96, 33],
    [200, 3, 7],
  ])("C[%i, %i] = A·Bᵀ over K = %i with bias equals the float64 product", async (m, n, k) => {
    const shape: MatmulShapeClass = { storage: "f32", transB: true };
    await expectProduct(shape, linear(m, n, k), { a: m * k, b: n * k, c: m * n, bias: n }, m + n + k);
  });

  it("runs the smaller tilings (devices with less workgroup memory get them) on odd sizes", async () => {
    const shape: MatmulShapeClass = { storage: "f32", transB: true };
    for (const tiling of [
      { tx: 16, ty: 16, rm: 4, rn: 4, bk: 16 },
      { tx: 8, ty: 8, rm: 2, rn: 2, bk: 8 },
    ])
      await expectProduct(
        shape,
        linear(75, 131, 37),
        { a: 75 * 37, b: 131 * 37, c: 75 * 131, bias: 131 },
        17,
        tiling,
      );
  });

  it("applies SiLU and GELU-tanh in the epilogue, alpha, and beta·C (a residual add)", async () => {
    const shape: MatmulShapeClass = { storage: "f32", transB: true };
    for (const activation of ["silu", "gelu_tanh"] as const) {
      // Large alpha drives GELU-tanh's argument far into saturation: no inf/inf = NaN.
      await expectProduct(
        shape,
        { ...linear(67, 41, 90), alpha: 9, activation },
        { a: 67 * 90, b: 41 * 90, c: 67 * 41, bias: 41 },
        5,
      );
    }
    await expectProduct(
      shape,
      { ...linear(50, 70, 19), beta: 1 },
      { a: 50 * 19, b: 70 * 19, c: 50 * 70, bias: 70 },
      9,
    );
  });

  it("runs per-(sample, head) products over [batch, tokens, heads, dim] tensors in one dispatch (both B orientations)", async () => {
    // Cross-attention's shapes: scores[b, h] = Q[b, :, h, :] · K[b, :, h, :]ᵀ, then P[b, h] · V[b, :, h, :].
    const [B, N, L, H, D] = [2, 45, 9, 3, 12];
    const C = H * D;
    const scores: MatmulCall = {
      m: N,
      n: L,
      k: D,
      batch: [B, H],
      alpha: 1 / Math.sqrt(D),
      a: { ld: C, stride: [N * C, D] },
      b: { ld: C, stride: [L * C, D] },
      c: { ld: L, stride: [H * N * L, N * L] },
    };
    await expectProduct(
      { storage: "f32", transB: true },
      scores,
      { a: B * N * C, b: B * L * C, c: B * H * N * L },
      21,
    );
    const pv: MatmulCall = {
      m: N,
      n: D,
      k: L,
      batch: [B, H],
      a: { ld: L, stride: [H * N * L, N * L] },
      b: { ld: C, stride: [L * C, D], offset: 5 },
      c: { ld: C, stride: [N * C, D], offset: 3 },
    };
    await expectProduct(
      { storage: "f32", transB: false },
      pv,
      { a: B * H * N * L, b: B * L * C + 5, c: B * N * C + 3 },
      31,
    );
  });

  it.skipIf(!gpu?.caps.f16)(
    `f16 storage, f32 accumulation${gpu?.caps.f16 ? "" : ` (skipped: ${where} offers no shader-f16)`}`,
    async () => {
      const shape: MatmulShapeClass = { storage: "f16", transB: true };
      await expectProduct(
        shape,
        { ...linear(70, 45, 130), activation: "gelu_tanh" },
        { a: 70 * 130, b: 45 * 130, c: 70 * 45, bias: 45 },
        41,
      );
      await expectProduct(
        { storage: "f16", transB: false },
        { ...linear(33, 20, 17), b: { ld: 20 }, beta: 1 },
        { a: 33 * 17, b: 17 * 20, c: 33 * 20 },
        43,
      );
    },
  );
});
