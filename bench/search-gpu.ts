// The search's GPU check, in two steps (bench/search-gpu.sh runs both):
//
//   make DIR [--heads H] [--layers L]   writes DIR/osp29_h{H}.tile (osp29 with H heads) and
//                                       DIR/calibration.safetensors: synthetic Q/K/V at 8×45×80 tokens,
//                                       per layer a different frame locality (diffuse … frame-local)
//   model FILE.tile OUT.json [--reps N] compiles every kernel the searched model uses, checks each against
//                                       the float64 reference on sampled rows, times each (median of N,
//                                       CUDA events after warm-up), and compares the model's measured
//                                       attention speedup over dense with the search's prediction
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { compileSpec, planKernel } from "../compiler/pipeline.ts";
import { kernelFor } from "../compiler/check.ts";
import { compile } from "../runtime/attention.ts";
import { CudaDevice, timeMs } from "../runtime/cuda/device.ts";
import { randomArray } from "../runtime/reference.ts";
import { saveCalibration } from "../search/calibration.ts";
import { frameLocalQkv } from "../search/synthetic.ts";
import { checkKernel, sampleRows } from "../test/support/attentionCheck.ts";

const [command, ...args] = process.argv.slice(2);
const flag = (name: string, fallback: number) =>
  args.includes(name) ? Number(args[args.indexOf(name) + 1]) : fallback;

/** Frame locality λ per layer: 0 = diffuse attention … 1.5 = almost purely frame-local. */
export const LOCALITY = [0, 0.5, 0.6, 0.66, 0.68, 0.7, 0.8, 1.0];

function make(dir: string): void {
  const heads = flag("--heads", 8);
  const layers = flag("--layers", LOCALITY.length);
  const source = readFileSync("examples/efficient-vdit/osp29.tile", "utf8");
  const text = source.replace(/\bheads 24\b/, `heads ${heads}`);
  if (text === source && heads !== 24) throw new Error("osp29.tile no longer says `heads 24`");
  const specFile = join(dir, `osp29_h${heads}.tile`);
  writeFileSync(specFile, text);
  const spec = compileSpec(text, specFile).spec!;
  const layout = spec.layouts.get("osp29")!;
  const t0 = performance.now();
  saveCalibration(
    join(dir, "calibration.safetensors"),
    layers,
    (i) => frameLocalQkv(layout, LOCALITY[i % LOCALITY.length]!, 7 + i),
    "BF16",
    {
      source: "bench/search-gpu.ts synthetic frame-local Q/K/V",
      locality: JSON.stringify(LOCALITY.slice(0, layers)),
    },
  );
  console.log(
    `wrote ${specFile} and ${layers} layers of calibration in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
  );
}

async function model(file: string, out: string): Promise<void> {
  const reps = flag("--reps", 20);
  const spec = compileSpec(readFileSync(file, "utf8"), file).spec;
  if (!spec) throw new Error(`${file} does not compile`);
  const m = [...spec.models.values()].at(-1)!;
  const used = [...new Set(m.layerKernels)];
  const dense = [...spec.kernels.values()].find(
    (k) => planKernel(k).stats.density === 1 && planKernel(k).plan.counts.partial === 0,
  );
  if (!dense) throw new Error(`${file} has no dense kernel to compare with`);
  const dev = CudaDevice.open();
  const layout = dense.layout;
  const n = layout.frames * layout.height * layout.width + layout.textTokens;
  const elems = layout.batch * n * layout.heads * layout.headDim;
  const [q, k, v] = [1, 2, 3].map((s) =>
    dev.fromHost(Float32Array.from(randomArray(elems, s)), layout.dtype),
  );
  const o = dev.allocElements(layout.dtype, elems);
  const timed = new Map<string, { ms: number; relError: number; density: number }>();
  for (const name of [...new Set([dense.name, ...used])]) {
    const kernel = spec.kernels.get(name)!;
    const attn = await compile(spec, { target: "cuda", kernel: name });
    const gate = checkKernel(attn, kernel, { seed: 5, rows: sampleRows(n, kernel.blockQ, 24, 3) });
    for (let i = 0; i < 3; i++) attn.run(q!, k!, v!, o);
    dev.synchronize();
    const times = Array.from({ length: reps }, () => timeMs(() => attn.run(q!, k!, v!, o)));
    times.sort((x, y) => x - y);
    timed.set(name, {
      ms: times[times.length >> 1]!,
      relError: gate.relError,
      density: planKernel(kernel).stats.density,
    });
    attn.free();
  }
  const steps = m.steps ?? 1;
  const sum = (step?: number) =>
    m.layerKernels.reduce(
      (s, _, l) => s + timed.get(step === undefined ? m.layerKernels[l]! : kernelFor(m, l, step))!.ms,
      0,
    );
  const denseMs = timed.get(dense.name)!.ms * m.layers;
  const modelMs = sum();
  const predicted = m.layers / m.layerKernels.reduce((s, kname) => s + timed.get(kname)!.density, 0);
  const result = {
    device: dev.info.name,
    date: new Date().toISOString(),
    file,
    model: m.name,
    layers: m.layers,
    steps,
    layout: {
      name: layout.name,
      tokens: n,
      heads: layout.heads,
      headDim: layout.headDim,
      dtype: layout.dtype,
    },
    kernels: Object.fromEntries(timed),
    perLayer: m.layerKernels,
    denseAttentionMsPerStep: denseMs,
    modelAttentionMsPerStep: modelMs,
    measuredSpeedup: denseMs / modelMs,
    predictedSpeedup: predicted,
    allStepsMs: m.steps
      ? Array.from({ length: steps }, (_, s) => sum(s)).reduce((x, y) => x + y, 0)
      : modelMs,
  };
  writeFileSync(out, JSON.stringify(result, null, 2) + "\n");
  for (const [name, t] of timed)
    console.log(
      `${name.padEnd(10)} ${t.ms.toFixed(3).padStart(8)} ms  density ${(t.density * 100).toFixed(2)}%  rel err vs reference ${t.relError.toExponential(2)}`,
    );
  console.log(
    `model ${m.name}: attention ${modelMs.toFixed(2)} ms/step vs dense ${denseMs.toFixed(2)} ms: measured ${result.measuredSpeedup.toFixed(2)}x, predicted by plan density ${predicted.toFixed(2)}x (${dev.info.name})`,
  );
  for (const t of timed.values())
    if (!(t.relError < 1e-2)) throw new Error(`a kernel failed its reference check (${t.relError})`);
}

if (command === "make") make(args[0] ?? ".");
else if (command === "model") await model(args[0]!, args[1] ?? "search-model.json");
else {
  console.error(
    "usage: search-gpu.ts make DIR [--heads H] [--layers L] | model FILE.tile OUT.json [--reps N]",
  );
  process.exit(2);
}
