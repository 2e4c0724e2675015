// The WebGPU DiT's elementwise kernels (the counterparts of kernels/dit.cu), f32 throughout. Matrix
// products (with their bias, SiLU/GELU-tanh and residual add) run in the WGSL matmul; these do the
// rest: patchify, LayerNorm + adaLN modulation, 3D RoPE, gated residual adds, masked softmax rows,
// SiLU and unpatchify. Each source is one shader module; `bindings` lists its group-0 bindings.
import type { BindingType } from "../../webgpu/dispatch.ts";

export interface DitWgslKernel {
  readonly entry: string;
  readonly source: string;
  readonly bindings: readonly BindingType[];
  /** Bytes of the uniform block (binding 0). */
  readonly paramsBytes: number;
}

/** Invocations per workgroup of the flat (one invocation per element) kernels. */
export const FLAT_WG = 256;
/** Invocations per workgroup of the row kernels (one workgroup per row). */
export const ROW_WG = 64;

// A flat index over a 2D grid of workgroups (x ≤ maxComputeWorkgroupsPerDimension).
const FLAT = `fn flat_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
  return (wid.y * nwg.x + wid.x) * ${FLAT_WG}u + lid;
}`;
const FLAT_ARGS = `@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>`;

// Sum or max of one value per invocation over the workgroup (result in every invocation).
const ROW_REDUCE = `var<workgroup> red: array<f32, ${ROW_WG}>;
fn row_reduce(v: f32, lid: u32, is_max: bool) -> f32 {
  workgroupBarrier(); // earlier readers of red are done
  red[lid] = v;
  for (var s = ${ROW_WG / 2}u; s > 0u; s = s >> 1u) {
    workgroupBarrier();
    if (lid < s) {
      red[lid] = select(red[lid] + red[lid + s], max(red[lid], red[lid + s]), is_max);
    }
  }
  workgroupBarrier();
  return red[0];
}`;
const ROW_ARGS = `@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>`;

const U = "uniform" as const;
const R = "read-only-storage" as const;
const W = "storage" as const;

/** latent [B, C, T, H, W] → patch rows [(b, t, y/p, x/p), (c, y%p, x%p)] (a Conv2d weight's order). */
export const PATCHIFY: DitWgslKernel = {
  entry: "dit_patchify",
  bindings: [U, R, W],
  paramsBytes: 32,
  source: `struct Params { n: u32, C: u32, T: u32, H: u32, W: u32, p: u32 }
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> latent: array<f32>;
@group(0) @binding(2) var<storage, read_write> rows: array<f32>;
${FLAT}
@compute @workgroup_size(${FLAT_WG})
fn dit_patchify(${FLAT_ARGS}) {
  let e = flat_index(wid, nwg, lid);
  if (e >= params.n) { return; }
  let p = params.p;
  let x = e % params.W;
  let y = (e / params.W) % params.H;
  let t = (e / (params.W * params.H)) % params.T;
  let c = (e / (params.W * params.H * params.T)) % params.C;
  let b = e / (params.W * params.H * params.T * params.C);
  let hp = params.H / p;
  let wp = params.W / p;
  let row = ((b * params.T + t) * hp + y / p) * wp + x / p;
  let col = (c * p + y % p) * p + x % p;
  rows[row * params.C * p * p + col] = latent[e];
}
`,
};

/** proj_out rows [(b, t, y/p, x/p), (y%p, x%p, c)] → out [B, C, T, H, W] (OSP's unpatchify einsum). */
export const UNPATCHIFY: DitWgslKernel = {
  entry: "dit_unpatchify",
  bindings: [U, R, W],
  paramsBytes: 32,
  source: `struct Params { n: u32, C: u32, T: u32, H: u32, W: u32, p: u32 }
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> rows: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
${FLAT}
@compute @workgroup_size(${FLAT_WG})
fn dit_unpatchify(${FLAT_ARGS}) {
  let e = flat_index(wid, nwg, lid);
  if (e >= params.n) { return; }
  let p = params.p;
  let x = e % params.W;
  let y = (e / params.W) % params.H;
  let t = (e / (params.W * params.H)) % params.T;
  let c = (e / (params.W * params.H * params.T)) % params.C;
  let b = e / (params.W * params.H * params.T * params.C);
  let row = ((b * params.T + t) * (params.H / p) + y / p) * (params.W / p) + x / p;
  let col = ((y % p) * p + x % p) * params.C + c;
  out[e] = rows[row * params.C * p * p + col];
}
`,
};

/** y = x / (1 + e^−x) over n elements. */
export const SILU: DitWgslKernel = {
  entry: "dit_silu",
  bindings: [U, R, W],
  paramsBytes: 16,
  source: `struct Params { n: u32 }
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
${FLAT}
@compute @workgroup_size(${FLAT_WG})
fn dit_silu(${FLAT_ARGS}) {
  let e = flat_index(wid, nwg, lid);
  if (e >= params.n) { return; }
  let v = x[e];
  y[e] = v / (1.0 + exp(-v));
}
`,
};

/**
 * One workgroup per row of x [rows, C]: LayerNorm without affine parameters, then
 * out = x̂ · (1 + scale) + shift, with shift = table[shift_idx·C + c] + temb[b·temb_stride +
 * shift_idx·chunk_stride + c] (scale alike) and b = row / tokens.
 */
export const NORM_MODULATE: DitWgslKernel = {
  entry: "dit_norm_modulate",
  bindings: [U, R, W, R, R],
  paramsBytes: 32,
  source: `struct Params { rows: u32, C: u32, tokens: u32, temb_stride: u32, chunk_stride: u32, shift_idx: u32, scale_idx: u32, eps: f32 }
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read> table: array<f32>;
@group(0) @binding(4) var<storage, read> temb: array<f32>;
${ROW_REDUCE}
@compute @workgroup_size(${ROW_WG})
fn dit_norm_modulate(${ROW_ARGS}) {
  let r = wid.y * nwg.x + wid.x;
  if (r >= params.rows) { return; } // workgroup-uniform
  let C = params.C;
  let base = r * C;
  var s = 0.0;
  for (var c = lid; c < C; c += ${ROW_WG}u) { s += x[base + c]; }
  let mean = row_reduce(s, lid, false) / f32(C);
  var v = 0.0;
  for (var c = lid; c < C; c += ${ROW_WG}u) {
    let d = x[base + c] - mean;
    v += d * d;
  }
  let rstd = inverseSqrt(row_reduce(v, lid, false) / f32(C) + params.eps);
  let tb = (r / params.tokens) * params.temb_stride;
  for (var c = lid; c < C; c += ${ROW_WG}u) {
    let shift = table[params.shift_idx * C + c] + temb[tb + params.shift_idx * params.chunk_stride + c];
    let scale = table[params.scale_idx * C + c] + temb[tb + params.scale_idx * params.chunk_stride + c];
    out[base + c] = (x[base + c] - mean) * rstd * (1.0 + scale) + shift;
  }
}
`,
};

/**
 * OSP's RoPE3D on q and k [rows, heads, D] in place: per head, thirds (t, h, w) of width D/3 whose
 * pairs (j, j + D/6) rotate by the angle of the token's position on that axis. cos/sin come from
 * `angles` (float64-computed on the host): [cos | sin], each [axis offset + position][j < D/6].
 */
export const ROPE: DitWgslKernel = {
  entry: "dit_rope",
  bindings: [U, W, W, R],
  paramsBytes: 48,
  source: `struct Params { n: u32, heads: u32, D: u32, tokens: u32, gh: u32, gw: u32, off_h: u32, off_w: u32, sin_at: u32 }
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> q: array<f32>;
@group(0) @binding(2) var<storage, read_write> k: array<f32>;
@group(0) @binding(3) var<storage, read> angles: array<f32>;
${FLAT}
@compute @workgroup_size(${FLAT_WG})
fn dit_rope(${FLAT_ARGS}) {
  let e = flat_index(wid, nwg, lid); // (row, head, axis, j) over rows × heads × 3 × half
  if (e >= params.n) { return; }
  let third = params.D / 3u;
  let half = third / 2u;
  let j = e % half;
  let axis = (e / half) % 3u;
  let h = (e / (3u * half)) % params.heads;
  let row = e / (3u * half * params.heads);
  let n = row % params.tokens;
  let pos = select(select(n % params.gw + params.off_w, (n / params.gw) % params.gh + params.off_h, axis == 1u), n / (params.gh * params.gw), axis == 0u);
  let cs = angles[pos * half + j];
  let sn = angles[params.sin_at + pos * half + j];
  let i0 = row * params.heads * params.D + h * params.D + axis * third + j;
  let i1 = i0 + half;
  let q0 = q[i0];
  let q1 = q[i1];
  q[i0] = q0 * cs - q1 * sn;
  q[i1] = q1 * cs + q0 * sn;
  let k0 = k[i0];
  let k1 = k[i1];
  k[i0] = k0 * cs - k1 * sn;
  k[i1] = k1 * cs + k0 * sn;
}
`,
};

/** x[r, c] += gate · y[r, c], gate = table[gate_idx·C + c] + temb[b·temb_stride + gate_idx·C + c]. */
export const GATE_RESIDUAL: DitWgslKernel = {
  entry: "dit_gate_residual",
  bindings: [U, W, R, R, R],
  paramsBytes: 32,
  source: `struct Params { n: u32, C: u32, tokens: u32, temb_stride: u32, gate_idx: u32 }
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read> table: array<f32>;
@group(0) @binding(4) var<storage, read> temb: array<f32>;
${FLAT}
@compute @workgroup_size(${FLAT_WG})
fn dit_gate_residual(${FLAT_ARGS}) {
  let e = flat_index(wid, nwg, lid);
  if (e >= params.n) { return; }
  let c = e % params.C;
  let b = e / (params.C * params.tokens);
  let g = params.gate_idx * params.C + c;
  x[e] += (table[g] + temb[b * params.temb_stride + g]) * y[e];
}
`,
};

/**
 * One workgroup per row of scores [rows, cols]: softmax over the first valid[row / rows_per_sample]
 * columns, 0 beyond them (padded text tokens) and in rows whose sample has no valid token.
 */
export const SOFTMAX_ROWS: DitWgslKernel = {
  entry: "dit_softmax_rows",
  bindings: [U, W, R],
  paramsBytes: 16,
  source: `struct Params { rows: u32, cols: u32, rows_per_sample: u32 }
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> s: array<f32>;
@group(0) @binding(2) var<storage, read> valid: array<u32>;
${ROW_REDUCE}
@compute @workgroup_size(${ROW_WG})
fn dit_softmax_rows(${ROW_ARGS}) {
  let r = wid.y * nwg.x + wid.x;
  if (r >= params.rows) { return; } // workgroup-uniform
  let base = r * params.cols;
  let nv = valid[r / params.rows_per_sample];
  var m = -3.0e38;
  for (var c = lid; c < nv; c += ${ROW_WG}u) { m = max(m, s[base + c]); }
  m = row_reduce(m, lid, true);
  var sum = 0.0;
  for (var c = lid; c < nv; c += ${ROW_WG}u) { sum += exp(s[base + c] - m); }
  sum = row_reduce(sum, lid, false);
  let inv = select(0.0, 1.0 / sum, nv > 0u);
  for (var c = lid; c < params.cols; c += ${ROW_WG}u) {
    s[base + c] = select(0.0, exp(s[base + c] - m) * inv, c < nv);
  }
}
`,
};

export const DIT_WGSL_KERNELS = [
  PATCHIFY,
  UNPATCHIFY,
  SILU,
  NORM_MODULATE,
  ROPE,
  GATE_RESIDUAL,
  SOFTMAX_ROWS,
];
