// Scalar definitions shared by the float64 CPU forward and the host side of the GPU forward: the
// sinusoidal timestep features, GELU-tanh, and the 3D rotary embedding's token positions and angles.
// The CUDA kernels (kernels/elementwise.ts) implement the same formulas; the tests tie the two.

/**
 * diffusers `Timesteps(channels, flip_sin_to_cos=True, downscale_freq_shift=0)`: for i < channels/2,
 * f_i = exp(−ln(10000)·i/(channels/2)); features = [cos(t·f), sin(t·f)].
 */
export function timestepFeatures(t: number, channels: number): Float64Array {
  const half = channels / 2;
  const out = new Float64Array(channels);
  for (let i = 0; i < half; i++) {
    const arg = t * Math.exp((-Math.log(10000) * i) / half);
    out[i] = Math.cos(arg);
    out[half + i] = Math.sin(arg);
  }
  return out;
}

export function geluTanh(x: number): number {
  return 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)));
}

export function silu(x: number): number {
  return x / (1 + Math.exp(-x));
}

export interface Grid {
  readonly frames: number;
  readonly height: number;
  readonly width: number;
}

/** (frame, row, column) of token n in the frame-major order patchify produces (and the layouts use). */
export function tokenPosition(grid: Grid, n: number): [number, number, number] {
  const perFrame = grid.height * grid.width;
  return [Math.floor(n / perFrame), Math.floor(n / grid.width) % grid.height, n % grid.width];
}

export interface RopeParams {
  readonly headDim: number;
  readonly base: number;
  /** Positions are divided by these (OSP's interpolation scales) per axis t, h, w. */
  readonly scales: readonly [number, number, number];
}

/**
 * Applies OSP's RoPE3D in place to one head vector (length headDim) of token n: the vector splits into
 * three thirds (t, h, w); within a third of width P, pairs (j, j + P/2) rotate by
 * pos · base^(−2j/P) (rotate_half convention).
 */
export function applyRope(
  vec: Float64Array,
  offset: number,
  pos: readonly [number, number, number],
  r: RopeParams,
): void {
  const third = r.headDim / 3;
  const half = third / 2;
  for (let axis = 0; axis < 3; axis++) {
    const p = pos[axis]! / r.scales[axis]!;
    for (let j = 0; j < half; j++) {
      const angle = p * Math.pow(r.base, (-2 * j) / third);
      const c = Math.cos(angle);
      const s = Math.sin(angle);
      const i0 = offset + axis * third + j;
      const i1 = i0 + half;
      const x0 = vec[i0]!;
      const x1 = vec[i1]!;
      vec[i0] = x0 * c - x1 * s;
      vec[i1] = x1 * c + x0 * s;
    }
  }
}
