// End-to-end DiT step time at Open-Sora-Plan v1.2 29-frame shapes (latent 8×90×160 → 28,800 tokens,
// 512 text tokens, hidden 2304, 24 heads × 96, bf16, random weights) with dense vs sparse attention
// masks, and full sampling runs. Per case: warm-up, then `reps` forwards timed with device events; the
// self-attention calls are timed separately inside the same forwards.
//
//   predicted speedup = T_dense / (T_dense − A_dense + A_case)   (only attention changes between cases)
//   measured speedup  = T_dense / T_case
//
//   npx tsx bench/dit-bench.ts OUT.json [--layers 32] [--reps 3] [--euler-steps 100] [--segments 20]
//                                       [--sample-layers N] [--skip-euler-run] [--attention-only]
// --sample-layers runs the sampling runs on a shallower DiT (reported in the row); --skip-euler-run
// estimates the Euler run's total from its measured per-step time instead of running it.
// --attention-only stops after the per-step cases and the standalone kernel timings.
import { readFileSync, writeFileSync } from "node:fs";
import { compileSpec } from "../compiler/pipeline.ts";
import { renderDiagnostics } from "../grammar/index.ts";
import { CudaDevice, CudaEvent, timeMs, type DeviceBuffer } from "../runtime/cuda/device.ts";
import { cublasVersion } from "../runtime/cuda/cublas.ts";
import { OSP_V12, type DitConfig } from "../runtime/dit/config.ts";
import { CudaDit, type SelfAttentionCall } from "../runtime/dit/cuda.ts";
import { consistencySample, ditVelocityModel, eulerSample } from "../runtime/sampler/index.ts";

const out = process.argv[2] ?? "bench/results/dit-h100.json";
const flag = (name: string) =>
  process.argv.includes(name) ? process.argv[process.argv.indexOf(name) + 1] : undefined;
const layers = Number(flag("--layers") ?? 32);
const reps = Number(flag("--reps") ?? 3);
const eulerSteps = Number(flag("--euler-steps") ?? 100);
const segments = Number(flag("--segments") ?? 20);
const sampleLayers = Number(flag("--sample-layers") ?? layers);
const skipEulerRun = process.argv.includes("--skip-euler-run");

const LATENT = { frames: 8, height: 90, width: 160 };
const TEXT_TOKENS = 512;
const SPEC_FILE = "examples/efficient-vdit/osp29.tile";

/** The example spec's kernels plus model sections for `n` layers: uniform masks and a mixed one. */
function specFor(n: number): string {
  const base = readFileSync(SPEC_FILE, "utf8");
  const uniform = (name: string, kernel: string) =>
    `model ${name} { layers ${n} steps 100 layer 0 .. ${n - 1} use ${kernel} }`;
  // As osp29_example, scaled to n layers: dense first 1/16, 4:4 to the middle, 2:6 after; full for steps 0–4.
  const a = Math.min(n - 1, Math.max(1, Math.round(n / 16)));
  const b = Math.min(n, Math.max(a + 1, Math.round(n / 2)));
  const mixed = `model mixed {
  layers ${n}
  steps 100
  layer 0 .. ${a - 1} use full
  layer ${a} .. ${b - 1} use tile_4_4
  ${b < n ? `layer ${b} .. ${n - 1} use tile_2_6` : ""}
  step 0 .. 4 layer all use full
}`;
  return [
    base,
    uniform("all_full", "full"),
    uniform("all_2_6", "tile_2_6"),
    uniform("all_1_7", "tile_1_7"),
    mixed,
  ].join("\n");
}

const MASKS: Record<string, string> = {
  all_full: "full attention in every layer",
  all_2_6: "Attention Tile 2:6 in every layer",
  all_1_7: "Attention Tile 1:7 in every layer",
  mixed: "full (first 1/16 of layers), 4:4 (to the middle), 2:6 (rest); full for steps 0–4",
};

async function makeDit(n: number): Promise<CudaDit> {
  const text = specFor(n);
  const r = compileSpec(text, SPEC_FILE);
  if (!r.spec) throw new Error(renderDiagnostics(r.diagnostics, r.sources));
  const config: DitConfig = { ...OSP_V12, numLayers: n };
  const t0 = performance.now();
  const dit = await CudaDit.create(config, {
    spec: r.spec,
    model: "all_full",
    extraKernels: ["tile_4_4", "tile_2_6", "tile_1_7"],
    latent: LATENT,
    textTokens: TEXT_TOKENS,
  });
  dit.randomizeWeights(7);
  const textValues = new Float32Array(dit.batch * TEXT_TOKENS * config.captionChannels);
  for (let i = 0; i < textValues.length; i++) textValues[i] = Math.sin(i * 0.37) * 0.5;
  dit.encodeText(textValues);
  CudaDevice.open().synchronize();
  console.log(`DiT with ${n} layers ready in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  return dit;
}

function latentBuffer(dit: CudaDit, seed: number) {
  const n = dit.batch * dit.config.inChannels * LATENT.frames * LATENT.height * LATENT.width;
  const buf = CudaDevice.open().allocElements("fp32", n);
  dit.elementKernels.randomNormal(buf, seed);
  return buf;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** Median step and attention milliseconds of `reps` forwards at a mid-trajectory step (past step overrides). */
function timeSteps(dit: CudaDit): { stepMs: number; attentionMs: number } {
  const x = latentBuffer(dit, 1);
  const y = CudaDevice.open().allocElements("fp32", x.length);
  const run = (timeAttention: boolean) => dit.forward(x, [500], y, { step: 50, steps: 100, timeAttention });
  run(false); // warm-up
  const steps: number[] = [];
  const attention: number[] = [];
  for (let i = 0; i < reps; i++) {
    const s = CudaEvent.create();
    const e = CudaEvent.create();
    s.record();
    const r = run(true);
    e.record();
    e.synchronize();
    steps.push(e.elapsedSince(s));
    attention.push(r.attentionMs!);
    s.destroy();
    e.destroy();
  }
  x.free();
  y.free();
  return { stepMs: median(steps), attentionMs: median(attention) };
}

const dev = CudaDevice.open();
const rows: Record<string, unknown>[] = [];
const dit = await makeDit(layers);
console.log(
  `${dev.info.name}, cuBLAS ${cublasVersion()}, ${dit.tokens} tokens, ${TEXT_TOKENS} text tokens, ${layers} layers`,
);

const perStep = new Map<string, { stepMs: number; attentionMs: number }>();
for (const model of ["all_full", "all_2_6", "all_1_7", "mixed"]) {
  dit.useModel(model);
  const t = timeSteps(dit);
  perStep.set(model, t);
  console.log(
    `${model.padEnd(9)} step ${t.stepMs.toFixed(1)} ms, attention ${t.attentionMs.toFixed(1)} ms (${((100 * t.attentionMs) / t.stepMs).toFixed(0)}%)`,
  );
}
const dense = perStep.get("all_full")!;
for (const [model, t] of perStep) {
  const predicted = dense.stepMs / (dense.stepMs - dense.attentionMs + t.attentionMs);
  const measured = dense.stepMs / t.stepMs;
  rows.push({
    case: `step: ${model}`,
    masks: MASKS[model],
    layers,
    steps: 1,
    sampler: "one forward (model step 50 of 100)",
    ms_per_step: +t.stepMs.toFixed(2),
    attention_ms_per_step: +t.attentionMs.toFixed(2),
    total_s: +(t.stepMs / 1000).toFixed(4),
    predicted_speedup: +predicted.toFixed(3),
    measured_speedup: +measured.toFixed(3),
    prediction_error: +Math.abs(measured / predicted - 1).toFixed(4),
  });
  console.log(`${model.padEnd(9)} predicted ${predicted.toFixed(3)}× measured ${measured.toFixed(3)}×`);
}

// The same kernels outside the step: on the last layer's q, k, v of a forward, and on uniform random
// inputs (the attention benchmark's), median of 5 after 2 warm-ups — tells whether in-step attention
// time differs from the kernel's standalone time.
const standalone: Record<string, unknown>[] = [];
for (const model of ["all_full", "all_2_6", "all_1_7"]) {
  dit.useModel(model);
  let call: SelfAttentionCall | undefined;
  const original = dit.attention;
  dit.attention = (c) => {
    if (c.layer === layers - 1) call = c;
    original(c);
  };
  const x = latentBuffer(dit, 1);
  const y = dev.allocElements("fp32", x.length);
  dit.forward(x, [500], y, { step: 50, steps: 100 });
  dit.attention = original;
  const c = call!;
  const time = (q: DeviceBuffer, k: DeviceBuffer, v: DeviceBuffer) => {
    const ms: number[] = [];
    for (let i = 0; i < 7; i++) {
      const t = timeMs(() => c.kernel.run(q, k, v, c.out));
      if (i >= 2) ms.push(t);
    }
    return median(ms);
  };
  const onActivations = time(c.q, c.k, c.v);
  const rnd = [c.q, c.k, c.v].map((b, i) => {
    const r = dev.allocElements("bf16", b.length);
    dit.elementKernels.randomUniform(r, 1000 + i, 1);
    return r;
  });
  const onRandom = time(rnd[0]!, rnd[1]!, rnd[2]!);
  const inStep = perStep.get(model)!.attentionMs / layers;
  const template = /template (\w+)/.exec(c.kernel.compiled.source)?.[1];
  standalone.push({
    kernel: c.kernelName,
    template,
    in_step_ms: +inStep.toFixed(2),
    standalone_dit_inputs_ms: +onActivations.toFixed(2),
    standalone_random_inputs_ms: +onRandom.toFixed(2),
  });
  console.log(
    `${c.kernelName.padEnd(9)} (${template}) per layer in step ${inStep.toFixed(2)} ms, alone on DiT q/k/v ${onActivations.toFixed(2)} ms, alone on random q/k/v ${onRandom.toFixed(2)} ms`,
  );
  for (const b of [...rnd, x, y]) b.free();
}
if (process.argv.includes("--attention-only")) {
  writeFileSync(
    out,
    JSON.stringify(
      {
        device: dev.info.name,
        date: new Date().toISOString(),
        layers,
        perStep: Object.fromEntries(perStep),
        standalone,
      },
      null,
      2,
    ),
  );
  console.log(`wrote ${out}`);
  process.exit(0);
}

// Full sampling runs: 20-step consistency sampling with the mixed model vs 100 Euler steps dense.
const sampler = sampleLayers === layers ? dit : (dit.free(), await makeDit(sampleLayers));
async function sampleRun(kind: "consistency" | "euler", model: string) {
  sampler.useModel(model);
  const m = ditVelocityModel(sampler, { timeAttention: true });
  const x = latentBuffer(sampler, 3);
  const start = CudaEvent.create().record();
  const r =
    kind === "consistency"
      ? consistencySample(m.model, m.ops, x, { teacherSteps: eulerSteps, segments })
      : eulerSample(m.model, m.ops, x, { steps: eulerSteps });
  const end = CudaEvent.create().record();
  end.synchronize();
  const totalMs = end.elapsedSince(start);
  const attention = m.attentionMs.reduce((a, b) => a + b, 0);
  m.free();
  x.free();
  return { evaluations: r.evaluations, totalMs, attention };
}
const consistency = await sampleRun("consistency", "mixed");
let euler: { evaluations: number; totalMs: number; attention: number; estimated: boolean };
if (skipEulerRun) {
  const per = sampleLayers === layers ? dense.stepMs : NaN;
  euler = {
    evaluations: eulerSteps,
    totalMs: per * eulerSteps,
    attention: dense.attentionMs * eulerSteps,
    estimated: true,
  };
} else euler = { ...(await sampleRun("euler", "all_full")), estimated: false };
const runs = [
  [
    "consistency",
    consistency,
    "mixed",
    `multi-step consistency, ${segments} segments of a ${eulerSteps}-step schedule`,
  ],
  [
    "euler",
    euler,
    "all_full",
    `flow-matching Euler, ${eulerSteps} steps${euler.estimated ? " (total estimated from the measured per-step time, not run)" : ""}`,
  ],
] as const;
for (const [label, r, model, samplerName] of runs) {
  rows.push({
    case: `sample: ${label} (${model})`,
    masks: MASKS[model],
    layers: sampleLayers,
    steps: r.evaluations,
    sampler: samplerName,
    ms_per_step: +(r.totalMs / r.evaluations).toFixed(2),
    attention_ms_per_step: +(r.attention / r.evaluations).toFixed(2),
    total_s: +(r.totalMs / 1000).toFixed(3),
    predicted_speedup: null,
    measured_speedup: label === "consistency" ? +(euler.totalMs / consistency.totalMs).toFixed(3) : 1,
  });
  console.log(`${label}: ${r.evaluations} evaluations, ${(r.totalMs / 1000).toFixed(2)} s`);
}
sampler.free();

writeFileSync(
  out,
  JSON.stringify(
    {
      device: dev.info.name,
      date: new Date().toISOString(),
      setup: `Open-Sora-Plan v1.2 DiT, random bf16 weights, batch 1, latent ${LATENT.frames}×${LATENT.height}×${LATENT.width} (${dit.tokens} tokens), ${TEXT_TOKENS} text tokens; matrix products cuBLAS ${cublasVersion()}; median of ${reps} forwards after a warm-up`,
      attention_standalone: standalone,
      rows,
    },
    null,
    2,
  ),
);
console.log(`wrote ${out}`);
