import { describe, expect, it } from "vitest";
import {
  compareGradients,
  randomArray,
  referenceAttention,
  referenceAttentionBackward,
  relativeError,
  type AttentionShape,
} from "../../runtime/reference.ts";

const n = 13; // odd on purpose
const maskedRow = 4; // query row with no allowed key
const maskedKey = 9; // key column no query may see

/** A random boolean mask (~70% allowed) with one fully masked row and one fully masked key column. */
function randomMask(seed: number): (i: number, j: number) => boolean {
  const r = randomArray(n * n, seed);
  return (i, j) => i !== maskedRow && j !== maskedKey && r[i * n + j]! > -0.4;
}

function inputs(shape: AttentionShape, seed: number) {
  const { batch, seqLen, heads, kvHeads, headDim } = shape;
  return {
    q: randomArray(batch * seqLen * heads * headDim, seed),
    k: randomArray(batch * seqLen * kvHeads * headDim, seed + 1),
    v: randomArray(batch * seqLen * kvHeads * headDim, seed + 2),
    dout: randomArray(batch * seqLen * heads * headDim, seed + 3),
  };
}

/** L = Σ out ∘ dout through the forward reference. */
function loss(
  q: Float64Array,
  k: Float64Array,
  v: Float64Array,
  dout: Float64Array,
  shape: AttentionShape,
  mask: (i: number, j: number) => boolean,
): number {
  const { out } = referenceAttention(q, k, v, shape, mask);
  let l = 0;
  for (let i = 0; i < out.length; i++) l += out[i]! * dout[i]!;
  return l;
}

/** Central finite difference of L with respect to t[idx] (t is modified and restored). */
function finiteDifference(t: Float64Array, idx: number, f: () => number, h = 1e-6): number {
  const x = t[idx]!;
  t[idx] = x + h;
  const up = f();
  t[idx] = x - h;
  const down = f();
  t[idx] = x;
  return (up - down) / (2 * h);
}

/** Deterministic sample of indices into a tensor of the given length. */
function sample(length: number, count: number, seed: number): number[] {
  return [...randomArray(count, seed)].map((u) => Math.floor(((u + 1) / 2) * length));
}

describe("float64 reference attention backward", () => {
  const shapes: [string, AttentionShape][] = [
    ["GQA", { batch: 2, seqLen: n, heads: 4, kvHeads: 2, headDim: 8 }],
    ["MQA", { batch: 2, seqLen: n, heads: 4, kvHeads: 1, headDim: 8 }],
    ["MHA", { batch: 2, seqLen: n, heads: 4, kvHeads: 4, headDim: 8 }],
  ];

  for (const [name, shape] of shapes)
    it(`matches central finite differences of sum(out * dout) (${name})`, () => {
      const { q, k, v, dout } = inputs(shape, 10);
      const mask = randomMask(7);
      const g = referenceAttentionBackward(q, k, v, dout, shape, mask);
      const f = () => loss(q, k, v, dout, shape, mask);
      const { heads, headDim: d } = shape;
      // Random elements, plus the whole dq row of a fully masked query and the dk/dv row of a masked key.
      const qIdx = [
        ...sample(q.length, 40, 20),
        ...[...Array(d).keys()].map((x) => ((1 * n + maskedRow) * heads + 2) * d + x),
      ];
      const kIdx = [...sample(k.length, 40, 21), ((0 * n + maskedKey) * shape.kvHeads + 0) * d + 3];
      const vIdx = [...sample(v.length, 40, 22), ((1 * n + maskedKey) * shape.kvHeads + 0) * d + 5];
      for (const [t, grad, idx] of [
        [q, g.dq, qIdx],
        [k, g.dk, kIdx],
        [v, g.dv, vIdx],
      ] as const) {
        const fd = Float64Array.from(idx, (i) => finiteDifference(t, i, f));
        const an = Float64Array.from(idx, (i) => grad[i]!);
        expect(relativeError(an, fd)).toBeLessThan(1e-6);
        for (let s = 0; s < idx.length; s++) expect(Math.abs(an[s]! - fd[s]!)).toBeLessThan(1e-6);
        // The sample is not trivially zero.
        expect(an.some((x) => Math.abs(x) > 1e-3)).toBe(true);
      }
    });

  it("gives dq = 0 on fully masked rows, dk = dv = 0 on fully masked keys, and no NaN", () => {
    const shape = shapes[0]![1];
    const { heads, kvHeads, headDim: d, batch } = shape;
    const { q, k, v, dout } = inputs(shape, 30);
    const g = referenceAttentionBackward(q, k, v, dout, shape, randomMask(8));
    for (const t of [g.out, g.dq, g.dk, g.dv, g.delta]) expect(t.every((x) => Number.isFinite(x))).toBe(true);
    for (let b = 0; b < batch; b++) {
      for (let h = 0; h < heads; h++) {
        expect(g.lse[(b * heads + h) * n + maskedRow]).toBe(-Infinity);
        expect(g.delta[(b * heads + h) * n + maskedRow]).toBe(0);
        for (let x = 0; x < d; x++) expect(g.dq[((b * n + maskedRow) * heads + h) * d + x]).toBe(0);
      }
      for (let h = 0; h < kvHeads; h++)
        for (let x = 0; x < d; x++) {
          expect(g.dk[((b * n + maskedKey) * kvHeads + h) * d + x]).toBe(0);
          expect(g.dv[((b * n + maskedKey) * kvHeads + h) * d + x]).toBe(0);
        }
    }
    // A row with allowed keys does get a gradient.
    expect(g.dq[((0 * n + 0) * heads + 0) * d]).not.toBe(0);
    // Everything masked: all gradients 0, never NaN.
    const none = referenceAttentionBackward(q, k, v, dout, shape, () => false);
    for (const t of [none.out, none.dq, none.dk, none.dv, none.delta])
      expect(t.every((x) => x === 0)).toBe(true);
  });

  it("out and lse equal referenceAttention's; delta = rowsum(dout * out)", () => {
    const shape = shapes[0]![1];
    const { q, k, v, dout } = inputs(shape, 40);
    const mask = randomMask(9);
    const g = referenceAttentionBackward(q, k, v, dout, shape, mask, 0.3);
    const f = referenceAttention(q, k, v, shape, mask, 0.3);
    expect(g.out).toEqual(f.out);
    expect(g.lse).toEqual(f.lse);
    const [b, i, h] = [1, 6, 3];
    let want = 0;
    for (let x = 0; x < 8; x++)
      want += dout[((b * n + i) * 4 + h) * 8 + x]! * f.out[((b * n + i) * 4 + h) * 8 + x]!;
    expect(g.delta[(b * 4 + h) * n + i]).toBeCloseTo(want, 14);
  });

  it("GQA dk/dv equal the repeated-kv MHA gradients summed over each group", () => {
    const shape = shapes[0]![1];
    const mha = { ...shape, kvHeads: 4 };
    const { q, k, v, dout } = inputs(shape, 50);
    const rep = (t: Float64Array) => {
      const r = new Float64Array(2 * n * 4 * 8);
      for (let s = 0; s < 2 * n; s++)
        for (let h = 0; h < 4; h++)
          for (let x = 0; x < 8; x++) r[(s * 4 + h) * 8 + x] = t[(s * 2 + (h >> 1)) * 8 + x]!;
      return r;
    };
    const mask = randomMask(11);
    const a = referenceAttentionBackward(q, k, v, dout, shape, mask);
    const m = referenceAttentionBackward(q, rep(k), rep(v), dout, mha, mask);
    const sumGroups = (t: Float64Array) => {
      const r = new Float64Array(2 * n * 2 * 8);
      for (let s = 0; s < 2 * n; s++)
        for (let h = 0; h < 4; h++)
          for (let x = 0; x < 8; x++) r[(s * 2 + (h >> 1)) * 8 + x]! += t[(s * 4 + h) * 8 + x]!;
      return r;
    };
    expect(relativeError(a.dq, m.dq)).toBeLessThan(1e-14);
    expect(relativeError(a.dk, sumGroups(m.dk))).toBeLessThan(1e-14);
    expect(relativeError(a.dv, sumGroups(m.dv))).toBeLessThan(1e-14);
  });

  it("rejects kvHeads that do not divide heads", () => {
    const shape = { batch: 1, seqLen: 3, heads: 4, kvHeads: 3, headDim: 2 };
    const z = new Float64Array(24);
    expect(() => referenceAttentionBackward(z, z, z, z, shape, () => true)).toThrow(RangeError);
  });
});

describe("compareGradients", () => {
  const shape = { batch: 2, seqLen: n, heads: 4, kvHeads: 2, headDim: 8 };
  const { q, k, v, dout } = inputs(shape, 60);
  const ref = referenceAttentionBackward(q, k, v, dout, shape, randomMask(12));
  const copy = () => ({ dq: ref.dq.slice(), dk: ref.dk.slice(), dv: ref.dv.slice() });
  const maskedDq = ((1 * n + maskedRow) * 4 + 2) * 8 + 5;

  it("passes the reference itself", () => {
    const c = compareGradients(copy(), ref);
    expect(c).toEqual({
      dq: 0,
      dk: 0,
      dv: 0,
      unwritten: 0,
      nonFinite: 0,
      maskedRowsZero: true,
      maskedRows: 2 * 4,
    });
  });

  it("flags unwritten (NaN) and non-finite outputs", () => {
    const g = copy();
    g.dk[17] = NaN;
    g.dv[3] = Infinity;
    g.dv[4] = -Infinity;
    const c = compareGradients(g, ref);
    expect(c.unwritten).toBe(1);
    expect(c.nonFinite).toBe(2);
    expect(c.dk).toBeNaN();
    expect(c.dq).toBe(0);
    // A NaN-poisoned buffer that was never written fails everywhere.
    const poisoned = compareGradients(
      { dq: new Float64Array(ref.dq.length).fill(NaN), dk: ref.dk, dv: ref.dv },
      ref,
    );
    expect(poisoned.unwritten).toBe(ref.dq.length);
    expect(poisoned.dq).toBeNaN();
    expect(poisoned.maskedRowsZero).toBe(false);
  });

  it("gives a nonzero error for a perturbed gradient", () => {
    const g = copy();
    g.dv[40]! += 1e-3;
    const c = compareGradients(g, ref);
    expect(c.dv).toBeGreaterThan(0);
    expect(c.dv).toBeLessThan(1e-2);
    expect(c.dq).toBe(0);
    expect(c.dk).toBe(0);
    expect(c.maskedRowsZero).toBe(true);
  });

  it("flags a nonzero dq on a fully masked row", () => {
    const g = copy();
    g.dq[maskedDq] = 1e-30;
    const c = compareGradients(g, ref);
    expect(c.maskedRowsZero).toBe(false);
    expect(c.unwritten).toBe(0);
  });
});
