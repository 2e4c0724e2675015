import { describe, expect, it } from "vitest";
import { elementMask } from "../../compiler/elementMask.ts";
import { compileSpec } from "../../compiler/pipeline.ts";
import { randomArray, referenceAttention, relativeError } from "../../runtime/reference.ts";

describe("float64 reference attention", () => {
  const shape = { batch: 2, seqLen: 13, heads: 4, kvHeads: 2, headDim: 8 };
  const q = randomArray(2 * 13 * 4 * 8, 1);
  const k = randomArray(2 * 13 * 2 * 8, 2);
  const v = randomArray(2 * 13 * 2 * 8, 3);

  it("equals a direct softmax for one row", () => {
    const { out, lse } = referenceAttention(q, k, v, shape, () => true);
    const [b, i, h] = [1, 5, 3];
    const hk = 1; // heads 2,3 share kv head 1
    const scores = [...Array(13).keys()].map((j) => {
      let s = 0;
      for (let x = 0; x < 8; x++)
        s += q[((b * 13 + i) * 4 + h) * 8 + x]! * k[((b * 13 + j) * 2 + hk) * 8 + x]!;
      return s / Math.sqrt(8);
    });
    const z = scores.reduce((a, s) => a + Math.exp(s), 0);
    for (let x = 0; x < 8; x++) {
      const want = scores.reduce((a, s, j) => a + (Math.exp(s) / z) * v[((b * 13 + j) * 2 + hk) * 8 + x]!, 0);
      expect(out[((b * 13 + i) * 4 + h) * 8 + x]).toBeCloseTo(want, 12);
    }
    expect(lse[(b * 4 + h) * 13 + i]).toBeCloseTo(Math.log(z), 12);
  });

  it("writes 0 and lse = -inf for fully masked rows, never NaN", () => {
    const { out, lse } = referenceAttention(q, k, v, shape, (i, j) => i % 3 !== 0 && j <= i);
    for (let b = 0; b < 2; b++)
      for (let h = 0; h < 4; h++) {
        expect(lse[(b * 4 + h) * 13 + 0]).toBe(-Infinity);
        expect(lse[(b * 4 + h) * 13 + 1]).toBeGreaterThan(-Infinity);
        for (let x = 0; x < 8; x++) expect(out[((b * 13 + 3) * 4 + h) * 8 + x]).toBe(0);
      }
    expect(out.every((x) => Number.isFinite(x))).toBe(true);
  });

  it("GQA equals the same computation with kv heads repeated", () => {
    const kRep = new Float64Array(2 * 13 * 4 * 8);
    const vRep = new Float64Array(2 * 13 * 4 * 8);
    for (let b = 0; b < 2; b++)
      for (let s = 0; s < 13; s++)
        for (let h = 0; h < 4; h++)
          for (let x = 0; x < 8; x++) {
            kRep[((b * 13 + s) * 4 + h) * 8 + x] = k[((b * 13 + s) * 2 + (h >> 1)) * 8 + x]!;
            vRep[((b * 13 + s) * 4 + h) * 8 + x] = v[((b * 13 + s) * 2 + (h >> 1)) * 8 + x]!;
          }
    const mask = (i: number, j: number) => (i + j) % 4 !== 1;
    const a = referenceAttention(q, k, v, shape, mask);
    const b = referenceAttention(q, kRep, vRep, { ...shape, kvHeads: 4 }, mask);
    expect(relativeError(a.out, b.out)).toBeLessThan(1e-15);
  });

  it("runs a spec's mask through elementMask", () => {
    const r = compileSpec(
      "layout L { video 3 x 2 x 2 text 1 after heads 1 head_dim 8 }\nkernel c { layout L mask causal_frames }",
      "t",
    );
    const kern = r.spec!.kernels.get("c")!;
    const allowed = elementMask(kern.layout, kern.mask);
    expect(allowed(4, 0)).toBe(true); // frame 1 sees frame 0
    expect(allowed(0, 4)).toBe(false);
    expect(allowed(12, 0)).toBe(false); // the text token (index 12) is outside causal_frames
  });

  it("relativeError flags NaN", () => {
    expect(relativeError([NaN, 1], [1, 1])).toBeNaN();
    expect(relativeError([1, 2], [1, 2])).toBe(0);
  });
});
