// Generated WGSL kernels EXECUTED on SwiftShader (a CPU Vulkan driver, from Debian's chromium-common)
// through Dawn, against the float64 reference, with out and lse poisoned (NaN) before every call.
// Skips with the reason where SwiftShader or the Vulkan loader is missing. With TILEC_WEBGPU_GPU=1 the
// same tests run on the machine's GPU through Vulkan instead (the H100 check of issue 4).
import { afterAll, describe, expect, it } from "vitest";
import { WGSL, renderMaskFunction } from "../../backends/cexpr.ts";
import { emitWgsl, type TensorLayout } from "../../backends/wgsl/emit.ts";
import type { WgslStorage, WgslTiling } from "../../backends/wgsl/target.ts";
import { elementMask } from "../../compiler/elementMask.ts";
import { seqLen } from "../../compiler/layout.ts";
import { lowerKernel } from "../../compiler/lower.ts";
import { compileSpec, planKernel } from "../../compiler/pipeline.ts";
import { compileWgsl, kernelIR, WgslAttention } from "../../runtime/webgpu/attention.ts";
import { checkWgsl } from "../../runtime/webgpu/check.ts";
import { WebGpuDeviceLost } from "../../runtime/webgpu/device.ts";
import { openNodeDevice, openSwiftShader } from "../../runtime/webgpu/node.ts";
import { Rng, randomMask } from "../support/random.ts";

const onGpu = process.env.TILEC_WEBGPU_GPU === "1";
const ss = onGpu
  ? { device: await openNodeDevice({ backend: "vulkan", powerPreference: "high-performance" }), reason: "" }
  : await openSwiftShader();
const dev = ss.device;
const where = onGpu ? `the GPU (${dev?.adapter.device})` : "SwiftShader";
afterAll(() => dev?.destroy());

const layoutOf = (d: number, extra = "") =>
  `layout L { video 2 x 5 x 7 text 9 after heads 2 kv_heads 1 head_dim ${d} dtype fp32 ${extra} }`;

const MASKED_ROWS = `${layoutOf(32)}\nkernel k { layout L mask q.video and k.video and k.frame == q.frame block 16 x 16 }`;

async function expectCorrect(
  spec: string,
  opts: { seed?: number; layout?: TensorLayout; storage?: WgslStorage; tiling?: WgslTiling } = {},
) {
  const attn = await compileWgsl(spec, { device: dev!, storage: opts.storage, tiling: opts.tiling });
  try {
    const r = await checkWgsl(attn, { seed: opts.seed ?? 7, layout: opts.layout });
    const label = `${attn.kernel.maskSource} (d=${attn.ir.headDim}, ${attn.ir.blockQ}x${attn.ir.blockKv}, ${attn.compiled.storage}, tiling ${JSON.stringify(attn.compiled.tiling)})`;
    expect(r.unwritten, `${label}: unwritten outputs`).toBe(0);
    expect(r.nonFinite, label).toBe(0);
    expect(r.maskedRowsOk, `${label}: rows without keys must give 0 and lse -inf`).toBe(true);
    expect(r.relError, label).toBeLessThan(attn.compiled.storage === "f16" ? 1e-2 : 1e-4);
    expect(r.lseError, label).toBeLessThan(attn.compiled.storage === "f16" ? 2e-2 : 1e-4);
    return { r, attn };
  } finally {
    attn.free();
  }
}

describe.skipIf(!dev)(`WGSL kernels on ${where}${dev ? "" : ` (skipped: ${ss.reason})`}`, () => {
  const storages: WgslStorage[] = dev?.caps.f16 ? ["f32", "f16"] : ["f32"];
  it(`runs random masks with odd lengths, text tokens, GQA and ragged blocks (${storages.join(", ")})`, async () => {
    // 79 tokens: 70 video (2 × 5 × 7) + 9 text; 16-token blocks leave a ragged 15-token last block.
    const r = new Rng(2024);
    let partial = 0;
    for (let i = 0; i < (onGpu ? 8 : 2); i++) {
      const spec = `${layoutOf(32)}\nkernel k { layout L mask ${randomMask(r)} block 16 x 16 }`;
      for (const storage of storages) {
        const { attn } = await expectCorrect(spec, { seed: 100 + i, storage });
        partial += attn.ir.plan.counts.partial;
      }
    }
    expect(partial).toBeGreaterThan(0);
  });

  it("walks 64-row blocks in sub-tiles and chunks (head_dim 64, text before, batch 2, 4 heads)", async () => {
    const spec = `layout L { video 3 x 5 x 7 text 9 before batch 2 heads 4 kv_heads 2 head_dim 64 dtype fp32 }
      kernel k { layout L mask text_joint or attention_tile(1) or temporal_band(0) block 64 x 64 }`;
    const { attn } = await expectCorrect(spec);
    const t = attn.compiled.tiling;
    expect(t.qt < 64 || t.kc < 64).toBe(true);
    expect(attn.ir.plan.counts.partial).toBeGreaterThan(0);
  });

  it("writes 0 and lse -inf for rows without any allowed key, in either tensor layout", async () => {
    // Text rows see nothing; video rows see their own frame.
    for (const layout of ["bshd", "bhsd"] as const) {
      const { r } = await expectCorrect(MASKED_ROWS, { layout });
      expect(r.maskedRows).toBe(9 * 2);
    }
  });

  it("reduces rows by subgroup shuffles and through workgroup memory alike", async () => {
    // SwiftShader's subgroups are 4 wide: tc = 4 takes the shuffle path, tc = 8 the fallback.
    expect(dev!.caps.subgroups).toBe(true);
    const spec = `${layoutOf(32)}\nkernel k { layout L mask attention_tile(1) or text_joint block 16 x 16 }`;
    const tiling = (tc: number) => ({
      threads: 32,
      tc,
      tr: 32 / tc,
      rq: 1,
      rk: 16 / tc,
      qt: 32 / tc,
      kc: 16,
    });
    const { attn } = await expectCorrect(spec, { tiling: tiling(8), seed: 8 });
    expect(attn.compiled.tiling.tc).toBe(8);
    // With tc = 4 the fallback is broken on purpose: right answers prove the shuffles ran.
    const { kernel, ir } = kernelIR(spec, {});
    const src = emitWgsl(ir, dev!.caps, { tiling: tiling(4) });
    const fallback = "acc = select(acc + y, max(acc, y), is_max);";
    expect(src.source).toContain(fallback);
    const broken = { ...src, source: src.source.replace(fallback, "acc = -1.0;") };
    const shuffled = new WgslAttention(
      kernel,
      ir,
      broken,
      await dev!.shader(broken.source, broken.entry),
      dev!,
    );
    const r = await checkWgsl(shuffled, { seed: 4 });
    shuffled.free();
    expect(r.unwritten).toBe(0);
    expect(r.relError).toBeLessThan(1e-4);
  });

  it.skipIf(!dev?.caps.f16)(
    `f16 storage and arithmetic (< 1e-2)${dev?.caps.f16 ? "" : ` (skipped: ${where} offers no shader-f16)`}`,
    async () => {
      await expectCorrect(`${layoutOf(32)}\nkernel k { layout L mask causal_frames block 16 x 16 }`, {
        storage: "f16",
      });
    },
  );

  it("renders masks to WGSL that agree with the JS evaluator on every pair (12 random masks)", async () => {
    const r = new Rng(7);
    const fns: string[] = [];
    const expected: number[] = [];
    const n = 44; // 2 × 3 × 5 video + 14 text tokens
    const starts: number[] = [];
    while (fns.length < 12) {
      const src = `layout L { video 2 x 3 x 5 text 14 ${r.pick(["before", "after"])} heads 1 head_dim 16 }
        kernel k { layout L mask ${randomMask(r)} block 16 x 16 }`;
      const spec = compileSpec(src, "m.tile").spec;
      if (!spec) continue;
      const k = spec.kernels.get("k")!;
      expect(seqLen(k.layout)).toBe(n);
      fns.push(
        renderMaskFunction(`mask_${fns.length}`, k.mask, lowerKernel(planKernel(k), "m.tile").decode, WGSL),
      );
      const allowed = elementMask(k.layout, k.mask);
      starts.push(expected.length);
      for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) expected.push(allowed(i, j) ? 1 : 0);
    }
    const cases = fns.map((_, m) => `    case ${m}u: { ok = mask_${m}(q, k); }`).join("\n");
    const source = `${WGSL.helpers}\n${fns.join("\n")}
@group(0) @binding(0) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  let i = g.x;
  if (i >= ${n * n * fns.length}u) { return; }
  let m = i / ${n * n}u;
  let q = i32((i / ${n}u) % ${n}u);
  let k = i32(i % ${n}u);
  var ok = false;
  switch (m) {
${cases}
    default: {}
  }
  out[i] = select(0u, 1u, ok);
}`;
    const d = dev!.device;
    const module = d.createShaderModule({ code: source });
    const info = await module.getCompilationInfo();
    expect(info.messages.filter((m) => m.type === "error").map((m) => `${m.lineNum}:${m.message}`)).toEqual(
      [],
    );
    const pipeline = await d.createComputePipelineAsync({
      layout: "auto",
      compute: { module, entryPoint: "main" },
    });
    const buf = d.createBuffer({
      size: expected.length * 4,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC,
    });
    const enc = d.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(
      0,
      d.createBindGroup({
        layout: pipeline.getBindGroupLayout(0),
        entries: [{ binding: 0, resource: { buffer: buf } }],
      }),
    );
    pass.dispatchWorkgroups(Math.ceil(expected.length / 64));
    pass.end();
    d.queue.submit([enc.finish()]);
    const got = new Uint32Array(await dev!.readBuffer(buf, expected.length * 4));
    buf.destroy();
    for (let m = 0; m < fns.length; m++) {
      const bad = [...Array(n * n).keys()].filter((p) => got[starts[m]! + p] !== expected[starts[m]! + p]);
      expect(
        bad.length,
        `mask_${m} differs at ${bad.slice(0, 3).map((p) => `(${Math.floor(p / n)}, ${p % n})`)}\n${fns[m]}`,
      ).toBe(0);
    }
  });

  it("times dispatches with timestamp queries and reuses the compiled pipeline", async () => {
    expect(dev!.timestamps).toBe(true);
    // The masked-rows test compiled this kernel already: the pipeline comes from the cache.
    const started = performance.now();
    const a = await compileWgsl(MASKED_ROWS, { device: dev! });
    const b = await compileWgsl(MASKED_ROWS, { device: dev! });
    expect(performance.now() - started).toBeLessThan(500); // no WGSL → SPIR-V → JIT again
    const { batch, seqLen: n, heads, kvHeads, headDim: d } = a.ir;
    const q = dev!.upload(new Float32Array(batch * n * heads * d).fill(0.5), "f32");
    const kv = dev!.upload(new Float32Array(batch * n * kvHeads * d).fill(0.25), "f32");
    const out = dev!.empty(q.length, "f32");
    const t = await b.time(q, kv, kv, out, { reps: 5, warmup: 1 });
    expect(t.ns).toHaveLength(5);
    expect(t.medianNs).toBeGreaterThan(0);
    const o = await dev!.download(out);
    // Rows that see keys average equal values; text rows see none and give 0.
    expect(o.every((x) => Math.abs(x - 0.25) < 1e-6 || x === 0)).toBe(true);
    expect(o.filter((x) => x === 0)).toHaveLength(9 * a.ir.heads * a.ir.headDim);
    for (const x of [q, kv, out]) x.buffer.destroy();
    a.free();
    b.free();
  });

  it("turns device loss into an exception", async () => {
    const own = onGpu ? await openNodeDevice({ backend: "vulkan" }) : (await openSwiftShader()).device!;
    const t = own.upload([1, 2, 3], "f32");
    expect(Array.from(await own.download(t))).toEqual([1, 2, 3]);
    own.destroy();
    await new Promise((r) => setTimeout(r, 20)); // device.lost settles asynchronously
    await expect(own.download(t)).rejects.toThrow(WebGpuDeviceLost);
    await expect(own.shader("@compute @workgroup_size(1) fn main() {}", "main")).rejects.toThrow(
      /device lost \(destroyed\)/,
    );
  });
});

describe("WebGPU runtime without a device", () => {
  it("asks for a device where there is no navigator.gpu", async () => {
    await expect(compileWgsl(MASKED_ROWS)).rejects.toThrow(/pass \{ device \}/);
  });

  // VK_DRIVER_FILES (set on GPU hosts) takes precedence over the VK_ICD_FILENAMES this test points away.
  const driverFiles = process.env.VK_DRIVER_FILES;
  it.skipIf(driverFiles)(
    `says why when Dawn finds no adapter${driverFiles ? " (skipped: VK_DRIVER_FILES is set)" : ""}`,
    async () => {
      await expect(openNodeDevice({ backend: "vulkan", icd: "/nonexistent/icd.json" })).rejects.toThrow(
        /no adapter.*libvulkan1/,
      );
    },
  );
});
