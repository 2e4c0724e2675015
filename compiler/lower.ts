// BlockPlan + mask + configuration → KernelIR: everything a backend needs to render one attention
// kernel and a runtime needs to launch it. This is the only place where launch geometry and loop
// bounds are derived from the plan; backends render, they do not recompute.
import type { KernelSpec } from "./check.ts";
import { seqLen, videoStart, videoTokens, type Dtype } from "./layout.ts";
import { usedCoords, type Coord, type MaskExpr } from "./maskExpr.ts";
import type { KernelPlan } from "./pipeline.ts";
import type { BlockPlan } from "./plan.ts";

/** Tunable, hashable choices that do not change what is computed, only how. */
export interface KernelConfig {
  /** Warps per thread block (CUDA) / subgroup-sized lanes groups (WGSL). */
  readonly warps: number;
  /** K/V shared-memory pipeline depth. */
  readonly stages: number;
}

export function configKey(c: KernelConfig): string {
  return `w${c.warps}s${c.stages}`;
}

/** How a query block finds its kv blocks. */
export type PlanEncoding = "csr-device";

/** The token-coordinate decoding a kernel's element mask needs. */
export interface TokenDecode {
  readonly videoStart: number;
  readonly videoTokens: number;
  readonly frameTokens: number;
  readonly width: number;
  readonly height: number;
  /** Coordinates each side reads (`text` included), so unused decoding is never emitted. */
  readonly q: ReadonlySet<Coord | "text">;
  readonly k: ReadonlySet<Coord | "text">;
}

export interface KernelIR {
  /** The spec's kernel name and a C identifier for the entry point. */
  readonly name: string;
  readonly entry: string;
  readonly specFile: string;
  readonly maskSource: string;
  readonly hash: string;
  readonly dtype: Dtype;
  readonly headDim: number;
  readonly heads: number;
  readonly kvHeads: number;
  readonly batch: number;
  readonly seqLen: number;
  readonly blockQ: number;
  readonly blockKv: number;
  readonly config: KernelConfig;
  readonly mask: MaskExpr;
  readonly decode: TokenDecode;
  readonly planEncoding: PlanEncoding;
  readonly plan: BlockPlan;
  readonly density: number;
  /** Launch geometry: one thread block per (query block, head, batch). */
  readonly grid: readonly [number, number, number];
  readonly threads: number;
  readonly scale: number;
}

export function defaultConfig(blockQ: number, dtype: Dtype): KernelConfig {
  // 16 query rows per warp is the mma tile height; more warps hide latency better up to 8.
  void dtype;
  return { warps: Math.max(2, Math.min(8, blockQ / 16)), stages: 2 };
}

export function cIdentifier(s: string): string {
  const id = s.replace(/[^A-Za-z0-9_]/g, "_");
  return /^[0-9]/.test(id) ? `_${id}` : id;
}

export function lowerKernel(kp: KernelPlan, specFile: string, config?: KernelConfig): KernelIR {
  const k: KernelSpec = kp.kernel;
  const l = k.layout;
  const cfg = config ?? defaultConfig(k.blockQ, l.dtype);
  const used = usedCoords(k.mask);
  return {
    name: k.name,
    entry: `tilec_${cIdentifier(k.name)}_${k.hash.slice(0, 8)}`,
    specFile,
    maskSource: k.maskSource,
    hash: k.hash,
    dtype: l.dtype,
    headDim: l.headDim,
    heads: l.heads,
    kvHeads: l.kvHeads,
    batch: l.batch,
    seqLen: seqLen(l),
    blockQ: k.blockQ,
    blockKv: k.blockKv,
    config: cfg,
    mask: k.mask,
    decode: {
      videoStart: videoStart(l),
      videoTokens: videoTokens(l),
      frameTokens: l.height * l.width,
      width: l.width,
      height: l.height,
      q: used.q,
      k: used.k,
    },
    // CSR index lists in device memory (FlexAttention's layout): one int per kv block visited,
    // read once per iteration and prefetched with the block before it, so they cost nothing next to
    // the 2·BLOCK_KV·d·2 bytes of K/V each step loads; unlike constant tables they scale to any plan
    // (osp93: 272,000 entries), and unlike closed forms they serve every mask.
    planEncoding: "csr-device",
    plan: kp.plan,
    density: kp.stats.density,
    grid: [kp.plan.numQBlocks, l.heads, l.batch],
    threads: cfg.warps * 32,
    scale: 1 / Math.sqrt(l.headDim),
  };
}
