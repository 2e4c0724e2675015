// The WGSL tiled matrix product, embedded as a string so the emitter also runs in a browser.
// matmul.ts prepends the constants (tile sizes, storage type) and unrolls the register
// loops (i < RM, j < RN, e < LOADS_*) so the invocation's private arrays see constant indices only.
//
//   C[z][m, n] = act(alpha · Σ_k A[z][m, k] · B[z][n, k] + bias[n]) + beta · C[z][m, n]
//
// B is [N, K] (a linear layer's weight, TRANS_B) or [K, N]; z is the batch index, split into
// (outer, inner) = (z / batch_inner, z % batch_inner) with a stride per level and operand, so a
// [batch, tokens, heads, dim] tensor is batched per (sample, head) in one dispatch.
//
// One workgroup computes a BM × BN tile of C: invocation (tx, ty) of TX × TY owns rows ty + TY·i
// (i < RM) and columns tx + TX·j (j < RN), so neighbouring invocations write neighbouring columns.
// K advances BK at a time through workgroup tiles of A and B stored k-major ([k][row], rows padded
// by one so the transposing stores spread over the banks); edges load zeros, stores are masked.

export const MATMUL_TEMPLATE = `struct Params {
  m: u32,
  n: u32,
  k: u32,
  batch_inner: u32,
  lda: u32,
  ldb: u32,
  ldc: u32,
  alpha: f32,
  a_off: u32,
  b_off: u32,
  c_off: u32,
  bias_off: u32,
  a_outer: u32,
  a_inner: u32,
  b_outer: u32,
  b_inner: u32,
  c_outer: u32,
  c_inner: u32,
  beta: f32,
  flags: u32, // bit 0: add bias; bits 1-2: activation (ACTIVATION_CODES)
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a_in: array<st>;
@group(0) @binding(2) var<storage, read> b_in: array<st>;
@group(0) @binding(3) var<storage, read> bias_in: array<st>;
@group(0) @binding(4) var<storage, read_write> c_out: array<st>;

var<workgroup> a_s: array<f32, BK * BMP>;
var<workgroup> b_s: array<f32, BK * BNP>;

// GELU-tanh as diffusers' approximate="tanh", with tanh(y) = 1 - 2 / (exp(2y) + 1) clamped so a large
// |y| saturates instead of giving inf/inf.
fn activation(x: f32, act: u32) -> f32 {
  if (act == 1u) {
    return x / (1.0 + exp(-x));
  }
  if (act == 2u) {
    let y = 0.7978845608028654 * (x + 0.044715 * x * x * x);
    let t = 1.0 - 2.0 / (exp(2.0 * clamp(y, -15.0, 15.0)) + 1.0);
    return 0.5 * x * (1.0 + t);
  }
  return x;
}

@compute @workgroup_size(TX, TY)
fn {{ENTRY}}(@builtin(local_invocation_index) lid: u32, @builtin(local_invocation_id) li: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let m0 = wid.y * BM;
  let n0 = wid.x * BN;
  let outer = wid.z / params.batch_inner;
  let inner = wid.z % params.batch_inner;
  let a_base = params.a_off + outer * params.a_outer + inner * params.a_inner;
  let b_base = params.b_off + outer * params.b_outer + inner * params.b_inner;
  let c_base = params.c_off + outer * params.c_outer + inner * params.c_inner;
  let tx = li.x;
  let ty = li.y;
  var acc: array<f32, RM * RN>;
  var av: array<f32, RM>;
  var bv: array<f32, RN>;
  for (var k0 = 0u; k0 < params.k; k0 += BK) {
    // A tile: BM rows × BK, consecutive invocations along k (rows of A are k-contiguous).
    for (var e = 0u; e < LOADS_A; e++) {
      let idx = lid + WG * e;
      let row = idx / BK;
      let kk = idx % BK;
      let gm = m0 + row;
      let gk = k0 + kk;
      var x = 0.0;
      if (gm < params.m && gk < params.k) {
        x = f32(a_in[a_base + gm * params.lda + gk]);
      }
      a_s[kk * BMP + row] = x;
    }
    for (var e = 0u; e < LOADS_B; e++) {
      let idx = lid + WG * e;
{{LOAD_B}}
      var x = 0.0;
      if (gn < params.n && gk < params.k) {
        x = f32(b_in[b_at]);
      }
      b_s[kk * BNP + col] = x;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < BK; kk++) {
      for (var i = 0u; i < RM; i++) {
        av[i] = a_s[kk * BMP + ty + TY * i];
      }
      for (var j = 0u; j < RN; j++) {
        bv[j] = b_s[kk * BNP + tx + TX * j];
      }
      for (var i = 0u; i < RM; i++) {
        for (var j = 0u; j < RN; j++) {
          acc[i * RN + j] = fma(av[i], bv[j], acc[i * RN + j]);
        }
      }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < RM; i++) {
    let row = m0 + ty + TY * i;
    for (var j = 0u; j < RN; j++) {
      let col = n0 + tx + TX * j;
      if (row < params.m && col < params.n) {
        var v = params.alpha * acc[i * RN + j];
        if ((params.flags & 1u) != 0u) {
          v += f32(bias_in[params.bias_off + col]);
        }
        v = activation(v, params.flags >> 1u);
        let at = c_base + row * params.ldc + col;
        if (params.beta != 0.0) { // never read C otherwise: it may hold NaN
          v += params.beta * f32(c_out[at]);
        }
        c_out[at] = st(v);
      }
    }
  }
}
`;

/** B [N, K]: consecutive invocations along k, like A. */
export const LOAD_B_TRANSPOSED = `      let col = idx / BK;
      let kk = idx % BK;
      let gn = n0 + col;
      let gk = k0 + kk;
      let b_at = b_base + gn * params.ldb + gk;`;

/** B [K, N]: consecutive invocations along n (rows of B are n-contiguous). */
export const LOAD_B_PLAIN = `      let kk = idx / BN;
      let col = idx % BN;
      let gn = n0 + col;
      let gk = k0 + kk;
      let b_at = b_base + gk * params.ldb + gn;`;

/** Epilogue activations (applied before the beta·C term) and their codes in params.flags. */
export const ACTIVATION_CODES = { none: 0, silu: 1, gelu_tanh: 2 } as const;
