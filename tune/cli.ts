// `tilec tune FILE [--kernel NAME] --target cuda|wgsl [--top N] [--json]`: the autotuner from the
// command line, with a progress bar (candidates done / total, elapsed, ETA) on stderr.
import cliProgress from "cli-progress";
import { EXIT_DIAGNOSTICS, EXIT_OK, UsageError, loadSpec, report } from "../cli/load.ts";
import { available } from "../runtime/cuda/index.ts";
import { WebGpuError } from "../runtime/webgpu/device.ts";
import { TuneCache } from "./cache.ts";
import type { TuneTarget } from "./choice.ts";
import { renderReport, reportJson } from "./report.ts";
import { tuneSpec, type ProgressSink } from "./run.ts";

export interface TuneCommandOptions {
  readonly target: TuneTarget;
  readonly kernel?: string;
  readonly json?: boolean;
  readonly top?: string;
  readonly reps?: string;
  readonly warmup?: string;
  readonly heads?: string;
  readonly swiftshader?: boolean;
  /** commander's --no-progress / --no-save. */
  readonly progress?: boolean;
  readonly save?: boolean;
}

function positive(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`--${name} takes a positive integer, not '${v}'`);
  return n;
}

function progressBar(): ProgressSink {
  const bar = new cliProgress.SingleBar(
    {
      format:
        "tune |{bar}| {value}/{total} candidates | {duration_formatted} elapsed | ETA {eta_formatted} | {label}",
      stream: process.stderr,
      hideCursor: true,
      etaBuffer: 8,
      // Logs (no TTY) still get a line every few seconds.
      noTTYOutput: true,
      notTTYSchedule: 3000,
    },
    cliProgress.Presets.shades_classic,
  );
  return {
    start: (total) => bar.start(total, 0, { label: "compiling" }),
    tick: (done, label) => bar.update(done, { label }),
    stop: () => bar.stop(),
  };
}

export async function tuneCommand(file: string, opts: TuneCommandOptions): Promise<number> {
  const top = positive("top", opts.top);
  const reps = positive("reps", opts.reps);
  const warmup = positive("warmup", opts.warmup);
  const heads = positive("heads", opts.heads);
  const loaded = loadSpec(file);
  if (report(loaded) || !loaded.spec) return EXIT_DIAGNOSTICS;
  if (opts.kernel && !loaded.spec.kernels.has(opts.kernel))
    throw new UsageError(
      `${file} has no kernel '${opts.kernel}'; its kernels are: ${[...loaded.spec.kernels.keys()].join(", ")}`,
    );
  if (opts.target === "cuda") {
    const a = available();
    if (!a.ok) throw new UsageError(`cannot tune for CUDA on this machine: ${a.reason}`);
  }
  let result;
  try {
    result = await tuneSpec(loaded.spec, file, {
      target: opts.target,
      kernel: opts.kernel,
      top,
      reps,
      warmup,
      heads,
      swiftshader: opts.swiftshader,
      cache: new TuneCache(),
      save: opts.save !== false,
      progress: opts.progress === false ? undefined : progressBar(),
    });
  } catch (e) {
    // No adapter / device: say so like a usage error, without a stack trace.
    if (e instanceof WebGpuError)
      throw new UsageError(`cannot tune for WebGPU on this machine: ${e.message}`);
    throw e;
  }
  process.stdout.write(opts.json ? reportJson(result) : renderReport(result));
  return EXIT_OK;
}
