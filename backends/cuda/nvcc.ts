// Ahead-of-time compilation with nvcc, where it is installed: .ptx and .cubin for a build step, and
// ptxas's resource report (registers, spills) for CI. No GPU is needed for any of this.
import { execFileSync, spawnSync } from "node:child_process";

export interface PtxasEntry {
  readonly entry: string;
  readonly registers: number;
  readonly spillStores: number;
  readonly spillLoads: number;
  readonly stackFrame: number;
}

/** The first entry's numbers (single-kernel modules), and every entry's (backward modules). */
export interface PtxasReport extends Omit<PtxasEntry, "entry"> {
  readonly entries: readonly PtxasEntry[];
  readonly log: string;
}

let nvccPath: string | null | undefined;

/** Path of nvcc, or null (cached). Honors $NVCC, then $PATH, then /usr/local/cuda/bin. */
export function findNvcc(): string | null {
  if (nvccPath !== undefined) return nvccPath;
  const candidates = [process.env.NVCC, "nvcc", "/usr/local/cuda/bin/nvcc"].filter((c): c is string => !!c);
  nvccPath = candidates.find((c) => spawnSync(c, ["--version"], { stdio: "ignore" }).status === 0) ?? null;
  return nvccPath;
}

export const NVCC_FLAGS = ["-O3", "-std=c++17", "-lineinfo"];

/** Compiles `cuFile` to `out` (`.ptx` or `.cubin` by extension) and returns ptxas's report for cubins. */
export function nvccCompile(cuFile: string, out: string, arch: string): PtxasReport | undefined {
  const nvcc = findNvcc();
  if (!nvcc) throw new Error("nvcc is not installed (set $NVCC or put it on $PATH)");
  const kind = out.endsWith(".ptx") ? "-ptx" : "-cubin";
  const args = [
    ...NVCC_FLAGS,
    ...archFlags(arch, kind),
    kind,
    ...(kind === "-cubin" ? ["-Xptxas", "-v"] : []),
    cuFile,
    "-o",
    out,
  ];
  const r = spawnSync(nvcc, args, { encoding: "utf8" });
  const log = `${r.stdout ?? ""}${r.stderr ?? ""}`;
  if (r.status !== 0) throw new Error(`nvcc failed on ${cuFile} (${arch}):\n${log}`);
  return kind === "-cubin" ? parsePtxas(log) : undefined;
}

/**
 * -arch=sm_XX, except for architecture-specific targets (sm_90a): nvcc 13.0's -arch=sm_90a shorthand
 * also runs a plain sm_90 pass that rejects wgmma, the -gencode form does not.
 */
export function archFlags(arch: string, kind: "-ptx" | "-cubin"): string[] {
  const m = /^sm_(\d+a)$/.exec(arch);
  if (!m) return [`-arch=${arch}`];
  return [`-gencode=arch=compute_${m[1]},code=${kind === "-ptx" ? "compute" : "sm"}_${m[1]}`];
}

export function parsePtxas(log: string): PtxasReport {
  const numbers = (text: string) => {
    const num = (re: RegExp) => Number(re.exec(text)?.[1] ?? NaN);
    return {
      registers: num(/Used (\d+) registers/),
      spillStores: num(/(\d+) bytes spill stores/),
      spillLoads: num(/(\d+) bytes spill loads/),
      stackFrame: num(/(\d+) bytes stack frame/),
    };
  };
  const parts = log.split(/Compiling entry function '/).slice(1);
  const entries = parts.map((p) => ({ entry: p.slice(0, p.indexOf("'")), ...numbers(p) }));
  return { ...numbers(log), entries, log };
}

export function nvccVersion(): string | undefined {
  const nvcc = findNvcc();
  if (!nvcc) return undefined;
  return /release ([\d.]+)/.exec(execFileSync(nvcc, ["--version"], { encoding: "utf8" }))?.[1];
}
