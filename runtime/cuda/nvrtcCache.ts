// Disk cache for NVRTC output. Compiling an attention kernel takes seconds;
// the autotuner and the tests compile the same sources over and over.
//
// Key: sha256 over (format version, source, arch, options, NVRTC version).
// Location: $TILEC_CACHE_DIR/nvrtc, else $XDG_CACHE_HOME/tilec/nvrtc, else
// ~/.cache/tilec/nvrtc. Files: <key>.cubin (or <key>.ptx for virtual
// architectures), written to a temp file and renamed so that concurrent
// processes never read a partial file.
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import {
  compileNvrtc,
  compileNvrtcAsync,
  DEFAULT_ARCH,
  nvrtcOptionList,
  nvrtcVersion,
  type NvrtcOptions,
  type NvrtcOutput,
} from "./nvrtc.ts";

/** Bump when the stored format or the option list changes meaning. */
const CACHE_FORMAT = 1;

export interface CacheKeyInput {
  source: string;
  arch: string;
  options: readonly string[];
  nvrtcVersion: string;
}

export function nvrtcCacheKey(k: CacheKeyInput): string {
  // JSON keeps field boundaries unambiguous ("ab"+"c" vs "a"+"bc").
  const text = JSON.stringify([CACHE_FORMAT, k.source, k.arch, k.options, k.nvrtcVersion]);
  return createHash("sha256").update(text).digest("hex");
}

export function defaultNvrtcCacheDir(): string {
  const env = process.env;
  if (env.TILEC_CACHE_DIR) return join(env.TILEC_CACHE_DIR, "nvrtc");
  const base = env.XDG_CACHE_HOME || join(homedir(), ".cache");
  return join(base, "tilec", "nvrtc");
}

export type CachedBinary = { cubin: Uint8Array; ptx?: undefined } | { ptx: Uint8Array; cubin?: undefined };

export class NvrtcCache {
  readonly dir: string;
  constructor(dir: string = defaultNvrtcCacheDir()) {
    this.dir = dir;
  }

  pathFor(key: string, kind: "cubin" | "ptx"): string {
    return join(this.dir, `${key}.${kind}`);
  }

  /** The stored binary for `key`, or undefined (missing or empty files are misses). */
  read(key: string): CachedBinary | undefined {
    for (const kind of ["cubin", "ptx"] as const) {
      let data: Uint8Array;
      try {
        data = readFileSync(this.pathFor(key, kind));
      } catch {
        continue;
      }
      if (data.length > 0) return kind === "cubin" ? { cubin: data } : { ptx: data };
    }
    return undefined;
  }

  /** Stores the cubin if there is one, else the PTX. Atomic: temp file + rename. */
  write(key: string, out: NvrtcOutput): void {
    const kind = out.cubin ? "cubin" : "ptx";
    const data = out.cubin ?? out.ptx;
    if (!data) throw new Error("NVRTC output has neither cubin nor PTX");
    mkdirSync(this.dir, { recursive: true });
    const final = this.pathFor(key, kind);
    const tmp = `${final}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`;
    try {
      writeFileSync(tmp, data);
      renameSync(tmp, final);
    } catch (e) {
      rmSync(tmp, { force: true });
      throw e;
    }
  }
}

export interface CachedCompileOptions extends NvrtcOptions {
  /** Cache directory (default {@link defaultNvrtcCacheDir}). */
  cacheDir?: string;
}

export interface CachedOutput extends NvrtcOutput {
  /** True when served from disk (compilation skipped; `log` is then empty). */
  cached: boolean;
  key: string;
}

/** Replaceable pieces, for tests and for callers that compile elsewhere. */
export interface CompileDeps {
  compile?: (source: string, opts: NvrtcOptions) => NvrtcOutput;
  compileAsync?: (source: string, opts: NvrtcOptions) => Promise<NvrtcOutput>;
  version?: () => string;
}

function keyFor(source: string, opts: NvrtcOptions, version: string): string {
  return nvrtcCacheKey({
    source,
    arch: opts.arch ?? DEFAULT_ARCH,
    options: nvrtcOptionList(opts),
    nvrtcVersion: version,
  });
}

/** {@link compileNvrtc} with the disk cache in front. */
export function compileNvrtcCached(
  source: string,
  opts: CachedCompileOptions = {},
  deps: CompileDeps = {},
): CachedOutput {
  const cache = new NvrtcCache(opts.cacheDir);
  const key = keyFor(source, opts, (deps.version ?? nvrtcVersion)());
  const hit = cache.read(key);
  if (hit) return { ...hit, log: "", cached: true, key };
  const out = (deps.compile ?? compileNvrtc)(source, opts);
  cache.write(key, out);
  return { ...out, cached: false, key };
}

/** {@link compileNvrtcAsync} with the disk cache in front. */
export async function compileNvrtcCachedAsync(
  source: string,
  opts: CachedCompileOptions = {},
  deps: CompileDeps = {},
): Promise<CachedOutput> {
  const cache = new NvrtcCache(opts.cacheDir);
  const key = keyFor(source, opts, (deps.version ?? nvrtcVersion)());
  const hit = cache.read(key);
  if (hit) return { ...hit, log: "", cached: true, key };
  const out = await (deps.compileAsync ?? compileNvrtcAsync)(source, opts);
  cache.write(key, out);
  return { ...out, cached: false, key };
}
