// Which of a spec's attention kernels a DiT runs, shared by the CUDA and WebGPU forwards: the model
// section (or one kernel everywhere) resolved against the spec, every kernel's layout checked against
// the DiT's token grid and heads (all problems of a kernel in one message), and the mapping of a
// sampler's step onto the model section's steps.
import { kernelFor, type CheckedSpec, type ModelSpec } from "../../compiler/check.ts";
import { compileSpec } from "../../compiler/pipeline.ts";
import { renderDiagnostics } from "../../grammar/index.ts";
import { tokenGrid, type DitConfig } from "./config.ts";

export function checkedSpec(text: string): CheckedSpec {
  const r = compileSpec(text, "<dit spec>");
  if (!r.spec) throw new Error(`the spec has errors:\n${renderDiagnostics(r.diagnostics, r.sources)}`);
  return r.spec;
}

export function modelKernels(model: ModelSpec): string[] {
  return [...new Set([...model.layerKernels, ...model.stepOverrides.map((o) => o.kernel)])];
}

export function onlyKernel(spec: CheckedSpec): string {
  const names = [...spec.kernels.keys()];
  if (names.length !== 1)
    throw new Error(`the spec has ${names.length} kernels (${names.join(", ")}): pass a model or a kernel`);
  return names[0]!;
}

export interface DitKernelChoice {
  readonly spec: CheckedSpec;
  readonly model: ModelSpec | undefined;
  /** Kernels to compile: the model's (or the one kernel), then `extraKernels`, without repeats. */
  readonly names: string[];
  /** The kernels' common batch. */
  readonly batch: number;
}

/** Resolves and checks the kernels a DiT of `config` on `latent` runs; `dtype` is the one its kernels must have. */
export function ditKernels(
  config: DitConfig,
  options: {
    readonly spec: string | CheckedSpec;
    readonly model?: string;
    readonly kernel?: string;
    readonly extraKernels?: readonly string[];
    readonly latent: { readonly frames: number; readonly height: number; readonly width: number };
  },
  dtype?: string,
): DitKernelChoice {
  const spec = typeof options.spec === "string" ? checkedSpec(options.spec) : options.spec;
  const model = options.model === undefined ? undefined : spec.models.get(options.model);
  if (options.model !== undefined && !model)
    throw new Error(
      `the spec has no model '${options.model}'; it has ${[...spec.models.keys()].join(", ") || "none"}`,
    );
  if (model && model.layers !== config.numLayers)
    throw new Error(`model '${model.name}' has ${model.layers} layers, the DiT config ${config.numLayers}`);
  const names = [
    ...new Set([
      ...(model ? modelKernels(model) : [options.kernel ?? onlyKernel(spec)]),
      ...(options.extraKernels ?? []),
    ]),
  ];
  const g = tokenGrid(config, options.latent);
  let batch = 0;
  for (const name of names) {
    const k = spec.kernels.get(name);
    if (!k) throw new Error(`the spec has no kernel '${name}'`);
    const l = k.layout;
    const problems: string[] = [];
    if (l.textTokens) problems.push(`has ${l.textTokens} text tokens (OSP attends text by cross-attention)`);
    if (l.frames !== g.frames || l.height !== g.height || l.width !== g.width)
      problems.push(
        `video ${l.frames}×${l.height}×${l.width}, but the latent patchifies to ${g.frames}×${g.height}×${g.width}`,
      );
    if (l.heads !== config.numHeads || l.kvHeads !== config.numHeads || l.headDim !== config.headDim)
      problems.push(
        `heads ${l.heads}/${l.kvHeads}×${l.headDim}, the DiT has ${config.numHeads}×${config.headDim}`,
      );
    if (dtype && l.dtype !== dtype) problems.push(`dtype ${l.dtype}; the DiT runs ${dtype}`);
    if (batch && l.batch !== batch) problems.push(`batch ${l.batch} differs from other kernels' ${batch}`);
    if (problems.length)
      throw new Error(`kernel '${name}' (layout '${l.name}') does not fit the DiT: ${problems.join("; ")}`);
    batch = l.batch;
  }
  return { spec, model, names, batch };
}

/** A sampler's step `step` of `steps`, mapped proportionally onto the model section's steps. */
export function modelStep(model: ModelSpec | undefined, step?: number, steps?: number): number | undefined {
  if (step === undefined || !model) return step;
  const ms = model.steps;
  if (!ms) return undefined;
  return Math.min(ms - 1, Math.floor((step * ms) / (steps ?? ms)));
}

/** The kernel of `layer` at sampler step `step` of `steps` under `model`, or `fallback` without one. */
export function layerKernel(
  model: ModelSpec | undefined,
  fallback: () => string,
  layer: number,
  step?: number,
  steps?: number,
): string {
  return model ? kernelFor(model, layer, modelStep(model, step, steps)) : fallback();
}
