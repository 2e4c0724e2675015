// `tilec search SPEC --qkv FILE --threshold r`: the layer-wise search from the command line — a progress
// bar on stderr, a table of per-layer choices, the predicted attention speedup, and the searched model
// as a .tile file that compiles on its own (checked before it is written).
import { statSync, writeFileSync } from "node:fs";
import cliProgress from "cli-progress";
import type { ModelSpec } from "../compiler/check.ts";
import { compileSpec } from "../compiler/pipeline.ts";
import { EXIT_DIAGNOSTICS, EXIT_OK, UsageError, loadSpec, report, table } from "../cli/load.ts";
import { SafetensorsError } from "../runtime/io/safetensors.ts";
import { openCalibration } from "./calibration.ts";
import { freshModelName, modelSection, specWithoutModels } from "./modelTile.ts";
import { SearchError, searchLayers, type Metric, type SearchDevice, type SearchResult } from "./search.ts";

export interface SearchCommandOptions {
  qkv: string;
  threshold: string;
  metric: Metric;
  out?: string;
  device: "auto" | SearchDevice;
  kernels?: string;
  model?: string;
  name?: string;
  rows?: string;
  json?: boolean;
}

async function pickDevice(
  wanted: SearchCommandOptions["device"],
): Promise<{ device: SearchDevice; note?: string }> {
  if (wanted === "cpu") return { device: "cpu" };
  const { available } = await import("../runtime/cuda/index.ts");
  const cuda = available();
  if (cuda.ok) return { device: "cuda" };
  if (wanted === "cuda") throw new UsageError(`--device cuda: CUDA is not usable here (${cuda.reason})`);
  return { device: "cpu", note: `no CUDA device (${cuda.reason}): searching on the CPU reference` };
}

function parseThreshold(s: string): number {
  const r = Number(s);
  if (!(r > 0) || !Number.isFinite(r))
    throw new UsageError(`--threshold must be a positive number, got '${s}'`);
  return r;
}

function parseRows(s: string | undefined): number | "all" | undefined {
  if (s === undefined || s === "all") return s;
  const n = Number(s);
  if (!Number.isInteger(n) || n < 1)
    throw new UsageError(`--rows takes a positive integer or 'all', got '${s}'`);
  return n;
}

/** The model the searched one inherits steps and step overrides from: --model, else the spec's only one. */
function baseModel(
  models: ReadonlyMap<string, ModelSpec>,
  name: string | undefined,
  layers: number,
): ModelSpec | undefined {
  if (name) {
    const m = models.get(name);
    if (!m)
      throw new UsageError(
        `the spec has no model '${name}'; its models are: ${[...models.keys()].join(", ") || "(none)"}`,
      );
    if (m.layers !== layers)
      throw new UsageError(`model '${name}' has ${m.layers} layers but the calibration file has ${layers}`);
    return m;
  }
  const only = models.size === 1 ? [...models.values()][0]! : undefined;
  return only && only.layers === layers ? only : undefined;
}

export function searchedTile(
  source: string,
  file: string,
  result: SearchResult,
  opts: { name: string; base?: ModelSpec; qkv: string },
): string {
  const comment = [
    `Searched by \`tilec search\` (Efficient-vDiT layer-wise search): per layer, the sparsest kernel whose`,
    `attention output error against dense attention stays under ${result.metric} < ${result.threshold}.`,
    `Calibration: ${opts.qkv}; ${result.device === "cuda" ? "compiled CUDA kernels" : "CPU float64 reference"}, ${result.rows} of ${result.seqLen} query rows.`,
    `Predicted attention speedup: ${result.predictedSpeedup.toFixed(2)}x by plan density (${result.flopsSpeedup.toFixed(2)}x by FLOPs).`,
    ...(opts.base ? [`Steps and step overrides from model '${opts.base.name}'.`] : []),
  ];
  const model = modelSection({
    name: opts.name,
    layerKernels: result.layers.map((l) => l.kernel),
    steps: opts.base?.steps,
    stepOverrides: opts.base?.stepOverrides,
    comment,
  });
  return `${specWithoutModels(source, file)}\n${model}`;
}

function progressBar(enabled: boolean) {
  if (!enabled) return { update: () => {}, stop: () => {} };
  const bar = new cliProgress.SingleBar(
    { format: "search |{bar}| {value}/{total} {label}", hideCursor: true, stream: process.stderr },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  return {
    update: (done: number, total: number, label: string) => {
      if (!started) bar.start(total, 0, { label });
      started = true;
      bar.update(done, { label });
    },
    stop: () => started && bar.stop(),
  };
}

export async function searchCommand(file: string, opts: SearchCommandOptions): Promise<number> {
  const threshold = parseThreshold(opts.threshold);
  const rows = parseRows(opts.rows);
  const loaded = loadSpec(file);
  if (report(loaded) || !loaded.spec) return EXIT_DIAGNOSTICS;
  const spec = loaded.spec;
  const source = loaded.sources.get(file)!;
  let calibration;
  try {
    statSync(opts.qkv);
  } catch (e) {
    throw new UsageError(
      `cannot read ${opts.qkv}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
    );
  }
  const { device, note } = await pickDevice(opts.device);
  const bar = progressBar(!opts.json && process.stderr.isTTY === true);
  let result: SearchResult;
  try {
    calibration = openCalibration(opts.qkv);
    try {
      result = await searchLayers(spec, (l) => calibration!.read(l), {
        layers: calibration.layers,
        threshold,
        metric: opts.metric,
        device,
        kernels: opts.kernels
          ?.split(",")
          .map((s) => s.trim())
          .filter(Boolean),
        rows,
        onProgress: bar.update,
      });
    } finally {
      bar.stop();
      calibration.close();
    }
  } catch (e) {
    if (!(e instanceof SearchError || e instanceof SafetensorsError)) throw e;
    process.stderr.write(`tilec search: ${e.message}\n`);
    return EXIT_DIAGNOSTICS;
  }
  const base = baseModel(spec.models, opts.model, result.layers.length);
  const taken = new Set([...spec.layouts.keys(), ...spec.kernels.keys(), ...spec.masks.keys()]);
  const name = freshModelName(opts.name ?? `${result.layout.name}_searched`, taken);
  const tile = searchedTile(source, file, result, { name, base, qkv: opts.qkv });
  const outFile = opts.out ?? "<search output>";
  const check = compileSpec(tile, outFile);
  if (!check.spec?.models.has(name))
    throw new Error(
      `internal error: the searched model does not compile:\n${check.diagnostics.map((d) => d.message).join("\n")}`,
    );
  if (opts.out) writeFileSync(opts.out, tile);
  if (opts.json) {
    process.stdout.write(JSON.stringify(searchJson(result, name, tile, opts.out), null, 2) + "\n");
    return EXIT_OK;
  }
  const w = process.stdout.write.bind(process.stdout);
  if (note) process.stderr.write(`note: ${note}\n`);
  if (calibration!.ignored.length)
    process.stderr.write(`note: ignored ${calibration!.ignored.length} tensors not named layers.{i}.q/k/v\n`);
  w(summaryTable(result) + "\n");
  w(summaryLines(result).join("\n") + "\n");
  if (opts.out) w(`wrote model '${name}' to ${opts.out}\n`);
  else w(`\n${tile}`);
  return EXIT_OK;
}

function fmt(x: number): string {
  return Number.isNaN(x) ? "NaN" : x === 0 ? "0" : x < 1e-3 || x >= 1e4 ? x.toExponential(2) : x.toFixed(4);
}

export function summaryTable(r: SearchResult): string {
  const maskOf = new Map(r.candidates.map((c) => [c.kernel.name, c.kernel.maskSource]));
  const anyOver = r.layers.some((l) => l.overThreshold);
  const rows = r.layers.map((l) => [
    l.layer,
    l.kernel,
    maskOf.get(l.kernel)!,
    fmt(l.relL2),
    fmt(l.mse),
    `${(l.density * 100).toFixed(2)}%`,
    ...(anyOver ? [l.overThreshold ? "over threshold" : ""] : []),
  ]);
  return table(rows, ["layer", "kernel", "mask", "rel L2", "MSE", "density", ...(anyOver ? ["note"] : [])]);
}

export function summaryLines(r: SearchResult): string[] {
  const counts = new Map<string, number>();
  for (const l of r.layers) counts.set(l.kernel, (counts.get(l.kernel) ?? 0) + 1);
  const over = r.layers.filter((l) => l.overThreshold).length;
  return [
    `criterion: sparsest of ${r.candidates.length} kernels (${r.candidates.map((c) => c.kernel.name).join(" > ")}) with ${r.metric} < ${r.threshold} against dense attention`,
    `measured on: ${r.device === "cuda" ? "the compiled CUDA kernels" : "the CPU float64 reference"}, ${r.rows === r.seqLen ? `all ${r.seqLen} query rows` : `${r.rows} of ${r.seqLen} query rows (sampled)`}`,
    `chosen: ${[...counts].map(([k, n]) => `${k} ×${n}`).join(", ")}`,
    `predicted attention speedup: ${r.predictedSpeedup.toFixed(2)}x by plan density, ${r.flopsSpeedup.toFixed(2)}x by FLOPs (${r.layers.length} layers)`,
    ...(over
      ? [
          `warning: ${over} layer${over === 1 ? "" : "s"} had no kernel under the threshold (the lowest-error one was taken); add a dense kernel (mask full) to the spec`,
        ]
      : []),
  ];
}

export function searchJson(
  r: SearchResult,
  name: string,
  tile: string,
  out?: string,
): Record<string, unknown> {
  return {
    model: name,
    out: out ?? null,
    layout: r.layout.name,
    metric: r.metric,
    threshold: r.threshold,
    device: r.device,
    rows: r.rows,
    seqLen: r.seqLen,
    predictedSpeedup: r.predictedSpeedup,
    flopsSpeedup: r.flopsSpeedup,
    candidates: r.candidates.map((c) => ({
      kernel: c.kernel.name,
      mask: c.kernel.maskSource,
      density: c.density,
      flops: c.flops,
    })),
    layers: r.layers,
    tile,
  };
}
