// BlockPlan + mask + configuration → KernelIR: everything a backend needs to render one attention
// kernel and a runtime needs to launch it. This is the only place where launch geometry and loop
// bounds are derived from the plan; backends render, they do not recompute.
import type { KernelSpec } from "./check.ts";
import { seqLen, videoStart, videoTokens, type Dtype, type Layout } from "./layout.ts";
import { usedCoords, type Coord, type MaskExpr } from "./maskExpr.ts";
import type { KernelPlan } from "./pipeline.ts";
import { buildPlan, type BlockPlan, type Csr } from "./plan.ts";

/** Tunable, hashable choices that do not change what is computed, only how. */
export interface KernelConfig {
  /** Warps per thread block (CUDA) / subgroup-sized lane groups (WGSL). */
  readonly warps: number;
  /** K/V shared-memory pipeline depth. */
  readonly stages: number;
  /**
   * Keys per K/V tile the kernel streams. Where it divides the spec's block size the kernel runs the
   * plan re-derived at (blockQ × kvTile), which never computes a pair the spec's plan skips and often
   * skips more (half of a partial 128-key block may be empty); a 64-key tile fits three 4-warp CTAs
   * per H100 SM where a 128-key tile fits one. The sm_90a template also takes a tile that does not
   * divide it (a multiple of 16): its plan, re-derived the same way, may compute a little of what the
   * spec's plan skips (KernelIR.kernelDensity says how much; partial tiles stay element-exact), and
   * longer tiles spread each tile's fixed costs over more keys (hopperConfig).
   */
  readonly kvTile: number;
}

export function configKey(c: KernelConfig): string {
  return `w${c.warps}s${c.stages}kv${c.kvTile}`;
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
  /** The kernel's key tile (config.kvTile); the spec's key block is specPlan.blockKv. */
  readonly blockKv: number;
  readonly config: KernelConfig;
  readonly mask: MaskExpr;
  readonly decode: TokenDecode;
  readonly planEncoding: PlanEncoding;
  /** The plan the kernel runs (at blockQ × kvTile). */
  readonly plan: BlockPlan;
  /** The spec's layout (the sub-tile plan, compiler/subPlan.ts, classifies token boxes of it). */
  readonly layout: Layout;
  /** The spec's plan (at its declared block size): what density and FLOPs are reported against. */
  readonly specPlan: BlockPlan;
  /** Density of the spec's plan. */
  readonly density: number;
  /** Density of the kernel's plan (≤ density). */
  readonly kernelDensity: number;
  /**
   * Launch order of query blocks, heaviest first (longest-processing-time-first list scheduling):
   * blocks of global frames compute whole rows, others a few frames; started last, a heavy block
   * would run alone at the end of the grid.
   */
  readonly qOrder: Int32Array;
  /**
   * How many of qOrder's first positions are heavy (more than 1.5× the mean work): the kernels run
   * them for every head before any light block (tilec_work_item in backends/cuda/templates/ptx.cuh).
   */
  readonly heavyRows: number;
  /** Logical launch geometry: one thread block per (query block, head, batch). */
  readonly grid: readonly [number, number, number];
  readonly threads: number;
  readonly scale: number;
}

/**
 * Measured on an H100 (bench/RESULTS.md, test/cuda-harness/RESULTS.md): 4 warps of 32 query rows and
 * 64-key tiles, double-buffered, is the fastest bf16 shape at head dim 64–128; fp32 tiles are 4-byte,
 * so they take 32 keys to stay within shared memory on every sm_8x part.
 */
export function defaultConfig(
  blockQ: number,
  blockKv: number,
  dtype: Dtype,
  target: { arch?: string; headDim?: number } = {},
): KernelConfig {
  const hopper = hopperConfig(blockQ, blockKv, dtype, target);
  if (hopper) return hopper;
  const want = dtype === "fp32" ? 32 : 64;
  const kvTile = blockKv % want === 0 ? want : blockKv;
  // Warps split the query rows into multiples of 16 (the mma tile height); 4 or 2 of them (the
  // templates' cooperative loads assume a power of two). A block that neither divides is left to
  // the backend's configuration check, which says so.
  const preferred = blockQ >= 128 ? 4 : 2;
  const warps = [preferred, 4, 2].find((w) => blockQ % (w * 16) === 0) ?? preferred;
  return { warps, stages: 2, kvTile };
}

/**
 * On sm_90 (H100) the CUDA backend's wgmma template (backends/cuda/templates/flash_fwd_sm90.cuh):
 * a producer warpgroup plus one 64-row consumer warpgroup per 64 query rows, 3–4 K/V stages (its
 * software pipeline holds a slot one tile longer). Key tiles (the wgmma N of S = Q K^T) of 128,
 * except at head dim 96 with 128-row blocks: 160-key tiles in 3 stages (210 KB), which spread each
 * tile's fixed costs (barriers, row-max shuffles, the re-read of Q from shared memory) over more keys
 * and measured 0–5% faster than 128 keys in 4 stages on the Open-Sora-Plan masks (20 of 21 A/B
 * pairs) on H100, a GPU these kernels hold at its power cap (bench/NOTES.md step 20). 176 keys
 * measured about the same on the masks but spill on the element-mask path; 192 keys fit only 2
 * stages and lose 30%. Shapes the template does not cover (fp32, head dims other than 64/96/128,
 * query blocks other than 64/128 rows) keep the sm_80 configuration.
 */
export function hopperConfig(
  blockQ: number,
  blockKv: number,
  dtype: Dtype,
  target: { arch?: string; headDim?: number },
): KernelConfig | undefined {
  if (!target.arch?.startsWith("sm_90") || dtype === "fp32") return undefined;
  if (![64, 96, 128].includes(target.headDim ?? 0) || (blockQ !== 64 && blockQ !== 128)) return undefined;
  const warps = hopperWarps(blockQ);
  if (target.headDim === 96 && blockQ === 128 && blockKv >= 128) return { warps, stages: 3, kvTile: 160 };
  const kvTile = blockKv % 128 === 0 ? 128 : blockKv % 64 === 0 ? 64 : undefined;
  if (!kvTile) return undefined;
  // 4 stages where they fit in sm_90's 227 KB (head dim <= 96 at 128 x 128), else 3.
  const stages = (target.headDim ?? 0) <= 96 || kvTile < 128 ? 4 : 3;
  return { warps, stages, kvTile };
}

/**
 * Warps of an sm_90a kernel: one 64-row consumer warpgroup per 64 query rows, plus the producer
 * warpgroup. A configuration with this warp count on sm_90 selects the Hopper template
 * (backends/cuda/target.ts templateOf).
 */
export function hopperWarps(blockQ: number): number {
  return 4 * (blockQ / 64 + 1);
}

export function cIdentifier(s: string): string {
  const id = s.replace(/[^A-Za-z0-9_]/g, "_");
  return /^[0-9]/.test(id) ? `_${id}` : id;
}

export function lowerKernel(
  kp: KernelPlan,
  specFile: string,
  config?: KernelConfig,
  arch?: string,
): KernelIR {
  const k: KernelSpec = kp.kernel;
  const l = k.layout;
  const cfg = config ?? defaultConfig(k.blockQ, k.blockKv, l.dtype, { arch, headDim: l.headDim });
  // A key tile that does not divide the spec's block: sm_90a template only (see KernelConfig).
  const hopper = arch?.startsWith("sm_90") && l.dtype !== "fp32" && cfg.warps === hopperWarps(k.blockQ);
  if (cfg.kvTile % 16 !== 0 || (!hopper && (cfg.kvTile > k.blockKv || k.blockKv % cfg.kvTile !== 0)))
    throw new RangeError(
      hopper
        ? `kvTile ${cfg.kvTile} must be a multiple of 16`
        : `kvTile ${cfg.kvTile} must be a multiple of 16 dividing the spec's key block ${k.blockKv} (only the sm_90a template takes other key tiles)`,
    );
  // The kernel's plan: the spec's, or re-derived at the finer key tile.
  const plan = cfg.kvTile === k.blockKv ? kp.plan : buildPlan({ ...k, blockKv: cfg.kvTile });
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
    blockKv: cfg.kvTile,
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
    plan,
    layout: l,
    specPlan: kp.plan,
    density: kp.stats.density,
    kernelDensity: (plan.counts.full + plan.counts.partial) / (plan.numQBlocks * plan.numKvBlocks),
    qOrder: heaviestFirst(plan),
    heavyRows: heavyRows(plan),
    grid: [plan.numQBlocks, l.heads, l.batch],
    threads: cfg.warps * 32,
    scale: 1 / Math.sqrt(l.headDim),
  };
}

/** Work of row r of a pair of CSR lists in tiles (partial tiles weigh a little more). */
function listWork(full: Csr, partial: Csr, r: number): number {
  return full.offsets[r + 1]! - full.offsets[r]! + 1.1 * (partial.offsets[r + 1]! - partial.offsets[r]!);
}

/**
 * The heavy-first launch order of the rows of a pair of CSR lists (query blocks of plan.full/partial,
 * or key blocks of plan.fullT/partialT): rows sorted by descending work (stable), and how many of
 * them carry more than 1.5× the mean work (the rows of global frames, for Attention Tile).
 */
export function workOrder(full: Csr, partial: Csr): { order: Int32Array; heavy: number } {
  const rows = full.offsets.length - 1;
  const work = Array.from({ length: rows }, (_, r) => listWork(full, partial, r));
  const mean = work.reduce((a, b) => a + b, 0) / Math.max(1, rows);
  const order = Array.from({ length: rows }, (_, i) => i);
  order.sort((a, b) => work[b]! - work[a]! || a - b);
  return { order: Int32Array.from(order), heavy: work.filter((w) => w > 1.5 * mean).length };
}

/** Query blocks with more than 1.5× the mean work (the rows of global frames, for Attention Tile). */
export function heavyRows(plan: BlockPlan): number {
  return workOrder(plan.full, plan.partial).heavy;
}

/** Query blocks sorted by descending work, stable. */
export function heaviestFirst(plan: BlockPlan): Int32Array {
  return workOrder(plan.full, plan.partial).order;
}

/**
 * The plan section every backend's manifest ships: the lists the kernel walks (at its own tile) and
 * the density of the spec's plan, which is what tables and the paper compare.
 */
export function planManifest(ir: KernelIR): Record<string, unknown> {
  const p = ir.plan;
  return {
    blockQ: ir.blockQ,
    blockKv: ir.blockKv,
    numQBlocks: p.numQBlocks,
    numKvBlocks: p.numKvBlocks,
    blocks: p.counts,
    density: ir.density,
    kernelDensity: ir.kernelDensity,
    full: { offsets: Array.from(p.full.offsets), indices: Array.from(p.full.indices) },
    partial: { offsets: Array.from(p.partial.offsets), indices: Array.from(p.partial.indices) },
  };
}
