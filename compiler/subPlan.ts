// The plan's second level: inside every PARTIAL block, the class of each 16-row × 8-key sub-tile.
//
// Why: a partial block used to evaluate the mask expression on all of its elements (128 × 128
// predicates, ~600 instructions per consumer thread on the sm_90a path, more than the block's whole
// softmax), and partial blocks are 3–6% of the computed blocks of every Attention Tile mask, which
// made time(mask)/time(full) exceed the plan density by up to 10% (bench/RESULTS.md). Most of a
// partial block is uniform: Attention Tile frame boundaries fall on multiples of 16 tokens (a frame
// is 3600), so every sub-tile of those masks is FULL or EMPTY and the kernel evaluates no element at
// all; causal or windowed masks leave a thin band of PARTIAL sub-tiles on their edges.
//
// 16 × 8 is the tensor-core fragment both CUDA templates share (an mma / wgmma warp owns 16 rows,
// an n-tile is 8 keys), so a sub-tile's class is uniform across a warp and costs one predictable
// branch. Like FlexAttention's BlockMask it is a coarse structure derived from the mask, not a dense
// mask: 2 bits per sub-tile of partial blocks only (osp93 tile_12_12: 416 KB against 7.5 GB of
// elements), and PARTIAL sub-tiles still run the generated predicate.
//
// Encoding: for partial-list entry p (the position in plan.partial.indices) and stripe s (rows
// 16s .. 16s+15 of the block), words [(p · stripes + s) · W, … + W) hold the classes of the block's
// n-tiles, 2 bits each (EMPTY 0, PARTIAL 1, FULL 2), n-tile t at bit 2·(t mod 16) of word ⌊t/16⌋.
// A sub-tile that reaches past the sequence end is PARTIAL (the element path applies the bound);
// one wholly past it is EMPTY.
//
// Cost: sub-tiles are classified per signature pair, memoized (Attention Tile masks: 10–60 ms at
// osp93). Masks whose sub-tiles all look different (sliding tiles on row/col coordinates) would need
// millions of classifications; past CLASSIFY_BUDGET distinct pairs the whole sub-plan is PARTIAL, which
// is always correct (the element path decides every element, as without a sub-plan) and keeps
// compile() fast and deterministic.
import { BoxClassifier, EMPTY, FULL, PARTIAL } from "./interval.ts";
import { seqLen, type Layout } from "./layout.ts";
import { usedCoords, type MaskExpr } from "./maskExpr.ts";
import { signatures, type BlockPlan } from "./plan.ts";

export const SUB_ROWS = 16;
export const SUB_COLS = 8;
const PER_WORD = 16;
export const CLASSIFY_BUDGET = 50_000;

export interface SubTilePlan {
  /** Stripes (16-row groups) per query block. */
  readonly stripes: number;
  /** 32-bit words per stripe: ⌈n-tiles / 16⌉. */
  readonly wordsPerStripe: number;
  /** The classes, as described above (int32 bit patterns, the runtime's plan-section type). */
  readonly classes: Int32Array;
  /** False when the mask had more distinct sub-tile pairs than CLASSIFY_BUDGET: all are PARTIAL. */
  readonly classified: boolean;
  /** Sub-tiles of partial blocks by class: how much element work remains. */
  readonly counts: { readonly empty: number; readonly partial: number; readonly full: number };
}

/** 32-bit class words per 16-row stripe of a block `blockKv` keys wide (tilec_class_words in ptx.cuh). */
export function classWordsPerStripe(blockKv: number): number {
  return Math.ceil(blockKv / SUB_COLS / PER_WORD);
}

/**
 * Which way a plan's partial blocks are walked: "q" (query-major: the forward and the dQ pass; stripes
 * of 16 queries, n-tiles of 8 keys, entries in plan.partial order) or "k" (key-major: the dK/dV pass,
 * which computes Sᵀ = K Qᵀ; stripes of 16 keys, n-tiles of 8 queries, entries in plan.partialT order).
 * The encoding is the same; only what a stripe and an n-tile are changes.
 */
export type SubTileMajor = "q" | "k";

export function subTilePlan(
  plan: BlockPlan,
  layout: Layout,
  mask: MaskExpr,
  major: SubTileMajor = "q",
): SubTilePlan {
  const { blockQ, blockKv } = plan;
  const [rowBlock, colBlock] = major === "q" ? [blockQ, blockKv] : [blockKv, blockQ];
  if (rowBlock % SUB_ROWS !== 0 || colBlock % SUB_COLS !== 0)
    throw new RangeError(
      `sub-tile plan needs blocks of multiples of ${SUB_ROWS} × ${SUB_COLS} (${major === "q" ? "queries × keys" : "keys × queries"}), got ${rowBlock} × ${colBlock}`,
    );
  const n = seqLen(layout);
  const stripes = rowBlock / SUB_ROWS;
  const nTiles = colBlock / SUB_COLS;
  const wordsPerStripe = classWordsPerStripe(colBlock);
  const used = usedCoords(mask);
  // Sub-tiles grouped by signature as in buildPlan: an Attention Tile mask sees a handful of them.
  const [qBox, kBox] = major === "q" ? [SUB_ROWS, SUB_COLS] : [SUB_COLS, SUB_ROWS];
  const qSig = signatures(layout, n, qBox, Math.ceil(n / qBox), used.q);
  const kSig = signatures(layout, n, kBox, Math.ceil(n / kBox), used.k);
  const nks = kSig.boxes.length;
  const classifier = new BoxClassifier(layout, mask);
  const memo = new Map<number, number>();
  const classOf = (qs: number, ks: number): number => {
    const key = qs * nks + ks;
    let c = memo.get(key);
    if (c === undefined) {
      if (memo.size >= CLASSIFY_BUDGET) throw OVER_BUDGET;
      c = classifier.classify(qSig.boxes[qs]!, kSig.boxes[ks]!);
      memo.set(key, c);
    }
    return c;
  };
  // The signature id of the row-side and column-side sub-tiles starting at a token.
  const [rowSig, colSig] = major === "q" ? [qSig, kSig] : [kSig, qSig];
  const pairClass = (rs: number, cs: number) => (major === "q" ? classOf(rs, cs) : classOf(cs, rs));

  const lists = major === "q" ? plan.partial : plan.partialT;
  const partials = lists.indices.length;
  const classes = new Int32Array(partials * stripes * wordsPerStripe);
  const counts = [0, 0, 0];
  let classified = true;
  try {
    fill();
  } catch (e) {
    if (e !== OVER_BUDGET) throw e;
    classified = false;
    // Every n-tile PARTIAL (01 per 2 bits); the last word of a stripe may be short.
    for (let i = 0; i < classes.length; i++) {
      const inWord = Math.min(PER_WORD, nTiles - (i % wordsPerStripe) * PER_WORD);
      classes[i] = 0x55555555 >>> (32 - 2 * inWord);
    }
    counts.fill(0);
    counts[PARTIAL] = partials * stripes * nTiles;
  }
  return {
    stripes,
    wordsPerStripe,
    classes,
    classified,
    counts: { empty: counts[EMPTY]!, partial: counts[PARTIAL]!, full: counts[FULL]! },
  };

  function fill(): void {
    for (let rb = 0; rb + 1 < lists.offsets.length; rb++) {
      for (let p = lists.offsets[rb]!; p < lists.offsets[rb + 1]!; p++) {
        const cb = lists.indices[p]!;
        for (let s = 0; s < stripes; s++) {
          const row0 = rb * rowBlock + s * SUB_ROWS;
          const rs = row0 < n ? rowSig.ids[row0 / SUB_ROWS]! : -1;
          const base = (p * stripes + s) * wordsPerStripe;
          for (let t = 0; t < nTiles; t++) {
            const col0 = cb * colBlock + t * SUB_COLS;
            let c: number;
            if (rs < 0 || col0 >= n)
              c = EMPTY; // no row stored / no column to keep
            else if (col0 + SUB_COLS > n)
              c = PARTIAL; // columns past the end: the element path bounds them (rows past it are
            // computed but never stored; the key-major kernel masks keys past the end itself)
            else c = pairClass(rs, colSig.ids[col0 / SUB_COLS]!);
            counts[c]!++;
            classes[base + ((t / PER_WORD) | 0)]! |= c << (2 * (t % PER_WORD));
          }
        }
      }
    }
  }
}

const OVER_BUDGET = new Error("sub-tile plan over budget");

/** The class of one sub-tile, decoded (for tests and the printable picture). */
export function subTileClass(sub: SubTilePlan, partialEntry: number, stripe: number, nTile: number): number {
  const w =
    sub.classes[(partialEntry * sub.stripes + stripe) * sub.wordsPerStripe + ((nTile / PER_WORD) | 0)]!;
  return (w >>> (2 * (nTile % PER_WORD))) & 3;
}

const kernelSubPlans = new WeakMap<BlockPlan, SubTilePlan>();

/**
 * The sub-tile plan of a lowered kernel, computed on first use and kept with its plan: only the CUDA
 * backend reads it, so lowering for WGSL or the CPU never pays for it. A plan object belongs to one
 * mask and layout, so it is a sound key (IR copies made by spreading share it).
 */
export function kernelSubTiles(ir: { plan: BlockPlan; layout: Layout; mask: MaskExpr }): SubTilePlan {
  let sub = kernelSubPlans.get(ir.plan);
  if (!sub) {
    sub = subTilePlan(ir.plan, ir.layout, ir.mask);
    kernelSubPlans.set(ir.plan, sub);
  }
  return sub;
}
