// Samplers for flow-matching (rectified-flow) models:
//
//   x_t = (1 − t)·x₀ + t·ε,   t ∈ [0, 1],   the model predicts the velocity v(x_t, t) ≈ ε − x₀,
//
// integrated from noise at t = 1 to data at t = 0.
//
// - `eulerSample`: the probability-flow ODE by explicit Euler, x_s = x_t + (s − t)·v.
// - `ancestralSample`: Euler-ancestral (k-diffusion's euler_ancestral in σ = t/(1−t) space, i.e. DDIM
//   with η): each step predicts x̂₀ = x − t·v and ε̂ = x + (1 − t)·v, steps down to σ_down and re-noises
//   with σ_up of fresh noise. η = 0 is exactly the Euler step; η = 1 is ancestral sampling.
// - `consistencySample`: multi-step consistency sampling (Efficient-vDiT's MLCD, as in phased
//   consistency models): the teacher's schedule of `teacherSteps` is split into `segments` segments;
//   the distilled model maps a point at a segment's start to the segment's end in one step, so the
//   sampler makes one evaluation per segment (100 teacher steps → 20 evaluations). The model is told
//   the teacher step index, so a spec's per-step masks keep the teacher's step numbering.
//
// Every sampler passes {step, steps} to the model: the DiT uses it to pick the model section's kernels.
import type { VectorOps } from "./ops.ts";

export interface StepInfo {
  /** Index in the schedule the model is evaluated at (the teacher's index for consistency sampling). */
  readonly step: number;
  /** Length of that schedule. */
  readonly steps: number;
}

/** Returns the velocity at (x, t); the returned vector may be reused by the next call. */
export type VelocityModel<T> = (x: T, t: number, info: StepInfo) => T;

export interface ScheduleOptions {
  /** Time shift (SD3-style, > 1 spends more steps at high noise): t' = shift·t / (1 + (shift − 1)·t). */
  readonly shift?: number;
}

/** steps + 1 times from 1 down to 0. */
export function flowSchedule(steps: number, o: ScheduleOptions = {}): number[] {
  if (!Number.isInteger(steps) || steps < 1)
    throw new RangeError(`steps must be a positive integer, got ${steps}`);
  const shift = o.shift ?? 1;
  if (!(shift > 0)) throw new RangeError(`shift must be positive, got ${shift}`);
  return Array.from({ length: steps + 1 }, (_, i) => {
    const t = 1 - i / steps;
    return (shift * t) / (1 + (shift - 1) * t);
  });
}

export interface SampleResult {
  /** Model evaluations made. */
  readonly evaluations: number;
  /** The times the model was evaluated at, in order. */
  readonly times: readonly number[];
}

export interface SampleHooks {
  /** Called after each update with the evaluation index. */
  readonly onStep?: (evaluation: number, t: number, s: number) => void;
}

/** Integrates x (noise at t = 1, updated in place) to t = 0 with `steps` Euler steps. */
export function eulerSample<T>(
  model: VelocityModel<T>,
  ops: VectorOps<T>,
  x: T,
  o: ScheduleOptions & SampleHooks & { steps: number },
): SampleResult {
  const ts = flowSchedule(o.steps, o);
  for (let i = 0; i < o.steps; i++) {
    const v = model(x, ts[i]!, { step: i, steps: o.steps });
    ops.combine(x, [
      [1, x],
      [ts[i + 1]! - ts[i]!, v],
    ]);
    o.onStep?.(i, ts[i]!, ts[i + 1]!);
  }
  return { evaluations: o.steps, times: ts.slice(0, -1) };
}

/** Coefficients (on x, on v, on fresh noise) of one Euler-ancestral step from t down to s. */
export function ancestralCoefficients(t: number, s: number, eta: number): [number, number, number] {
  if (!(s < t)) throw new RangeError(`an ancestral step must go down in time (t=${t}, s=${s})`);
  if (s === 0) return [1, -t, 0]; // x̂₀
  const sigmaS = s / (1 - s);
  const ratio = (s * (1 - t)) / ((1 - s) * t); // σ_s/σ_t, finite at t = 1
  const up = Math.min(sigmaS, eta * sigmaS * Math.sqrt(Math.max(0, 1 - ratio * ratio)));
  const down = Math.sqrt(Math.max(0, sigmaS * sigmaS - up * up));
  // x_s = (1 − s)·(x̂₀ + σ_down·ε̂ + σ_up·z) with x̂₀ = x − t·v, ε̂ = x + (1 − t)·v
  return [(1 - s) * (1 + down), (1 - s) * (down * (1 - t) - t), (1 - s) * up];
}

/** Euler-ancestral / DDIM(η) sampling; `seed` drives the fresh noise of each step. */
export function ancestralSample<T>(
  model: VelocityModel<T>,
  ops: VectorOps<T>,
  x: T,
  o: ScheduleOptions & SampleHooks & { steps: number; eta?: number; seed: number },
): SampleResult {
  const ts = flowSchedule(o.steps, o);
  const eta = o.eta ?? 1;
  const z = ops.alloc(x);
  try {
    for (let i = 0; i < o.steps; i++) {
      const [t, s] = [ts[i]!, ts[i + 1]!];
      const v = model(x, t, { step: i, steps: o.steps });
      const [cx, cv, cz] = ancestralCoefficients(t, s, eta);
      if (cz !== 0) {
        ops.normal(z, o.seed * 1_000_003 + i);
        ops.combine(x, [
          [cx, x],
          [cv, v],
          [cz, z],
        ]);
      } else
        ops.combine(x, [
          [cx, x],
          [cv, v],
        ]);
      o.onStep?.(i, t, s);
    }
  } finally {
    ops.free(z);
  }
  return { evaluations: o.steps, times: ts.slice(0, -1) };
}

export interface ConsistencyOptions extends ScheduleOptions, SampleHooks {
  /** The teacher's step count whose schedule the segments split (the paper: 100). */
  readonly teacherSteps: number;
  /** Segments = model evaluations (the paper: 20). */
  readonly segments: number;
}

/** Teacher step indices of the segment boundaries: segments + 1 indices from 0 to teacherSteps. */
export function segmentBoundaries(teacherSteps: number, segments: number): number[] {
  if (!Number.isInteger(segments) || segments < 1 || segments > teacherSteps)
    throw new RangeError(
      `segments must be an integer in 1…${teacherSteps} (the teacher's steps), got ${segments}`,
    );
  return Array.from({ length: segments + 1 }, (_, k) => Math.round((k * teacherSteps) / segments));
}

/**
 * Multi-step consistency sampling: one evaluation per segment at its start (teacher index i, time t),
 * then a jump to the segment's end s: x_s = x_t + (s − t)·v, where the distilled model's v is the
 * segment's average velocity (so the jump lands on the teacher's trajectory).
 */
export function consistencySample<T>(
  model: VelocityModel<T>,
  ops: VectorOps<T>,
  x: T,
  o: ConsistencyOptions,
): SampleResult {
  const ts = flowSchedule(o.teacherSteps, o);
  const bounds = segmentBoundaries(o.teacherSteps, o.segments);
  const times: number[] = [];
  for (let k = 0; k < o.segments; k++) {
    const [i, j] = [bounds[k]!, bounds[k + 1]!];
    const v = model(x, ts[i]!, { step: i, steps: o.teacherSteps });
    ops.combine(x, [
      [1, x],
      [ts[j]! - ts[i]!, v],
    ]);
    times.push(ts[i]!);
    o.onStep?.(k, ts[i]!, ts[j]!);
  }
  return { evaluations: o.segments, times };
}
