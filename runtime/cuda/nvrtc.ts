// NVRTC: CUDA C++ source → cubin/PTX at run time. Needs libnvrtc but no GPU.
import { loadAddon, tryLoadAddon, type NvrtcRawOutput } from "./addon.ts";

export interface NvrtcOptions {
  /** Target architecture: a real one ("sm_90", "sm_90a") yields a cubin, a virtual one ("compute_90") PTX. Default "sm_90". */
  arch?: string;
  /** File name used in diagnostics. Default "tilec_kernel.cu". */
  name?: string;
  /** Extra NVRTC options, e.g. ["-I/usr/local/cuda/include", "-lineinfo", "--use_fast_math"]. */
  extraOptions?: readonly string[];
}

export interface NvrtcOutput {
  /** NUL-terminated PTX, when produced. */
  ptx?: Uint8Array;
  /** ELF cubin, when compiling for a real architecture. */
  cubin?: Uint8Array;
  /** Compiler log (warnings), possibly empty. */
  log: string;
}

/** Thrown on a failed compilation; `log` is the full compiler output (also in the message). */
export interface NvrtcError extends Error {
  code: string;
  call: string;
  log: string;
}

export const DEFAULT_ARCH = "sm_90";
export const DEFAULT_NAME = "tilec_kernel.cu";

/** The full NVRTC option list for `opts` (what the cache key hashes too). */
export function nvrtcOptionList(opts: NvrtcOptions = {}): string[] {
  return [`-arch=${opts.arch ?? DEFAULT_ARCH}`, ...(opts.extraOptions ?? [])];
}

function clean(raw: NvrtcRawOutput): NvrtcOutput {
  const out: NvrtcOutput = { log: raw.log };
  if (raw.ptx) out.ptx = raw.ptx;
  if (raw.cubin) out.cubin = raw.cubin;
  return out;
}

/** Compiles synchronously; throws an {@link NvrtcError} carrying the log on failure. */
export function compileNvrtc(source: string, opts: NvrtcOptions = {}): NvrtcOutput {
  return clean(loadAddon().nvrtcCompile(source, opts.name ?? DEFAULT_NAME, nvrtcOptionList(opts)));
}

/** Compiles on the libuv thread pool, so several variants compile in parallel. */
export async function compileNvrtcAsync(source: string, opts: NvrtcOptions = {}): Promise<NvrtcOutput> {
  return clean(await loadAddon().nvrtcCompileAsync(source, opts.name ?? DEFAULT_NAME, nvrtcOptionList(opts)));
}

/** e.g. "12.8"; throws if NVRTC can't be loaded. */
export function nvrtcVersion(): string {
  const v = loadAddon().nvrtcVersion();
  return `${v.major}.${v.minor}`;
}

/** Whether NVRTC can be loaded; never throws. */
export function nvrtcAvailable(): { ok: boolean; reason?: string; path?: string } {
  const r = tryLoadAddon();
  if ("error" in r) return { ok: false, reason: r.error };
  try {
    return r.addon.nvrtcAvailable();
  } catch (e) {
    return { ok: false, reason: e instanceof Error ? e.message : String(e) };
  }
}

/** PTX bytes as text, without the NUL terminator. */
export function ptxText(ptx: Uint8Array): string {
  const end = ptx.at(-1) === 0 ? ptx.length - 1 : ptx.length;
  return new TextDecoder().decode(ptx.subarray(0, end));
}
