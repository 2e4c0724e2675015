// BlockPlan: which (query block, key/value block) pairs a kernel computes, and how.
//
// Format (the same idea as FlexAttention's BlockMask, with both directions precomputed):
//   classes[qb * numKvBlocks + kb] ∈ {EMPTY, PARTIAL, FULL}
//   full.offsets[qb] .. full.offsets[qb+1]        → full.indices: kv blocks with every pair allowed
//   partial.offsets[qb] .. partial.offsets[qb+1]  → partial.indices: kv blocks needing the element mask
//   fullT / partialT: the same lists kv-major (per kv block, its query blocks), for a backward pass.
// Indices ascend within every list. A pair is FULL when the mask allows every (q, k) with both tokens
// inside the sequence; raggedness at the sequence end is the kernel's business (a bound, not a mask).
// Memory is O(blocks): nothing here is ever O(tokens²).
import { BoxClassifier, EMPTY, FULL, PARTIAL, tokenBoxes, type BlockClass, type Box } from "./interval.ts";
import { seqLen, type Layout } from "./layout.ts";
import { usedCoords, type MaskExpr } from "./maskExpr.ts";

export interface Csr {
  readonly offsets: Int32Array;
  readonly indices: Int32Array;
}

export interface BlockPlan {
  readonly seqLen: number;
  readonly blockQ: number;
  readonly blockKv: number;
  readonly numQBlocks: number;
  readonly numKvBlocks: number;
  readonly classes: Uint8Array;
  readonly full: Csr;
  readonly partial: Csr;
  readonly fullT: Csr;
  readonly partialT: Csr;
  readonly counts: { readonly full: number; readonly partial: number; readonly empty: number };
}

export interface PlanInput {
  readonly layout: Layout;
  readonly mask: MaskExpr;
  readonly blockQ: number;
  readonly blockKv: number;
}

export const MAX_BLOCK_PAIRS = 1 << 28;

export function buildPlan(input: PlanInput): BlockPlan {
  const { layout, mask, blockQ, blockKv } = input;
  const n = seqLen(layout);
  const numQ = Math.ceil(n / blockQ);
  const numKv = Math.ceil(n / blockKv);
  if (numQ * numKv > MAX_BLOCK_PAIRS)
    throw new RangeError(
      `plan has ${numQ * numKv} block pairs, more than ${MAX_BLOCK_PAIRS}: use larger blocks`,
    );

  // Blocks are grouped by signature — their boxes projected on the coordinates the mask reads — and
  // each pair of signatures is classified once. An Attention Tile mask reads only frames, so the 675
  // query blocks of a 93-frame video collapse to ~50 signatures: a few thousand classifications, and
  // every list below is built per signature and then copied.
  const used = usedCoords(mask);
  const qSig = signatures(layout, n, blockQ, numQ, used.q);
  const kSig = signatures(layout, n, blockKv, numKv, used.k);
  const nqs = qSig.boxes.length;
  const nks = kSig.boxes.length;
  const classifier = new BoxClassifier(layout, mask);
  const sigClass = new Uint8Array(nqs * nks);
  for (let qs = 0; qs < nqs; qs++)
    for (let ks = 0; ks < nks; ks++)
      sigClass[qs * nks + ks] = classifier.classify(qSig.boxes[qs]!, kSig.boxes[ks]!);

  const rowOf = (qs: number) => {
    const row = new Uint8Array(numKv);
    for (let kb = 0; kb < numKv; kb++) row[kb] = sigClass[qs * nks + kSig.ids[kb]!]!;
    return row;
  };
  const colOf = (ks: number) => {
    const col = new Uint8Array(numQ);
    for (let qb = 0; qb < numQ; qb++) col[qb] = sigClass[qSig.ids[qb]! * nks + ks]!;
    return col;
  };
  const rows = Array.from({ length: nqs }, (_, qs) => rowOf(qs));
  const cols = Array.from({ length: nks }, (_, ks) => colOf(ks));
  const classes = new Uint8Array(numQ * numKv);
  for (let qb = 0; qb < numQ; qb++) classes.set(rows[qSig.ids[qb]!]!, qb * numKv);
  const lists = (vectors: Uint8Array[], ids: Int32Array, kind: number) => {
    const perSig = vectors.map((v) => indicesOf(v, kind));
    return concatLists(ids, perSig);
  };
  const full = lists(rows, qSig.ids, FULL);
  const partial = lists(rows, qSig.ids, PARTIAL);
  const fullT = lists(cols, kSig.ids, FULL);
  const partialT = lists(cols, kSig.ids, PARTIAL);
  return assemble(n, blockQ, blockKv, classes, full, partial, fullT, partialT);
}

function indicesOf(v: Uint8Array, kind: number): Int32Array {
  let count = 0;
  for (let i = 0; i < v.length; i++) if (v[i] === kind) count++;
  const out = new Int32Array(count);
  for (let i = 0, p = 0; i < v.length; i++) if (v[i] === kind) out[p++] = i;
  return out;
}

/** CSR whose row r is perSig[ids[r]]. */
function concatLists(ids: Int32Array, perSig: Int32Array[]): Csr {
  const offsets = new Int32Array(ids.length + 1);
  for (let r = 0; r < ids.length; r++) offsets[r + 1] = offsets[r]! + perSig[ids[r]!]!.length;
  const indices = new Int32Array(offsets[ids.length]!);
  for (let r = 0; r < ids.length; r++) indices.set(perSig[ids[r]!]!, offsets[r]!);
  return { offsets, indices };
}

export function signatures(
  layout: Layout,
  n: number,
  block: number,
  count: number,
  used: Set<string>,
): { ids: Int32Array; boxes: Box[][] } {
  const ids = new Int32Array(count);
  const boxes: Box[][] = [];
  const byKey = new Map<string, number>();
  const f = used.has("frame");
  const r = used.has("row");
  const c = used.has("col");
  const i = used.has("index");
  for (let b = 0; b < count; b++) {
    // Boxes that look the same through the mask's eyes are one box to the classifier.
    const unique = new Map<string, Box>();
    for (const x of tokenBoxes(layout, b * block, Math.min(n, (b + 1) * block))) {
      const k = `${x.text ? "t" : "v"}${f ? `${x.f0}-${x.f1}` : ""},${r ? `${x.r0}-${x.r1}` : ""},${c ? `${x.c0}-${x.c1}` : ""},${i ? `${x.i0}-${x.i1}` : ""}`;
      if (!unique.has(k)) unique.set(k, x);
    }
    const key = [...unique.keys()].sort().join("|");
    let id = byKey.get(key);
    if (id === undefined) {
      id = boxes.length;
      byKey.set(key, id);
      boxes.push([...unique.values()]);
    }
    ids[b] = id;
  }
  return { ids, boxes };
}

/** Builds the CSR lists (both directions) and counts from a class grid. */
export function planFromClasses(
  classes: Uint8Array,
  n: number,
  blockQ: number,
  blockKv: number,
  numQ: number,
  numKv: number,
): BlockPlan {
  let nFull = 0;
  let nPartial = 0;
  for (let i = 0; i < classes.length; i++) {
    const c = classes[i]!;
    nFull += c >> 1; // FULL = 2
    nPartial += c & 1; // PARTIAL = 1
  }
  const full = rowMajor(classes, FULL, nFull, numQ, numKv);
  const partial = rowMajor(classes, PARTIAL, nPartial, numQ, numKv);
  return assemble(
    n,
    blockQ,
    blockKv,
    classes,
    full,
    partial,
    transpose(full, numKv),
    transpose(partial, numKv),
  );
}

/** A BlockPlan from its lists (counts derived), whichever way the lists were built. */
function assemble(
  n: number,
  blockQ: number,
  blockKv: number,
  classes: Uint8Array,
  full: Csr,
  partial: Csr,
  fullT: Csr,
  partialT: Csr,
): BlockPlan {
  const numQBlocks = full.offsets.length - 1;
  const numKvBlocks = fullT.offsets.length - 1;
  const counts = {
    full: full.indices.length,
    partial: partial.indices.length,
    empty: numQBlocks * numKvBlocks - full.indices.length - partial.indices.length,
  };
  return {
    seqLen: n,
    blockQ,
    blockKv,
    numQBlocks,
    numKvBlocks,
    classes,
    full,
    partial,
    fullT,
    partialT,
    counts,
  };
}

function rowMajor(classes: Uint8Array, kind: number, total: number, numQ: number, numKv: number): Csr {
  const offsets = new Int32Array(numQ + 1);
  const indices = new Int32Array(total);
  let p = 0;
  for (let qb = 0; qb < numQ; qb++) {
    offsets[qb] = p;
    const base = qb * numKv;
    for (let kb = 0; kb < numKv; kb++) if (classes[base + kb] === kind) indices[p++] = kb;
  }
  offsets[numQ] = p;
  return { offsets, indices };
}

/** Counting-sort transpose: O(entries), rows visited in order so each column's list ascends. */
function transpose(m: Csr, numCols: number): Csr {
  const offsets = new Int32Array(numCols + 1);
  for (let i = 0; i < m.indices.length; i++) offsets[m.indices[i]! + 1]!++;
  for (let c = 0; c < numCols; c++) offsets[c + 1]! += offsets[c]!;
  const fill = offsets.slice(0, numCols);
  const indices = new Int32Array(m.indices.length);
  for (let r = 0; r + 1 < m.offsets.length; r++) {
    for (let p = m.offsets[r]!; p < m.offsets[r + 1]!; p++) indices[fill[m.indices[p]!]!++] = r;
  }
  return { offsets, indices };
}

export function blockClass(plan: BlockPlan, qb: number, kb: number): BlockClass {
  return plan.classes[qb * plan.numKvBlocks + kb] as BlockClass;
}

export { EMPTY, PARTIAL, FULL };
