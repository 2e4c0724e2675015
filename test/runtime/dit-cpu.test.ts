// The DiT's CPU pieces: patchify/unpatchify, RoPE, timestep features, and properties of the float64
// forward that the GPU test then compares against.
import { describe, expect, it } from "vitest";
import { forwardCpu, linear, patchify, unpatchify } from "../../runtime/dit/cpu.ts";
import { applyRope, geluTanh, timestepFeatures, tokenPosition } from "../../runtime/dit/math.ts";
import { memoryWeights, randomWeights } from "../../runtime/dit/weights.ts";
import { randomArray } from "../../runtime/reference.ts";
import { TINY, tinyInputs, tinyMasks, tinySpec } from "./dit-fixture.ts";

describe("patchify", () => {
  const dims = { batch: 2, channels: 3, frames: 2, height: 4, width: 6 };
  const latent = randomArray(2 * 3 * 2 * 4 * 6, 5);

  it.each(["channel-first", "channel-last"] as const)("round-trips (%s)", (order) => {
    const rows = patchify(latent, dims, 2, order);
    expect(rows.length).toBe(latent.length);
    expect([...unpatchify(rows, dims, 2, order)]).toEqual([...latent]);
  });

  it("orders a row like a Conv2d weight (c, i, j) and tokens frame-major", () => {
    const rows = patchify(latent, dims, 2, "channel-first");
    // sample 1, frame 1, patch (row 1, col 2), channel 2, in-patch (1, 0)
    const row = ((1 * 2 + 1) * 2 + 1) * 3 + 2;
    const col = (2 * 2 + 1) * 2 + 0;
    expect(rows[row * 12 + col]).toBe(latent[(((1 * 3 + 2) * 2 + 1) * 4 + 3) * 6 + 4]);
    const last = patchify(latent, dims, 2, "channel-last");
    expect(last[row * 12 + (1 * 2 + 0) * 3 + 2]).toBe(rows[row * 12 + col]);
  });

  it("as a linear layer equals the strided convolution", () => {
    const w = randomArray(5 * 3 * 2 * 2, 9); // [out 5, in 3, 2, 2]
    const y = linear(patchify(latent, dims, 2, "channel-first"), 2 * 2 * 2 * 3, 12, w, undefined, 5);
    // Direct convolution at sample 0, frame 1, output position (1, 2), channel 4.
    let s = 0;
    for (let c = 0; c < 3; c++)
      for (let i = 0; i < 2; i++)
        for (let j = 0; j < 2; j++)
          s += w[((4 * 3 + c) * 2 + i) * 2 + j]! * latent[((c * 2 + 1) * 4 + 2 + i) * 6 + 4 + j]!;
    const row = (0 * 2 + 1) * 6 + 1 * 3 + 2;
    expect(y[row * 5 + 4]).toBeCloseTo(s, 12);
  });
});

describe("3D RoPE", () => {
  const rope = { headDim: 48, base: 10000, scales: [1, 2, 1] as const };

  it("is a rotation: norms are kept and position 0 is the identity", () => {
    const v = randomArray(48, 3);
    const r = v.slice();
    applyRope(r, 0, [2, 5, 7], rope);
    const norm = (a: Float64Array) => Math.hypot(...a);
    expect(norm(r)).toBeCloseTo(norm(v), 12);
    const z = v.slice();
    applyRope(z, 0, [0, 0, 0], rope);
    expect([...z]).toEqual([...v]);
  });

  it("makes q·k depend only on the position difference (per axis, after the scales)", () => {
    const q = randomArray(48, 11);
    const k = randomArray(48, 12);
    const dot = (pq: [number, number, number], pk: [number, number, number]) => {
      const a = q.slice();
      const b = k.slice();
      applyRope(a, 0, pq, rope);
      applyRope(b, 0, pk, rope);
      return a.reduce((s, x, i) => s + x * b[i]!, 0);
    };
    expect(dot([3, 4, 6], [1, 2, 5])).toBeCloseTo(dot([2, 2, 1], [0, 0, 0]), 10);
    expect(dot([3, 4, 6], [1, 2, 5])).not.toBeCloseTo(dot([3, 4, 6], [1, 3, 5]), 3);
  });

  it("rotates pair (j, j + 8) of a third by pos/scale · base^(−2j/16) (rotate_half convention)", () => {
    const v = new Float64Array(48);
    v[16 + 3] = 1; // h-axis third, j = 3
    applyRope(v, 0, [0, 6, 0], rope);
    const angle = (6 / 2) * Math.pow(10000, -6 / 16);
    expect(v[19]).toBeCloseTo(Math.cos(angle), 14);
    expect(v[27]).toBeCloseTo(Math.sin(angle), 14);
  });

  it("numbers tokens frame-major like the layouts", () => {
    expect(tokenPosition({ frames: 3, height: 5, width: 7 }, 2 * 35 + 3 * 7 + 4)).toEqual([2, 3, 4]);
  });
});

describe("scalar functions", () => {
  it("timestep features are [cos, sin] of t·10000^(−i/half)", () => {
    const f = timestepFeatures(500, 8);
    expect(f[0]).toBeCloseTo(Math.cos(500), 12);
    expect(f[5]).toBeCloseTo(Math.sin(500 * Math.pow(10000, -1 / 4)), 12);
  });
  it("GELU-tanh matches known values", () => {
    expect(geluTanh(0)).toBe(0);
    expect(geluTanh(1)).toBeCloseTo(0.8411919906082768, 12);
    expect(geluTanh(-3)).toBeCloseTo(-0.0036373920817729943, 12);
  });
});

describe("float64 forward", () => {
  const { tensors, shapes } = randomWeights(TINY, 3);
  const spec = tinySpec();

  it("produces a finite prediction of the latent's shape that depends on masks, text and timestep", () => {
    const inp = tinyInputs(1);
    const w = memoryWeights(tensors, shapes);
    const sparse = forwardCpu(TINY, w, inp, tinyMasks(spec));
    expect(sparse.length).toBe(inp.latent.length);
    expect(sparse.every(Number.isFinite)).toBe(true);
    const dense = forwardCpu(TINY, w, inp, tinyMasks(spec, 0));
    const diff = (a: Float64Array, b: Float64Array) => Math.max(...a.map((x, i) => Math.abs(x - b[i]!)));
    expect(diff(sparse, dense)).toBeGreaterThan(1e-3);
    expect(
      diff(
        dense,
        forwardCpu(TINY, w, inp, () => null),
      ),
    ).toBe(0);
    expect(
      diff(dense, forwardCpu(TINY, w, { ...inp, timesteps: [10, 120] }, tinyMasks(spec, 0))),
    ).toBeGreaterThan(1e-3);
    expect(diff(dense, forwardCpu(TINY, w, tinyInputs(1, [9, 9]), tinyMasks(spec, 0)))).toBeGreaterThan(1e-3);
  });

  it("treats the samples of a batch independently", () => {
    const inp = tinyInputs(4);
    const w = memoryWeights(tensors, shapes);
    const both = forwardCpu(TINY, w, inp, tinyMasks(spec, 0));
    const half = inp.latent.length / 2;
    const textHalf = inp.text.length / 2;
    const second = forwardCpu(
      TINY,
      w,
      {
        ...inp,
        latent: inp.latent.slice(half),
        dims: { ...inp.dims, batch: 1 },
        timesteps: [inp.timesteps[1]!],
        text: inp.text.slice(textHalf),
        textValid: [inp.textValid![1]!],
      },
      tinyMasks(spec, 0),
    );
    for (let i = 0; i < half; i += 37) expect(both[half + i]).toBeCloseTo(second[i]!, 12);
  });
});
