// `tilec tune`'s engine: opens the target's device, builds each kernel's space, tunes the kernels one
// after another (one progress total over all of them) and stores the winners in the cache.
import { archFor } from "../runtime/attention.ts";
import type { CheckedSpec, KernelSpec } from "../compiler/check.ts";
import { lowerKernel } from "../compiler/lower.ts";
import { planKernel } from "../compiler/pipeline.ts";
import { CudaDevice } from "../runtime/cuda/device.ts";
import { TuneCache, type DeviceIdentity } from "./cache.ts";
import { selectForTiming, type Candidate } from "./candidates.ts";
import type { TuneTarget } from "./choice.ts";
import { cudaCandidates } from "./cudaSpace.ts";
import { cudaIdentity } from "./apply.ts";
import { cudaDeviceLimits, CudaTuneSession } from "./cudaSession.ts";
import {
  entryOf,
  tuneKernel,
  type CandidateResult,
  type KernelTuneResult,
  type TuneSession,
} from "./tuner.ts";

export interface TuneSpecOptions {
  readonly target: TuneTarget;
  readonly kernel?: string;
  readonly top?: number;
  readonly reps?: number;
  readonly warmup?: number;
  readonly confirmRounds?: number;
  /** Winner cache (default: TuneCache's default path); `save: false` leaves it untouched. */
  readonly cache?: TuneCache;
  readonly save?: boolean;
  /** WGSL: run on SwiftShader (CPU Vulkan) instead of the system's GPU; heads to run at. */
  readonly swiftshader?: boolean;
  readonly heads?: number;
  /** NVRTC cache directory (tests). */
  readonly nvrtcCacheDir?: string;
  readonly progress?: ProgressSink;
}

export interface ProgressSink {
  start(total: number): void;
  tick(done: number, label: string): void;
  stop(): void;
}

export interface TuneReport {
  readonly target: TuneTarget;
  readonly specFile: string;
  readonly identity: DeviceIdentity;
  readonly date: string;
  readonly kernels: readonly KernelTuneResult[];
  /** Run-wide remarks (e.g. heads reduced to fit the adapter). */
  readonly notes: readonly string[];
  readonly cachePath?: string;
}

interface Prepared {
  readonly kernel: KernelSpec;
  readonly candidates: Candidate[];
  readonly flops: number;
  readonly session: () => TuneSession<unknown>;
}

export async function tuneSpec(
  spec: CheckedSpec,
  file: string,
  options: TuneSpecOptions,
): Promise<TuneReport> {
  const kernels = [...spec.kernels.values()].filter(
    (k) => (!options.kernel || k.name === options.kernel) && k.targets.includes(options.target),
  );
  if (!kernels.length)
    throw new Error(
      options.kernel
        ? `kernel '${options.kernel}' does not exist or does not list target ${options.target}`
        : `no kernel of ${file} lists target ${options.target}`,
    );
  const notes: string[] = [];
  let identity: DeviceIdentity;
  let prepared: Prepared[];
  let close = () => {};
  if (options.target === "cuda") {
    const device = CudaDevice.open();
    identity = cudaIdentity(device);
    const limits = cudaDeviceLimits(device);
    const arch = archFor(device.arch);
    prepared = kernels.map((kernel) => {
      const base = planKernel(kernel);
      // The configuration compile() picks without a winner: the default every winner is measured against.
      const baseIR = lowerKernel(base, file, undefined, device.arch === "sm_90" ? arch : undefined);
      return {
        kernel,
        candidates: cudaCandidates(base, baseIR, limits, { archs: [arch] }),
        flops: base.stats.flops,
        session: () => new CudaTuneSession(spec, kernel, device, options.nvrtcCacheDir),
      };
    });
  } else {
    const { openNodeDevice, findSwiftShader } = await import("../runtime/webgpu/node.ts");
    const { wgslCandidates } = await import("./wgslSpace.ts");
    const { WgslTuneSession, wgslIdentity, wgslTuningKernel } = await import("./wgslSession.ts");
    const icd = options.swiftshader ? findSwiftShader() : undefined;
    if (options.swiftshader && !icd)
      throw new Error("SwiftShader not found (apt-get install chromium-common)");
    const device = await openNodeDevice({ backend: "vulkan", icd, powerPreference: "high-performance" });
    close = () => device.destroy();
    identity = wgslIdentity(device);
    prepared = kernels.map((original) => {
      const kernel = wgslTuningKernel(original, device, options.heads);
      if (kernel.layout.heads !== original.layout.heads)
        notes.push(
          `${original.name}: timed at ${kernel.layout.heads} of ${original.layout.heads} heads (the adapter's storage-buffer limit, or --heads)`,
        );
      const base = planKernel(kernel);
      return {
        kernel,
        candidates: wgslCandidates(base, lowerKernel(base, file), device.caps),
        flops: base.stats.flops,
        session: () => new WgslTuneSession(kernel, file, device),
      };
    });
  }
  const total = prepared.reduce((n, p) => n + selectForTiming(p.candidates, options.top).length, 0);
  options.progress?.start(total);
  const results: KernelTuneResult[] = [];
  let done = 0;
  const cache = options.cache ?? new TuneCache();
  try {
    for (const p of prepared) {
      const session = p.session();
      try {
        const r = await tuneKernel(p.kernel, file, p.flops, identity, p.candidates, session, {
          top: options.top,
          reps: options.reps ?? 10,
          warmup: options.warmup ?? 2,
          confirmRounds: options.confirmRounds ?? 3,
          concurrency: 8,
          onCandidate: (c: CandidateResult) => options.progress?.tick(++done, `${p.kernel.name} ${c.key}`),
        });
        results.push(r);
        const entry = entryOf(r);
        if (entry && options.save !== false) cache.store(entry);
      } finally {
        session.dispose();
      }
    }
  } finally {
    options.progress?.stop();
    close();
  }
  return {
    target: options.target,
    specFile: file,
    identity,
    date: new Date().toISOString(),
    kernels: results,
    notes,
    cachePath: options.save === false ? undefined : cache.path,
  };
}
