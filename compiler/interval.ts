// Symbolic classification of a rectangle of token pairs as empty / partial / full — without visiting
// its elements. A contiguous token range is cut into at most seven "boxes", sets of tokens that are
// Cartesian products frame × row × col (or a run of text tokens); over a pair of boxes the coordinates
// are independent intervals, so interval evaluation of the mask is sound. Where it is inconclusive the
// box is bisected along its widest coordinate; interval evaluation is exact on single points, so this
// always terminates, and point samples (corners, centres) usually find the two witnesses of a partial
// block long before that.
import { compileInterval, compilePoint, type IntervalFn, type PointFn } from "./jsEval.ts";
import { videoStart, videoTokens, type Layout } from "./layout.ts";
import type { MaskExpr } from "./maskExpr.ts";

/** A product set of tokens: [lo, hi] per coordinate (inclusive); text boxes have frame/row/col = -1. */
export interface Box {
  readonly text: boolean;
  readonly f0: number;
  readonly f1: number;
  readonly r0: number;
  readonly r1: number;
  readonly c0: number;
  readonly c1: number;
  /** Token index range (exact for text and single-row boxes, a hull otherwise). */
  readonly i0: number;
  readonly i1: number;
}

export const EMPTY = 0;
export const PARTIAL = 1;
export const FULL = 2;
export type BlockClass = typeof EMPTY | typeof PARTIAL | typeof FULL;

/** Cuts the token range [start, end) into product boxes. */
export function tokenBoxes(l: Layout, start: number, end: number): Box[] {
  const out: Box[] = [];
  const v0 = videoStart(l);
  const vEnd = v0 + videoTokens(l);
  // text before/after the video
  const textRanges: [number, number][] =
    l.textPosition === "before" ? [[0, v0]] : [[vEnd, vEnd + l.textTokens]];
  for (const [a, b] of textRanges) {
    const s = Math.max(a, start);
    const e = Math.min(b, end);
    if (s < e) out.push({ text: true, f0: -1, f1: -1, r0: -1, r1: -1, c0: -1, c1: -1, i0: s, i1: e - 1 });
  }
  const s = Math.max(start, v0) - v0;
  const e = Math.min(end, vEnd) - v0;
  if (s < e) videoBoxes(l, s, e, v0, out);
  return out;
}

function videoBoxes(l: Layout, s: number, e: number, offset: number, out: Box[]): void {
  const W = l.width;
  const P = l.height * W;
  const push = (f0: number, f1: number, r0: number, r1: number, c0: number, c1: number) =>
    out.push({
      text: false,
      f0,
      f1,
      r0,
      r1,
      c0,
      c1,
      i0: offset + f0 * P + r0 * W + c0,
      i1: offset + f1 * P + r1 * W + c1,
    });
  // Rows [a, b) inside frame f (a, b are offsets within the frame).
  const inFrame = (f: number, a: number, b: number) => {
    const ra = Math.floor(a / W);
    const rb = Math.floor((b - 1) / W);
    const ca = a - ra * W;
    const cb = b - 1 - rb * W;
    if (ra === rb) {
      push(f, f, ra, ra, ca, cb);
      return;
    }
    let firstFull = ra;
    if (ca > 0) {
      push(f, f, ra, ra, ca, W - 1);
      firstFull = ra + 1;
    }
    let lastFull = rb;
    if (cb < W - 1) lastFull = rb - 1;
    if (firstFull <= lastFull) push(f, f, firstFull, lastFull, 0, W - 1);
    if (cb < W - 1) push(f, f, rb, rb, 0, cb);
  };
  const fa = Math.floor(s / P);
  const fb = Math.floor((e - 1) / P);
  if (fa === fb) {
    inFrame(fa, s - fa * P, e - fa * P);
    return;
  }
  let firstFull = fa;
  if (s > fa * P) {
    inFrame(fa, s - fa * P, P);
    firstFull = fa + 1;
  }
  const lastFull = e < (fb + 1) * P ? fb - 1 : fb;
  if (firstFull <= lastFull) push(firstFull, lastFull, 0, l.height - 1, 0, W - 1);
  if (e < (fb + 1) * P) inFrame(fb, 0, e - fb * P);
}

/** The token index of a point of a box (for point evaluation). */
function indexOf(l: Layout, b: Box, f: number, r: number, c: number, textIndex: number): number {
  return b.text ? textIndex : videoStart(l) + (f * l.height + r) * l.width + c;
}

/**
 * Decides the class of every (q, k) pair in the product of two boxes. Reusable scratch buffers make
 * it allocation-free in the common case.
 */
export class BoxClassifier {
  private readonly point: PointFn;
  private readonly interval: IntervalFn;
  private readonly p = new Float64Array(10);
  private readonly iv = new Float64Array(20);
  private readonly out = new Float64Array(2);

  constructor(
    private readonly layout: Layout,
    mask: MaskExpr,
  ) {
    this.point = compilePoint(mask);
    this.interval = compileInterval(mask);
  }

  /** Class of the set of all pairs drawn from the two box lists (a query range × a key range). */
  classify(qs: readonly Box[], ks: readonly Box[]): BlockClass {
    let anyTrue = false;
    let anyFalse = false;
    for (const q of qs) {
      for (const k of ks) {
        const r = this.pair(q, k);
        if (r !== FULL) anyFalse = true;
        if (r !== EMPTY) anyTrue = true;
        if (anyTrue && anyFalse) return PARTIAL;
      }
    }
    return anyTrue ? (anyFalse ? PARTIAL : FULL) : EMPTY;
  }

  private pair(q: Box, k: Box): BlockClass {
    // Most pairs are decided by one interval evaluation of the whole box pair.
    const whole = this.evaluate(q, k);
    if (whole !== PARTIAL) return whole;
    // Witnesses: corners and centres. Two different answers prove PARTIAL at once.
    let seenTrue = false;
    let seenFalse = false;
    for (let s = 0; s < 9; s++) {
      const v = this.sample(q, (s / 3) | 0, k, s % 3);
      if (v) seenTrue = true;
      else seenFalse = true;
      if (seenTrue && seenFalse) return PARTIAL;
    }
    return this.prove(q, k, 0);
  }

  // which: 0 = low corner, 1 = high corner, 2 = centre
  private sample(q: Box, qw: number, k: Box, kw: number): boolean {
    this.fillPoint(q, qw, 0);
    this.fillPoint(k, kw, 5);
    return this.point(this.p);
  }

  private fillPoint(b: Box, which: number, o: number): void {
    const f = pick(which, b.f0, b.f1);
    const r = pick(which, b.r0, b.r1);
    const c = pick(which, b.c0, b.c1);
    this.p[o] = f;
    this.p[o + 1] = r;
    this.p[o + 2] = c;
    this.p[o + 3] = indexOf(this.layout, b, f, r, c, pick(which, b.i0, b.i1));
    this.p[o + 4] = b.text ? 1 : 0;
  }

  private fillBox(b: Box, o: number): void {
    const iv = this.iv;
    iv[2 * o] = b.f0;
    iv[2 * o + 1] = b.f1;
    iv[2 * o + 2] = b.r0;
    iv[2 * o + 3] = b.r1;
    iv[2 * o + 4] = b.c0;
    iv[2 * o + 5] = b.c1;
    iv[2 * o + 6] = b.i0;
    iv[2 * o + 7] = b.i1;
    iv[2 * o + 8] = iv[2 * o + 9] = b.text ? 1 : 0;
  }

  // Interval proof with bisection. Returns FULL/EMPTY when decided, PARTIAL when both values occur.
  /** Interval evaluation over a box pair: FULL or EMPTY when certain, PARTIAL meaning "not decided". */
  private evaluate(q: Box, k: Box): BlockClass {
    this.fillBox(q, 0);
    this.fillBox(k, 5);
    this.interval(this.iv, this.out);
    return this.out[0] === 1 ? FULL : this.out[1] === 0 ? EMPTY : PARTIAL;
  }

  private prove(q: Box, k: Box, depth: number): BlockClass {
    const decided = this.evaluate(q, k);
    if (decided !== PARTIAL) return decided;
    const [qa, qb] = split(this.layout, q);
    const [ka, kb] = split(this.layout, k);
    // Bisect the side with more tokens; point boxes cannot be split and interval evaluation of two
    // points is exact, so one of the two sides is always splittable here.
    const qSize = size(q);
    const kSize = size(k);
    if (depth > 200) throw new Error("tilec: interval bisection did not terminate (a bug in the classifier)");
    let first: BlockClass;
    let second: BlockClass;
    if (qa && (qSize >= kSize || !ka)) {
      first = this.prove(qa, k, depth + 1);
      second = first === PARTIAL ? PARTIAL : this.prove(qb!, k, depth + 1);
    } else {
      first = this.prove(q, ka!, depth + 1);
      second = first === PARTIAL ? PARTIAL : this.prove(q, kb!, depth + 1);
    }
    return first === second ? first : PARTIAL;
  }
}

// Hot-path helpers live at module level: closures created per call are slow under tsx's keepNames.
function pick(which: number, lo: number, hi: number): number {
  return which === 0 ? lo : which === 1 ? hi : (lo + hi) >> 1;
}

function box(l: Layout, f0: number, f1: number, r0: number, r1: number, c0: number, c1: number): Box {
  const base = videoStart(l);
  const i0 = base + (f0 * l.height + r0) * l.width + c0;
  const i1 = base + (f1 * l.height + r1) * l.width + c1;
  return { text: false, f0, f1, r0, r1, c0, c1, i0, i1 };
}

function size(b: Box): number {
  return b.text ? b.i1 - b.i0 + 1 : (b.f1 - b.f0 + 1) * (b.r1 - b.r0 + 1) * (b.c1 - b.c0 + 1);
}

/** Halves a box along its widest axis (a product stays a product); undefined for a single token. */
function split(l: Layout, b: Box): [Box, Box] | [undefined, undefined] {
  if (b.text) {
    if (b.i0 === b.i1) return [undefined, undefined];
    const m = (b.i0 + b.i1) >> 1;
    return [
      { ...b, i1: m },
      { ...b, i0: m + 1 },
    ];
  }
  const df = b.f1 - b.f0;
  const dr = b.r1 - b.r0;
  const dc = b.c1 - b.c0;
  if (df === 0 && dr === 0 && dc === 0) return [undefined, undefined];
  if (df >= dr && df >= dc) {
    const m = (b.f0 + b.f1) >> 1;
    return [box(l, b.f0, m, b.r0, b.r1, b.c0, b.c1), box(l, m + 1, b.f1, b.r0, b.r1, b.c0, b.c1)];
  }
  if (dr >= dc) {
    const m = (b.r0 + b.r1) >> 1;
    return [box(l, b.f0, b.f1, b.r0, m, b.c0, b.c1), box(l, b.f0, b.f1, m + 1, b.r1, b.c0, b.c1)];
  }
  const m = (b.c0 + b.c1) >> 1;
  return [box(l, b.f0, b.f1, b.r0, b.r1, b.c0, m), box(l, b.f0, b.f1, b.r0, b.r1, m + 1, b.c1)];
}
