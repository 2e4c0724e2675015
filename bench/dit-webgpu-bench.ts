// The WebGPU DiT (runtime/dit/webgpu.ts) through Dawn's Vulkan backend at a reduced Open-Sora-Plan
// shape: OSP v1.2's block (hidden 2304, 24 heads × 96, MLP 9216) with few layers on a small latent
// (default 8 × 32 × 64 → 4,096 tokens, 128 text tokens), random weights, f32 throughout.
//   1. The WGSL matmul at the DiT's linear shapes, per tiling that fits (the forward uses the default): median GPU time (timestamp queries) and
//      TFLOP/s, after a gate of sampled outputs against float64.
//   2. A forward per step, dense vs Attention Tile 2:6 in every layer: median GPU time of the forward's
//      compute pass, the standalone attention time per layer, and the speedup predicted from
//      attention's share (T_dense / (T_dense − A_dense + A_sparse)) next to the measured one.
//
//   npx tsx bench/dit-webgpu-bench.ts OUT.json [--layers 2] [--reps 10] [--warmup 2] [--unsafe] [--tiny]
//                                              [--gemm-only]
// On the H100: VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json. --tiny: a 2-layer
// 8-head DiT on a 4 × 8 × 16 latent on SwiftShader (checks that the benchmark works, measures nothing).
import { writeFileSync } from "node:fs";
import {
  chooseMatmulTiling,
  matmulKey,
  matmulTilingProblems,
  type MatmulTiling,
} from "../backends/wgsl/matmul.ts";
import { compileSpec } from "../compiler/pipeline.ts";
import { renderDiagnostics } from "../grammar/index.ts";
import { OSP_V12, tokenGrid, type DitConfig } from "../runtime/dit/config.ts";
import { WebGpuDit } from "../runtime/dit/webgpu.ts";
import { randomArray } from "../runtime/reference.ts";
import { compileWgsl } from "../runtime/webgpu/attention.ts";
import { median, PassTimer, type WebGpuDevice } from "../runtime/webgpu/device.ts";
import type { PreparedDispatch } from "../runtime/webgpu/dispatch.ts";
import { WgslMatmul } from "../runtime/webgpu/matmul.ts";
import { findSwiftShader, openNodeDevice } from "../runtime/webgpu/node.ts";

const args = process.argv.slice(2);
const out = args.find((a) => !a.startsWith("--") && !/^\d+$/.test(a)) ?? "dit-webgpu-bench.json";
const flag = (name: string) => (args.includes(name) ? args[args.indexOf(name) + 1] : undefined);
const tiny = args.includes("--tiny");
const layers = Number(flag("--layers") ?? 2);
const reps = Number(flag("--reps") ?? (tiny ? 2 : 10));
const warmup = Number(flag("--warmup") ?? (tiny ? 1 : 2));
const unsafe = args.includes("--unsafe");

const config: DitConfig = tiny
  ? {
      ...OSP_V12,
      numLayers: layers,
      numHeads: 2,
      headDim: 48,
      hidden: 96,
      ffInnerDim: 384,
      captionChannels: 64,
      crossAttentionDim: 96,
    }
  : { ...OSP_V12, numLayers: layers };
const latent = tiny ? { frames: 4, height: 8, width: 16 } : { frames: 8, height: 32, width: 64 };
const textTokens = tiny ? 16 : 128;
const grid = tokenGrid(config, latent);

const icd = tiny ? findSwiftShader() : undefined;
if (tiny && !icd) throw new Error("SwiftShader not found (chromium-common)");
const dev = await openNodeDevice({
  backend: "vulkan",
  icd,
  powerPreference: "high-performance",
  enableToggles: unsafe ? ["allow_unsafe_apis", "disable_robustness"] : [],
});
const device = `${dev.adapter.vendor} ${dev.adapter.architecture} ${dev.adapter.device} (${dev.adapter.description})`;
console.log(`device: ${device}; timestamp-query ${dev.timestamps}${unsafe ? "; robustness off" : ""}`);
if (!dev.timestamps) throw new Error("the device offers no timestamp-query");

/** Median GPU ms of `reps` compute passes (after `warmup`), each recording `encode`, one submission. */
async function timePasses(d: WebGpuDevice, encode: (pass: GPUComputePassEncoder) => void): Promise<number> {
  return (await d.timePasses(encode, { reps, warmup })).medianNs / 1e6;
}

// ---- 1. The matmul at the DiT's linear shapes ----
const M = grid.tokens;
const C = config.hidden;
// The default tiling (the best the limits allow) and the other candidates that fit.
const defaultKey = matmulKey({ storage: "f32", transB: true }, chooseMatmulTiling(dev.caps.limits));
const tilings: MatmulTiling[] = [
  { tx: 16, ty: 16, rm: 8, rn: 8, bk: 16 },
  { tx: 16, ty: 16, rm: 8, rn: 8, bk: 8 },
  { tx: 16, ty: 16, rm: 4, rn: 4, bk: 16 },
  { tx: 16, ty: 16, rm: 4, rn: 4, bk: 8 },
].filter((t) => !matmulTilingProblems(t, dev.caps.limits).length);
const gemmRows: Record<string, unknown>[] = [];
for (const [n, k, what] of [
  [C, C, "q/k/v/out projections"],
  [config.ffInnerDim, C, "MLP up (GELU-tanh)"],
  [C, config.ffInnerDim, "MLP down"],
] as const) {
  const a = randomArray(M * k, 1);
  const b = randomArray(n * k, 2);
  const ta = dev.upload(a, "f32");
  const tb = dev.upload(b, "f32");
  const tc = dev.empty(M * n, "f32");
  for (const tiling of tilings) {
    const mm = await WgslMatmul.create(dev, { storage: "f32", transB: true }, tiling);
    const d: PreparedDispatch = mm.prepare({
      m: M,
      n,
      k,
      a: { tensor: ta, ld: k },
      b: { tensor: tb, ld: k },
      c: { tensor: tc, ld: n },
    });
    const ms = await timePasses(dev, (pass) => d.encode(pass));
    const got = await dev.download(tc);
    let num = 0;
    let den = 0;
    for (let s = 0; s < 64; s++) {
      const i = (s * 7919) % M;
      const j = (s * 104729) % n;
      let want = 0;
      for (let p = 0; p < k; p++) want += a[i * k + p]! * b[j * k + p]!;
      num += (got[i * n + j]! - want) ** 2;
      den += want * want;
    }
    const relError = Math.sqrt(num / den);
    if (!(relError < 1e-4)) throw new Error(`matmul ${M}×${n}×${k} gate failed: rel error ${relError}`);
    const tflops = (2 * M * n * k) / (ms * 1e-3) / 1e12;
    console.log(
      `matmul ${M}×${n}×${k} (${what}) ${mm.source.key}: ${ms.toFixed(3)} ms, ${tflops.toFixed(2)} TFLOP/s`,
    );
    gemmRows.push({
      m: M,
      n,
      k,
      what,
      kernel: mm.source.key,
      default: mm.source.key === defaultKey,
      ms,
      tflops,
      relError,
    });
    d.destroy();
  }
  for (const t of [ta, tb, tc]) t.buffer.destroy();
}

if (args.includes("--gemm-only")) {
  writeFileSync(
    out,
    JSON.stringify({ device, date: new Date().toISOString().slice(0, 10), gemm: gemmRows }, null, 2),
  );
  console.log(`wrote ${out}`);
  process.exit(0);
}

// ---- 2. The forward, dense vs sparse ----
const layout = `layout bench { video ${grid.frames} x ${grid.height} x ${grid.width} batch 1 heads ${config.numHeads} head_dim ${config.headDim} dtype fp32 }`;
const block = tiny ? "32 x 32" : "64 x 64";
const specText = `${layout}
kernel full     { layout bench mask full              block ${block} targets wgsl, cpu }
kernel tile_2_6 { layout bench mask attention_tile(2) block ${block} targets wgsl, cpu }
model all_full { layers ${layers} layer 0 .. ${layers - 1} use full }
model all_2_6  { layers ${layers} layer 0 .. ${layers - 1} use tile_2_6 }
`;
const r = compileSpec(specText, "dit-webgpu-bench.tile");
if (!r.spec) throw new Error(renderDiagnostics(r.diagnostics, r.sources));
const spec = r.spec;

const attnMs = new Map<string, number>();
{
  const n = grid.tokens * C;
  const q = dev.upload(randomArray(n, 3), "f32");
  const o = dev.empty(n, "f32");
  for (const kernel of ["full", "tile_2_6"]) {
    const attn = await compileWgsl(spec, { device: dev, kernel, storage: "f32" });
    attnMs.set(kernel, await timePasses(dev, (pass) => attn.encode(pass, q, q, q, o)));
    console.log(
      `attention ${kernel}: ${attnMs.get(kernel)!.toFixed(3)} ms per layer (density ${attn.ir.kernelDensity.toFixed(3)})`,
    );
    attn.free();
  }
  q.buffer.destroy();
  o.buffer.destroy();
}

const rows: Record<string, unknown>[] = [];
let denseMs = 0;
for (const [model, kernel] of [
  ["all_full", "full"],
  ["all_2_6", "tile_2_6"],
] as const) {
  const t0 = performance.now();
  const dit = await WebGpuDit.create(config, { device: dev, spec, model, latent, textTokens });
  dit.randomizeWeights(7);
  await dit.encodeText(Float32Array.from(randomArray(textTokens * config.captionChannels, 4)));
  const createS = (performance.now() - t0) / 1e3;
  const inT = dev.upload(
    randomArray(config.inChannels * latent.frames * latent.height * latent.width, 5),
    "f32",
  );
  const outT = dev.empty(config.outChannels * latent.frames * latent.height * latent.width, "f32");
  // Wall time of whole forwards (submit → done), then GPU time of the forward's pass.
  await dit.forward(inT, [500], outT);
  await dev.device.queue.onSubmittedWorkDone();
  const walls: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t = performance.now();
    await dit.forward(inT, [500], outT);
    await dev.device.queue.onSubmittedWorkDone();
    walls.push(performance.now() - t);
  }
  const timer = new PassTimer(dev, reps);
  for (let i = 0; i < reps; i++) await dit.forward(inT, [500], outT, { timestampWrites: timer.writes(i) });
  const ms = median(await timer.durationsNs()) / 1e6;
  const result = await dev.download(outT);
  const finite = result.every(Number.isFinite);
  if (!finite) throw new Error(`${model}: the forward produced non-finite values`);
  if (model === "all_full") denseMs = ms;
  const aDense = layers * attnMs.get("full")!;
  const aCase = layers * attnMs.get(kernel)!;
  const row = {
    case: `osp-block-${grid.frames}x${grid.height}x${grid.width}`,
    masks: model,
    layers,
    tokens: grid.tokens,
    textTokens,
    ms_per_step: ms,
    wall_ms_per_step: median(walls),
    attention_ms: aCase,
    create_s: createS,
    predicted_speedup: denseMs / (denseMs - aDense + aCase),
    measured_speedup: denseMs / ms,
  };
  console.log(JSON.stringify(row));
  rows.push(row);
  inT.buffer.destroy();
  outT.buffer.destroy();
  dit.destroy();
}

writeFileSync(
  out,
  JSON.stringify(
    {
      device,
      date: new Date().toISOString().slice(0, 10),
      storage: "f32",
      robustness: unsafe ? "disabled" : "default",
      config: {
        layers,
        hidden: C,
        heads: config.numHeads,
        headDim: config.headDim,
        ffInner: config.ffInnerDim,
        latent,
      },
      gemm: gemmRows,
      rows,
    },
    null,
    2,
  ),
);
console.log(`wrote ${out}`);
dev.destroy();
