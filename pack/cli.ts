// `tilec build FILE -o DIR`: the build-step package (pack/build.ts) from the command line.
import type { CudaArch } from "../backends/cuda/target.ts";
import { EXIT_DIAGNOSTICS, EXIT_OK, loadSpec, report } from "../cli/load.ts";
import { buildPackage } from "./build.ts";

export interface BuildCommandOptions {
  readonly out: string;
  readonly arch: CudaArch;
  readonly kernel?: string;
  readonly target: "cuda" | "wgsl" | "all";
  readonly subgroups?: boolean;
  /** commander's --no-tuned / --no-nvcc. */
  readonly tuned?: boolean;
  readonly nvcc?: boolean;
  readonly device?: string;
  readonly runtimeImport?: string;
}

export async function buildCommand(file: string, opts: BuildCommandOptions): Promise<number> {
  const loaded = loadSpec(file);
  if (report(loaded) || !loaded.spec) return EXIT_DIAGNOSTICS;
  const r = await buildPackage(loaded.spec, file, opts.out, {
    arch: opts.arch,
    kernel: opts.kernel,
    targets: opts.target === "all" ? undefined : [opts.target],
    subgroups: opts.subgroups,
    useTuned: opts.tuned,
    nvcc: opts.nvcc,
    device: opts.device,
    runtimeImport: opts.runtimeImport,
  });
  const lines = [
    ...r.notes,
    ...r.written.sort().map((f) => `wrote ${opts.out}/${f}`),
    ...r.removed.map((f) => `removed ${opts.out}/${f}`),
    `${opts.out}: ${r.written.length} written, ${r.unchanged.length} unchanged, ${r.removed.length} removed` +
      (r.compiled.length ? `; nvcc compiled ${r.compiled.join(", ")}` : ""),
  ];
  process.stdout.write(lines.join("\n") + "\n");
  return EXIT_OK;
}
