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
// Entry-point builtins of both kernel shapes.
const ENTRY_ARGS = `@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>`;

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

/** A storage binding of the kernel (bindings 1…; binding 0 is the uniform block `params`). */
type Storage = readonly [name: string, access: "read" | "read_write", element: "f32" | "u32"];

/**
 * Assembles one kernel: the uniform block from `fields` (all 32-bit, so its size is 4 bytes a field
 * rounded up to 16), the storage bindings in order, then either a flat entry (one invocation per
 * element, `e` < params.n) or a row entry (one workgroup per row, `r` < params.rows) around `body`.
 */
function kernel(
  shape: "flat" | "row",
  entry: string,
  fields: string,
  storage: readonly Storage[],
  body: string,
): DitWgslKernel {
  const declarations = storage.map(
    ([name, access, element], i) =>
      `@group(0) @binding(${i + 1}) var<storage, ${access}> ${name}: array<${element}>;`,
  );
  const flat = shape === "flat";
  const source = [
    `struct Params { ${fields} }`,
    "@group(0) @binding(0) var<uniform> params: Params;",
    ...declarations,
    flat ? FLAT : ROW_REDUCE,
    `@compute @workgroup_size(${flat ? FLAT_WG : ROW_WG})`,
    `fn ${entry}(${ENTRY_ARGS}) {`,
    flat
      ? "  let e = flat_index(wid, nwg, lid);\n  if (e >= params.n) { return; }"
      : "  let r = wid.y * nwg.x + wid.x;\n  if (r >= params.rows) { return; } // workgroup-uniform",
    body.replace(/^\n/, "").trimEnd(),
    "}",
    "",
  ].join("\n");
  return {
    entry,
    source,
    bindings: [
      "uniform",
      ...storage.map(([, a]) => (a === "read" ? "read-only-storage" : "storage") as BindingType),
    ],
    paramsBytes: Math.ceil((fields.split(",").length * 4) / 16) * 16,
  };
}

// Coordinates (b, c, t, y, x) of element e of a latent [B, C, T, H, W].
const LATENT_COORDS = `  let p = params.p;
  let x = e % params.W;
  let y = (e / params.W) % params.H;
  let t = (e / (params.W * params.H)) % params.T;
  let c = (e / (params.W * params.H * params.T)) % params.C;
  let b = e / (params.W * params.H * params.T * params.C);
  let row = ((b * params.T + t) * (params.H / p) + y / p) * (params.W / p) + x / p;`;
const LATENT_FIELDS = "n: u32, C: u32, T: u32, H: u32, W: u32, p: u32";

/** latent [B, C, T, H, W] → patch rows [(b, t, y/p, x/p), (c, y%p, x%p)] (a Conv2d weight's order). */
export const PATCHIFY = kernel(
  "flat",
  "dit_patchify",
  LATENT_FIELDS,
  [
    ["latent", "read", "f32"],
    ["rows", "read_write", "f32"],
  ],
  `${LATENT_COORDS}
  let col = (c * p + y % p) * p + x % p;
  rows[row * params.C * p * p + col] = latent[e];`,
);

/** proj_out rows [(b, t, y/p, x/p), (y%p, x%p, c)] → out [B, C, T, H, W] (OSP's unpatchify einsum). */
export const UNPATCHIFY = kernel(
  "flat",
  "dit_unpatchify",
  LATENT_FIELDS,
  [
    ["rows", "read", "f32"],
    ["out", "read_write", "f32"],
  ],
  `${LATENT_COORDS}
  let col = ((y % p) * p + x % p) * params.C + c;
  out[e] = rows[row * params.C * p * p + col];`,
);

/** y = x / (1 + e^−x) over n elements. */
export const SILU = kernel(
  "flat",
  "dit_silu",
  "n: u32",
  [
    ["x", "read", "f32"],
    ["y", "read_write", "f32"],
  ],
  `  let v = x[e];
  y[e] = v / (1.0 + exp(-v));`,
);

/**
 * One workgroup per row of x [rows, C]: LayerNorm without affine parameters, then
 * out = x̂ · (1 + scale) + shift, with shift = table[shift_idx·C + c] + temb[b·temb_stride +
 * shift_idx·chunk_stride + c] (scale alike) and b = row / tokens.
 */
export const NORM_MODULATE = kernel(
  "row",
  "dit_norm_modulate",
  "rows: u32, C: u32, tokens: u32, temb_stride: u32, chunk_stride: u32, shift_idx: u32, scale_idx: u32, eps: f32",
  [
    ["x", "read", "f32"],
    ["out", "read_write", "f32"],
    ["table", "read", "f32"],
    ["temb", "read", "f32"],
  ],
  `  let C = params.C;
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
  }`,
);

/**
 * OSP's RoPE3D on q and k [rows, heads, D] in place: per head, thirds (t, h, w) of width D/3 whose
 * pairs (j, j + D/6) rotate by the angle of the token's position on that axis. cos/sin come from
 * `angles` (float64-computed on the host): [cos | sin], each [axis offset + position][j < D/6].
 * Elements e enumerate (row, head, axis, j) over rows × heads × 3 × half.
 */
export const ROPE = kernel(
  "flat",
  "dit_rope",
  "n: u32, heads: u32, D: u32, tokens: u32, gh: u32, gw: u32, off_h: u32, off_w: u32, sin_at: u32",
  [
    ["q", "read_write", "f32"],
    ["k", "read_write", "f32"],
    ["angles", "read", "f32"],
  ],
  `  let third = params.D / 3u;
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
  k[i1] = k1 * cs + k0 * sn;`,
);

/** x[r, c] += gate · y[r, c], gate = table[gate_idx·C + c] + temb[b·temb_stride + gate_idx·C + c]. */
export const GATE_RESIDUAL = kernel(
  "flat",
  "dit_gate_residual",
  "n: u32, C: u32, tokens: u32, temb_stride: u32, gate_idx: u32",
  [
    ["x", "read_write", "f32"],
    ["y", "read", "f32"],
    ["table", "read", "f32"],
    ["temb", "read", "f32"],
  ],
  `  let c = e % params.C;
  let b = e / (params.C * params.tokens);
  let g = params.gate_idx * params.C + c;
  x[e] += (table[g] + temb[b * params.temb_stride + g]) * y[e];`,
);

/**
 * One workgroup per row of scores [rows, cols]: softmax over the first valid[row / rows_per_sample]
 * columns, 0 beyond them (padded text tokens) and in rows whose sample has no valid token.
 */
export const SOFTMAX_ROWS = kernel(
  "row",
  "dit_softmax_rows",
  "rows: u32, cols: u32, rows_per_sample: u32",
  [
    ["s", "read_write", "f32"],
    ["valid", "read", "u32"],
  ],
  `  let base = r * params.cols;
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
  }`,
);

export const DIT_WGSL_KERNELS = [
  PATCHIFY,
  UNPATCHIFY,
  SILU,
  NORM_MODULATE,
  ROPE,
  GATE_RESIDUAL,
  SOFTMAX_ROWS,
];
