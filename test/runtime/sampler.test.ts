// Sampler math against closed forms on toy problems: a linear velocity field (Euler's product formula
// and the exact exponential), Gaussian data (closed-form optimal velocity and flow map), and the
// consistency sampler with an exactly distilled segment model.
import { describe, expect, it } from "vitest";
import {
  ancestralCoefficients,
  ancestralSample,
  consistencySample,
  eulerSample,
  flowSchedule,
  hostOps,
  segmentBoundaries,
  type StepInfo,
  type VelocityModel,
} from "../../runtime/sampler/index.ts";

/** Gaussian data x₀ ~ N(μ, s²) per coordinate under x_t = (1 − t)x₀ + tε. */
function gaussian(mu: number, s: number) {
  const variance = (t: number) => (1 - t) ** 2 * s * s + t * t;
  return {
    /** E[ε − x₀ | x_t]: the optimal velocity. */
    velocity: (x: number, t: number) => {
      const centred = x - (1 - t) * mu;
      const ePart = (t / variance(t)) * centred;
      const x0 = mu + ((1 - t) * s * s * centred) / variance(t);
      return ePart - x0;
    },
    /** The probability-flow ODE's exact map from time t to time u. */
    flow: (x: number, t: number, u: number) =>
      (1 - u) * mu + Math.sqrt(variance(u) / variance(t)) * (x - (1 - t) * mu),
  };
}

function field(f: (x: number, t: number) => number): VelocityModel<Float64Array> {
  let buf = new Float64Array(0);
  return (x, t) => {
    if (buf.length !== x.length) buf = new Float64Array(x.length);
    for (let i = 0; i < x.length; i++) buf[i] = f(x[i]!, t);
    return buf;
  };
}

describe("flow schedule", () => {
  it("runs from 1 to 0, monotonically, and the shift keeps the end points", () => {
    for (const shift of [1, 3]) {
      const ts = flowSchedule(10, { shift });
      expect(ts).toHaveLength(11);
      expect(ts[0]).toBe(1);
      expect(ts[10]).toBe(0);
      for (let i = 0; i < 10; i++) expect(ts[i]!).toBeGreaterThan(ts[i + 1]!);
    }
    expect(flowSchedule(4, { shift: 3 })[2]).toBeCloseTo((3 * 0.5) / (1 + 2 * 0.5), 14);
    expect(() => flowSchedule(0)).toThrow(/positive integer/);
  });
});

describe("Euler", () => {
  it("on v = a·x equals Euler's product formula exactly and converges to the exponential", () => {
    const a = 0.7;
    const x1 = 1.3;
    const errors: number[] = [];
    for (const steps of [10, 20, 40]) {
      const x = Float64Array.of(x1);
      const r = eulerSample(
        field((v) => a * v),
        hostOps,
        x,
        { steps },
      );
      const ts = flowSchedule(steps);
      let product = x1;
      for (let i = 0; i < steps; i++) product *= 1 + a * (ts[i + 1]! - ts[i]!);
      expect(x[0]).toBeCloseTo(product, 13);
      expect(r.evaluations).toBe(steps);
      errors.push(Math.abs(x[0]! - x1 * Math.exp(-a)));
    }
    // First order: doubling the steps halves the error.
    expect(errors[0]! / errors[1]!).toBeGreaterThan(1.8);
    expect(errors[1]! / errors[2]!).toBeGreaterThan(1.8);
  });

  it("with the optimal velocity of Gaussian data approaches the exact flow map", () => {
    const g = gaussian(0.8, 0.5);
    const start = [-2, -0.3, 0.4, 1.7];
    const err = (steps: number) => {
      const x = Float64Array.from(start);
      eulerSample(field(g.velocity), hostOps, x, { steps });
      return Math.max(...start.map((x1, i) => Math.abs(x[i]! - g.flow(x1, 1, 0))));
    };
    expect(err(1000)).toBeLessThan(2e-3);
    expect(err(100) / err(200)).toBeGreaterThan(1.8);
  });

  it("passes the step index and step count to the model", () => {
    const seen: StepInfo[] = [];
    const x = Float64Array.of(1);
    eulerSample((v, _t, info) => (seen.push(info), v), hostOps, x, { steps: 3 });
    expect(seen).toEqual([
      { step: 0, steps: 3 },
      { step: 1, steps: 3 },
      { step: 2, steps: 3 },
    ]);
  });
});

describe("Euler-ancestral / DDIM(η)", () => {
  it("η = 0 is exactly the Euler step; the last step returns x̂₀", () => {
    for (const [t, s] of [
      [1, 0.7],
      [0.6, 0.25],
      [0.3, 0.01],
    ] as const) {
      const [cx, cv, cz] = ancestralCoefficients(t, s, 0);
      expect(cx).toBeCloseTo(1, 14);
      expect(cv).toBeCloseTo(s - t, 14);
      expect(cz).toBe(0);
    }
    expect(ancestralCoefficients(0.4, 0, 1)).toEqual([1, -0.4, 0]);
  });

  it("keeps the exact marginal x_s ~ N(0, s²) for point data at 0, for any η", () => {
    // Data x₀ = 0: x_t = t·ε and the optimal velocity is v = ε. One step gives x_s = (cx·t + cv)·ε + cz·z,
    // whose variance must be s².
    for (const eta of [0, 0.5, 1])
      for (const [t, s] of [
        [0.9, 0.6],
        [1, 0.5],
        [0.5, 0.2],
      ] as const) {
        const [cx, cv, cz] = ancestralCoefficients(t, s, eta);
        const det = cx * t + cv; // coefficient of ε in x_s (v = ε)
        expect(det * det + cz * cz).toBeCloseTo(s * s, 12);
      }
  });

  it("samples Gaussian data with the right mean and variance (exact velocity, η = 1)", () => {
    const mu = 0.6;
    const sd = 0.4;
    const g = gaussian(mu, sd);
    const n = 4000;
    const x = new Float64Array(n);
    hostOps.normal(x, 7);
    ancestralSample(field(g.velocity), hostOps, x, { steps: 200, eta: 1, seed: 11 });
    const mean = x.reduce((a, b) => a + b, 0) / n;
    const variance = x.reduce((a, b) => a + (b - mean) ** 2, 0) / n;
    expect(Math.abs(mean - mu)).toBeLessThan(5 * (sd / Math.sqrt(n)) + 0.01);
    expect(Math.abs(Math.sqrt(variance) - sd)).toBeLessThan(0.03);
  });

  it("is reproducible from the seed", () => {
    const g = gaussian(0, 1);
    const run = (seed: number) => {
      const x = Float64Array.of(0.1, -0.2, 0.3);
      ancestralSample(field(g.velocity), hostOps, x, { steps: 5, seed });
      return [...x];
    };
    expect(run(3)).toEqual(run(3));
    expect(run(3)).not.toEqual(run(4));
  });
});

describe("multi-step consistency", () => {
  it("splits the teacher schedule into segments", () => {
    expect(segmentBoundaries(100, 20)).toEqual(Array.from({ length: 21 }, (_, k) => 5 * k));
    expect(segmentBoundaries(10, 3)).toEqual([0, 3, 7, 10]);
    expect(() => segmentBoundaries(10, 11)).toThrow(/segments/);
  });

  it("with an exactly distilled segment model lands on the teacher's ODE solution", () => {
    const g = gaussian(-0.4, 0.7);
    const teacherSteps = 100;
    const segments = 20;
    const ts = flowSchedule(teacherSteps, { shift: 2 });
    const bounds = segmentBoundaries(teacherSteps, segments);
    const evaluated: StepInfo[] = [];
    // The distilled model's velocity: the average velocity to the end of the segment containing t.
    const model: VelocityModel<Float64Array> = (x, t, info) => {
      evaluated.push(info);
      const k = bounds.findIndex((b) => b > info.step) - 1;
      const end = ts[bounds[k + 1]!]!;
      return x.map((xi) => (g.flow(xi, t, end) - xi) / (end - t));
    };
    const start = [-1.5, 0.2, 2.2];
    const x = Float64Array.from(start);
    const r = consistencySample(model, hostOps, x, { teacherSteps, segments, shift: 2 });
    start.forEach((x1, i) => expect(x[i]).toBeCloseTo(g.flow(x1, 1, 0), 12));
    expect(r.evaluations).toBe(20);
    expect(evaluated.map((e) => e.step)).toEqual(bounds.slice(0, -1));
    expect(evaluated.every((e) => e.steps === 100)).toBe(true);
    expect(r.times).toEqual(bounds.slice(0, -1).map((b) => ts[b]));
  });

  it("with an undistilled velocity it is Euler on the segment boundaries", () => {
    const g = gaussian(0.3, 0.9);
    const a = Float64Array.of(0.5, -1);
    const b = Float64Array.of(0.5, -1);
    consistencySample(field(g.velocity), hostOps, a, { teacherSteps: 100, segments: 20 });
    eulerSample(field(g.velocity), hostOps, b, { steps: 20 });
    expect(a[0]).toBeCloseTo(b[0]!, 13);
    expect(a[1]).toBeCloseTo(b[1]!, 13);
  });
});
