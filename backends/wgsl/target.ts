// What a WebGPU adapter offers and what a WGSL kernel configuration costs, checked before emitting so
// a configuration that cannot run is rejected with the limit it breaks, not with a pipeline error.
// Pure data and arithmetic: this file runs in browsers as well as in Node.
import type { KernelIR } from "../../compiler/lower.ts";

/** The adapter limits the kernel depends on (names as in GPUSupportedLimits). */
export interface WgslLimits {
  readonly maxComputeWorkgroupStorageSize: number;
  readonly maxComputeInvocationsPerWorkgroup: number;
  readonly maxComputeWorkgroupSizeX: number;
  readonly maxStorageBuffersPerShaderStage: number;
  readonly maxComputeWorkgroupsPerDimension: number;
  readonly maxStorageBufferBindingSize: number;
}

/** The WebGPU specification's defaults: what every adapter offers without asking for more. */
export const DEFAULT_LIMITS: WgslLimits = {
  maxComputeWorkgroupStorageSize: 16384,
  maxComputeInvocationsPerWorkgroup: 256,
  maxComputeWorkgroupSizeX: 256,
  maxStorageBuffersPerShaderStage: 8,
  maxComputeWorkgroupsPerDimension: 65535,
  maxStorageBufferBindingSize: 134217728,
};

/** What the device offers: `shader-f16` and `subgroups` features, and its limits. */
export interface WgslCaps {
  readonly f16: boolean;
  readonly subgroups: boolean;
  readonly limits: WgslLimits;
}

/** Element type of Q, K, V and O in device memory (and of the Q/K/V workgroup tiles). */
export type WgslStorage = "f32" | "f16";

/**
 * How one workgroup walks its (blockQ × blockKv) plan blocks. `threads` = tr × tc invocations; the
 * invocation (r, c) owns query rows r + tr·i (i < rq) of a qt-row sub-tile and, per kc-key chunk,
 * scores of keys c + tc·j (j < rk) and output columns (vec4) c + tc·j (j < head_dim / 4 / tc).
 * The tc invocations of a row are consecutive, so a row reduction stays inside a subgroup when the
 * subgroup is at least tc wide.
 */
export interface WgslTiling {
  readonly threads: number;
  readonly tc: number;
  readonly tr: number;
  readonly rq: number;
  readonly rk: number;
  /** Query rows per sub-tile (tr × rq); divides blockQ. */
  readonly qt: number;
  /** Keys per chunk (tc × rk); divides blockKv. */
  readonly kc: number;
}

/** Storage buffers the kernel binds: q, k, v, out, lse and the plan's CSR lists (one buffer). */
export const STORAGE_BUFFERS = 6;

/** f16 storage for fp16 specs when the device offers shader-f16; bf16 and fp32 are carried as f32. */
export function defaultStorage(ir: Pick<KernelIR, "dtype">, caps: Pick<WgslCaps, "f16">): WgslStorage {
  return ir.dtype === "fp16" && caps.f16 ? "f16" : "f32";
}

/** vec4 slots per workgroup tile row of Q and K: padded by one when even, so the rows that one
 * subgroup reads together start in different memory banks. */
export function paddedRow(headDim: number): number {
  const d4 = headDim / 4;
  return d4 % 2 === 0 ? d4 + 1 : d4;
}

/** Workgroup memory of a tiling, in bytes: Q, K, V tiles, the score tile P and the reduction scratch. */
export function workgroupBytes(headDim: number, t: WgslTiling, storage: WgslStorage): number {
  const v4 = storage === "f16" ? 8 : 16;
  const d4p = paddedRow(headDim);
  const q = t.qt * d4p * v4;
  const k = t.kc * d4p * v4;
  const v = t.kc * (headDim / 4) * v4;
  const p = t.qt * (t.kc + 4) * 4;
  const red = t.qt * t.tc * 4;
  return q + k + v + p + red + 8; // + the subgroup-layout flag (atomic and copy)
}

/** Output accumulators (f32) one invocation holds: more would spill on most GPUs. */
const MAX_ACC = 64;

/** Every tiling that fits the head dim, the block sizes and the limits, best first. */
export function tilings(
  ir: Pick<KernelIR, "headDim" | "blockQ" | "blockKv" | "threads">,
  limits: WgslLimits,
  storage: WgslStorage,
): WgslTiling[] {
  const d4 = ir.headDim / 4;
  if (!Number.isInteger(d4)) return [];
  const maxThreads = Math.min(limits.maxComputeInvocationsPerWorkgroup, limits.maxComputeWorkgroupSizeX);
  const out: { t: WgslTiling; score: number }[] = [];
  for (const threads of [256, 128, 64, 32]) {
    if (threads > maxThreads) continue;
    for (const tc of [4, 8, 16, 2, 32]) {
      if (d4 % tc !== 0 || threads % tc !== 0) continue;
      const tr = threads / tc;
      const dv = d4 / tc;
      for (const rq of [1, 2, 4, 8]) {
        for (const rk of [1, 2, 4, 8]) {
          const t = { threads, tc, tr, rq, rk, qt: tr * rq, kc: tc * rk };
          if (ir.blockQ % t.qt !== 0 || ir.blockKv % t.kc !== 0 || t.kc % 4 !== 0) continue;
          if (rq * dv * 4 > MAX_ACC || rq * rk > 16) continue;
          if (workgroupBytes(ir.headDim, t, storage) > limits.maxComputeWorkgroupStorageSize) continue;
          // K/V are re-read once per query sub-tile (tall sub-tiles), each chunk pays three barriers
          // and a row reduction (long chunks), and FMAs per workgroup-memory load grow with the
          // register tiles (rq × rk scores, rq × dv outputs); then the IR config's invocation count.
          const score =
            3 * Math.log2(t.qt) +
            3 * Math.log2(t.kc) +
            2 * ((rq * rk) / (rq + rk) + (rq * dv) / (rq + dv)) -
            3 * Math.abs(Math.log2(threads / ir.threads));
          out.push({ t, score });
        }
      }
    }
  }
  return out.sort((a, b) => b.score - a.score).map((x) => x.t);
}

export function chooseTiling(
  ir: Pick<KernelIR, "headDim" | "blockQ" | "blockKv" | "threads">,
  limits: WgslLimits,
  storage: WgslStorage,
): WgslTiling | undefined {
  return tilings(ir, limits, storage)[0];
}

/** Reasons this kernel cannot be built with these limits (and this tiling); empty when it can. */
export function configProblems(
  ir: KernelIR,
  limits: WgslLimits,
  options: { storage?: WgslStorage; tiling?: WgslTiling } = {},
): string[] {
  const out: string[] = [];
  const storage = options.storage ?? (ir.dtype === "fp16" ? "f16" : "f32");
  const d = ir.headDim;
  if (d % 4 !== 0) out.push(`head_dim ${d} is not a multiple of 4 (vec4 loads)`);
  if (ir.blockKv % 4 !== 0) out.push(`block ${ir.blockKv} keys is not a multiple of 4 (vec4 score rows)`);
  if (ir.heads % ir.kvHeads !== 0) out.push(`kv_heads ${ir.kvHeads} does not divide heads ${ir.heads}`);
  if (STORAGE_BUFFERS > limits.maxStorageBuffersPerShaderStage)
    out.push(
      `needs ${STORAGE_BUFFERS} storage buffers, more than maxStorageBuffersPerShaderStage (${limits.maxStorageBuffersPerShaderStage})`,
    );
  ir.grid.forEach((g, i) => {
    if (g > limits.maxComputeWorkgroupsPerDimension)
      out.push(
        `dispatch dimension ${"xyz"[i]} is ${g} workgroups, more than maxComputeWorkgroupsPerDimension (${limits.maxComputeWorkgroupsPerDimension})`,
      );
  });
  if (out.length) return out;
  const t = options.tiling;
  if (t) {
    const maxThreads = Math.min(limits.maxComputeInvocationsPerWorkgroup, limits.maxComputeWorkgroupSizeX);
    if (t.threads > maxThreads)
      out.push(
        `${t.threads} invocations exceed maxComputeInvocationsPerWorkgroup/maxComputeWorkgroupSizeX (${maxThreads})`,
      );
    if (t.tr * t.tc !== t.threads || t.tr * t.rq !== t.qt || t.tc * t.rk !== t.kc)
      out.push(`tiling ${JSON.stringify(t)} is inconsistent (threads = tr·tc, qt = tr·rq, kc = tc·rk)`);
    if (ir.blockQ % t.qt !== 0) out.push(`a ${t.qt}-row sub-tile does not divide block ${ir.blockQ}`);
    if (ir.blockKv % t.kc !== 0 || t.kc % 4 !== 0)
      out.push(`a ${t.kc}-key chunk is not a multiple of 4 dividing block ${ir.blockKv}`);
    if ((d / 4) % t.tc !== 0) out.push(`${t.tc} column invocations do not divide ${d / 4} vec4 columns`);
    const need = workgroupBytes(d, t, storage);
    if (need > limits.maxComputeWorkgroupStorageSize)
      out.push(
        `needs ${need} bytes of workgroup memory, more than maxComputeWorkgroupStorageSize (${limits.maxComputeWorkgroupStorageSize})`,
      );
  } else if (!chooseTiling(ir, limits, storage)) {
    const smallest = { threads: 32, tc: 4, tr: 8, rq: 1, rk: 1, qt: 8, kc: 4 };
    const need = workgroupBytes(d, smallest, storage);
    out.push(
      need > limits.maxComputeWorkgroupStorageSize
        ? `no tiling fits: even ${smallest.qt} rows × ${smallest.kc} keys need ${need} bytes of workgroup memory, more than maxComputeWorkgroupStorageSize (${limits.maxComputeWorkgroupStorageSize})`
        : `no tiling fits: no sub-tile of at most maxComputeInvocationsPerWorkgroup (${limits.maxComputeInvocationsPerWorkgroup}) invocations divides block ${ir.blockQ} × ${ir.blockKv} and head_dim ${d} within maxComputeWorkgroupStorageSize (${limits.maxComputeWorkgroupStorageSize})`,
    );
  }
  return out;
}

/** Reasons the tensors of this kernel's shape cannot be bound on a device with these limits. */
export function bufferProblems(ir: KernelIR, limits: WgslLimits, storage: WgslStorage): string[] {
  const bytes = ir.batch * ir.seqLen * ir.heads * ir.headDim * (storage === "f16" ? 2 : 4);
  return bytes > limits.maxStorageBufferBindingSize
    ? [
        `q/out take ${bytes} bytes, more than maxStorageBufferBindingSize (${limits.maxStorageBufferBindingSize}): use fewer heads or a smaller batch`,
      ]
    : [];
}

/** Copies the limits tilec needs out of a GPUSupportedLimits (whose fields are prototype getters). */
export function limitsFrom(l: { readonly [K in keyof WgslLimits]: number }): WgslLimits {
  const out: Record<string, number> = {};
  for (const k of Object.keys(DEFAULT_LIMITS) as (keyof WgslLimits)[]) out[k] = l[k];
  return out as unknown as WgslLimits;
}
