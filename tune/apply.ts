// Using the winners: what the runtime's compile() and `tilec emit` / `tilec build` ask the cache.
// Never throws: a missing, damaged or foreign cache means the defaults.
import type { CheckedSpec, KernelSpec } from "../compiler/check.ts";
import { configProblems as cudaProblems, type CudaArch } from "../backends/cuda/target.ts";
import { configProblems as wgslProblems, type WgslLimits, type WgslTiling } from "../backends/wgsl/target.ts";
import { lowerKernel, type KernelConfig, type KernelIR } from "../compiler/lower.ts";
import { compileSpec, type KernelPlan } from "../compiler/pipeline.ts";
import type { CudaDevice } from "../runtime/cuda/device.ts";
import { nvrtcVersion } from "../runtime/cuda/nvrtc.ts";
import { TuneCache, type DeviceIdentity, type TuneEntry } from "./cache.ts";
import { choiceIR, choiceKey, type CudaChoice, type TuneChoice, type TuneTarget } from "./choice.ts";

/** The device a CUDA tuning run (and a tuned compile()) is keyed on. */
export function cudaIdentity(device: CudaDevice): DeviceIdentity {
  return {
    target: "cuda",
    device: device.info.name,
    driver: String(device.info.driverVersion),
    compiler: `nvrtc ${nvrtcVersion()}`,
  };
}

/** $TILEC_TUNED=0 turns tuned configurations off everywhere (benchmarks of the defaults). */
export function tunedDisabled(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.TILEC_TUNED === "0";
}

/** A kernel with a tuned query block: the same spec kernel (and hash) with a finer block. */
export function withBlockQ(kernel: KernelSpec, blockQ: number): KernelSpec {
  return blockQ === kernel.blockQ ? kernel : { ...kernel, blockQ };
}

export interface TunedCompile {
  /** A spec holding just the kernel, at the winner's query block. */
  readonly spec: CheckedSpec;
  readonly kernel: string;
  readonly config: KernelConfig;
  readonly arch: string;
  readonly entry: TuneEntry;
}

/** compile()'s arguments for the cached CUDA winner of a spec's kernel on `device`, if there is one. */
export function tunedCudaCompile(
  spec: string | CheckedSpec,
  options: { kernel?: string; file?: string },
  device: CudaDevice,
  cache: TuneCache = new TuneCache(),
): TunedCompile | undefined {
  if (tunedDisabled()) return undefined;
  try {
    const checked = typeof spec === "string" ? compileSpec(spec, options.file ?? "<spec>").spec : spec;
    if (!checked) return undefined; // compile() reports the diagnostics
    const names = [...checked.kernels.keys()];
    const name = options.kernel ?? (names.length === 1 ? names[0] : undefined);
    const kernel = name === undefined ? undefined : checked.kernels.get(name);
    if (!kernel) return undefined;
    const entry = cache.lookup(cudaIdentity(device), kernel.hash);
    if (!entry || entry.choice.target !== "cuda") return undefined;
    const c: CudaChoice = entry.choice;
    const k = withBlockQ(kernel, c.blockQ);
    return {
      spec: { ...checked, kernels: new Map([[k.name, k]]) },
      kernel: k.name,
      config: c.config,
      arch: c.arch,
      entry,
    };
  } catch {
    return undefined;
  }
}

/**
 * The winner `tilec emit` / `tilec build` use for a kernel (they run without a device): the newest
 * entry for its hash and target, optionally only from devices whose name contains `device`.
 */
export function tunedForBuild(
  kernel: KernelSpec,
  target: TuneTarget,
  options: { device?: string; cache?: TuneCache } = {},
): { choice: TuneChoice; entry: TuneEntry } | undefined {
  if (tunedDisabled()) return undefined;
  const entry = (options.cache ?? new TuneCache()).find(kernel.hash, target, options.device)[0];
  return entry ? { choice: entry.choice, entry } : undefined;
}

export interface BuildIR {
  readonly ir: KernelIR;
  /** WGSL: the winner's tiling and subgroup use (undefined: the emitter's defaults). */
  readonly tiling?: WgslTiling;
  readonly subgroups?: boolean;
  /** The cache entry used, if any. */
  readonly tuned?: TuneEntry;
  /** A line for the user: which winner was used, or why one was not. */
  readonly note?: string;
}

/**
 * The IR `tilec emit` / `tilec build` render for a kernel: the cached winner for the target (CUDA:
 * tuned for the same architecture) when there is one that fits the build's limits, else the default.
 */
export function buildIR(
  kp: KernelPlan,
  file: string,
  target: TuneTarget,
  options: {
    readonly arch?: string;
    readonly subgroups?: boolean;
    readonly wgslLimits?: WgslLimits;
    readonly storage?: "f16" | "f32";
    readonly useTuned?: boolean;
    readonly device?: string;
    readonly cache?: TuneCache;
    /** CUDA: lower the default as compile() does on a GPU of this architecture (sm_90: the wgmma path). */
    readonly defaultArch?: string;
  },
): BuildIR {
  const plain = (note?: string): BuildIR => ({
    ir: lowerKernel(kp, file, undefined, options.defaultArch),
    note,
  });
  const k = kp.kernel;
  const t = options.useTuned === false ? undefined : tunedForBuild(k, target, options);
  if (!t) return plain();
  const c = t.choice;
  const from = `${choiceKey(c)} (tuned on ${t.entry.device}, ${t.entry.tunedAt.slice(0, 10)})`;
  const ir = choiceIR(k, file, c, kp);
  if (c.target === "cuda") {
    if (c.arch !== options.arch)
      return plain(`${k.name}: tuned for ${c.arch}, not ${options.arch}: default config`);
    const problems = cudaProblems(ir, c.arch as CudaArch);
    if (problems.length)
      return plain(`${k.name}: tuned config ${from} unusable (${problems[0]}): default config`);
    return { ir, tuned: t.entry, note: `${k.name}: ${from}` };
  }
  if (c.target === "wgsl" && options.wgslLimits) {
    const problems = wgslProblems(ir, options.wgslLimits, { tiling: c.tiling, storage: options.storage });
    if (problems.length)
      return plain(
        `${k.name}: tuned config ${from} exceeds the build's limits (${problems[0]}): default config`,
      );
  }
  if (c.target !== "wgsl") return plain();
  return {
    ir,
    tiling: c.tiling,
    subgroups: !!options.subgroups && c.subgroups,
    tuned: t.entry,
    note: `${k.name}: ${from}`,
  };
}
