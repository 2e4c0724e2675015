// The autotuner's winner cache: one JSON file of winning choices, keyed by what makes a timing
// valid — the device, its driver (CUDA) or adapter (WebGPU), the compiler that built the kernel
// (NVRTC / Dawn version) and the spec kernel's canonical hash. The runtime's compile() and `tilec
// emit` / `tilec build` read it; `tilec tune` writes it.
//
// Location: $TILEC_CACHE_DIR/tune.json, else $XDG_CACHE_HOME/tilec/tune.json, else
// ~/.cache/tilec/tune.json. Writes go to a temp file that is renamed over the old one, so readers
// never see a partial file; concurrent tuners may lose each other's entries, never corrupt them.
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import type { TuneChoice, TuneTarget } from "./choice.ts";

/** Bump when the meaning of a stored choice changes; older entries are then ignored. */
export const TUNE_CACHE_FORMAT = 1;

/** What a timing is valid for, besides the kernel. */
export interface DeviceIdentity {
  readonly target: TuneTarget;
  /** e.g. "NVIDIA H100 80GB HBM3", or a WebGPU adapter's vendor/architecture/device. */
  readonly device: string;
  /** CUDA driver version, or the WebGPU adapter's description (driver). */
  readonly driver: string;
  /** e.g. "nvrtc 13.0", or "dawn (webgpu 0.6.2)". */
  readonly compiler: string;
}

export interface TuneEntry extends DeviceIdentity {
  readonly specHash: string;
  /** The kernel's name and spec file when it was tuned (informational: the hash is the key). */
  readonly kernel: string;
  readonly specFile: string;
  readonly choice: TuneChoice;
  /** Median ms of the winner and of the default configuration, measured in the same run (null: the default failed). */
  readonly ms: number;
  readonly defaultMs: number | null;
  /** How many candidates were timed / considered. */
  readonly timed: number;
  readonly considered: number;
  /** ISO date of the run. */
  readonly tunedAt: string;
}

interface CacheFile {
  readonly format: number;
  readonly entries: Record<string, TuneEntry>;
}

export function defaultTuneCachePath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.TILEC_CACHE_DIR) return join(env.TILEC_CACHE_DIR, "tune.json");
  return join(env.XDG_CACHE_HOME || join(homedir(), ".cache"), "tilec", "tune.json");
}

export function tuneCacheKey(id: DeviceIdentity, specHash: string): string {
  // JSON keeps field boundaries unambiguous.
  const text = JSON.stringify([TUNE_CACHE_FORMAT, id.target, id.device, id.driver, id.compiler, specHash]);
  return createHash("sha256").update(text).digest("hex");
}

export class TuneCache {
  constructor(readonly path: string = defaultTuneCachePath()) {}

  /** All entries; a missing, unreadable or older-format file reads as empty. */
  entries(): TuneEntry[] {
    return Object.values(this.read().entries);
  }

  /** The winner for this kernel on this device, compiler and driver, if one was tuned. */
  lookup(id: DeviceIdentity, specHash: string): TuneEntry | undefined {
    return this.read().entries[tuneCacheKey(id, specHash)];
  }

  /**
   * Winners for a kernel hash and target on any device, newest first: what `tilec emit` and `tilec
   * build` (which run without a device) can use. `device` keeps entries whose device name contains it.
   */
  find(specHash: string, target: TuneTarget, device?: string): TuneEntry[] {
    const needle = device?.toLowerCase();
    return this.entries()
      .filter((e) => e.specHash === specHash && e.target === target)
      .filter((e) => !needle || e.device.toLowerCase().includes(needle))
      .sort((a, b) => b.tunedAt.localeCompare(a.tunedAt));
  }

  /** Adds or replaces entries (re-reading the file first, so entries of other runs survive). */
  store(...entries: TuneEntry[]): void {
    const current = this.read();
    const next: CacheFile = { format: TUNE_CACHE_FORMAT, entries: { ...current.entries } };
    for (const e of entries) next.entries[tuneCacheKey(e, e.specHash)] = e;
    mkdirSync(dirname(this.path), { recursive: true });
    const tmp = `${this.path}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`;
    try {
      writeFileSync(tmp, JSON.stringify(next, null, 2) + "\n");
      renameSync(tmp, this.path);
    } catch (e) {
      rmSync(tmp, { force: true });
      throw e;
    }
  }

  private read(): CacheFile {
    let text: string;
    try {
      text = readFileSync(this.path, "utf8");
    } catch {
      return { format: TUNE_CACHE_FORMAT, entries: {} };
    }
    try {
      const parsed = JSON.parse(text) as Partial<CacheFile>;
      if (parsed.format !== TUNE_CACHE_FORMAT || typeof parsed.entries !== "object" || !parsed.entries)
        return { format: TUNE_CACHE_FORMAT, entries: {} };
      return parsed as CacheFile;
    } catch {
      // A damaged cache is a cache miss, never an error: the defaults still work.
      return { format: TUNE_CACHE_FORMAT, entries: {} };
    }
  }
}
