// Using the winners: what the runtime's compile() and `tilec emit` / `tilec build` ask the cache.
// Never throws: a missing, damaged or foreign cache means the defaults.
import type { CheckedSpec, KernelSpec } from "../compiler/check.ts";
import type { KernelConfig } from "../compiler/lower.ts";
import { compileSpec } from "../compiler/pipeline.ts";
import type { CudaDevice } from "../runtime/cuda/device.ts";
import { nvrtcVersion } from "../runtime/cuda/nvrtc.ts";
import { TuneCache, type DeviceIdentity, type TuneEntry } from "./cache.ts";
import type { CudaChoice, TuneChoice, TuneTarget } from "./choice.ts";

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
