// tilec DiT: the elementwise and row kernels around the matrix products (cuBLAS) and the attention
// (tilec's kernels). Compiled at run time by NVRTC (runtime/dit/kernels.ts); no #include anywhere so
// the text compiles under NVRTC without include paths (and under nvcc for checking).
//
// Conventions: bf16 tensors are raw 16-bit patterns (unsigned short); every kernel computes in fp32
// and rounds once on store. Rows are tokens (b, n) of M = batch × tokens; C is the hidden width.
// Formulas mirror runtime/dit/math.ts and runtime/dit/cpu.ts (the float64 reference).

typedef unsigned short bf16;
typedef unsigned int u32;
typedef unsigned long long u64;

__device__ __forceinline__ float bf2f(bf16 h) { return __uint_as_float(((u32)h) << 16); }
__device__ __forceinline__ bf16 f2bf(float f) {
  bf16 r;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(f));
  return r;
}

__device__ __forceinline__ float gelu_tanh(float x) {
  const float k = 0.7978845608028654f;  // sqrt(2/pi)
  return 0.5f * x * (1.f + tanhf(k * (x + 0.044715f * x * x * x)));
}
__device__ __forceinline__ float silu(float x) { return x / (1.f + expf(-x)); }

// act: 0 none, 1 GELU-tanh, 2 SiLU
__device__ __forceinline__ float activate(float x, int act) {
  return act == 1 ? gelu_tanh(x) : act == 2 ? silu(x) : x;
}

#define GRID_STRIDE(i, n) for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < (u64)(n); i += (u64)gridDim.x * blockDim.x)

// latent fp32 [B, Cin, T, H, W] -> patch rows bf16 [B*T*(H/p)*(W/p), Cin*p*p], (c, i, j) order (Conv2d weight).
extern "C" __global__ void dit_patchify(const float* __restrict__ latent, bf16* __restrict__ out, int B, int Cin,
                                        int T, int H, int W, int p) {
  const int hp = H / p, wp = W / p, width = Cin * p * p;
  const u64 total = (u64)B * T * hp * wp * width;
  GRID_STRIDE(e, total) {
    const int col = (int)(e % width);
    const u64 row = e / width;
    const int c = col / (p * p), i = (col / p) % p, j = col % p;
    const int w = (int)(row % wp), h = (int)((row / wp) % hp), t = (int)((row / ((u64)wp * hp)) % T);
    const int b = (int)(row / ((u64)wp * hp * T));
    out[e] = f2bf(latent[((((u64)b * Cin + c) * T + t) * H + h * p + i) * W + w * p + j]);
  }
}

// proj_out rows fp32 [B*N, p*p*Cout] ((i, j, c) order) + bias -> latent fp32 [B, Cout, T, H, W].
extern "C" __global__ void dit_unpatchify(const float* __restrict__ rows, const float* __restrict__ bias,
                                          float* __restrict__ out, int B, int Cout, int T, int H, int W, int p) {
  const int hp = H / p, wp = W / p, width = Cout * p * p;
  const u64 total = (u64)B * Cout * T * H * W;
  GRID_STRIDE(e, total) {
    const int x = (int)(e % W), y = (int)((e / W) % H), t = (int)((e / ((u64)W * H)) % T);
    const int c = (int)((e / ((u64)W * H * T)) % Cout), b = (int)(e / ((u64)W * H * T * Cout));
    const u64 row = (((u64)b * T + t) * hp + y / p) * wp + x / p;
    const int col = ((y % p) * p + (x % p)) * Cout + c;
    out[e] = rows[row * width + col] + bias[col];
  }
}

// Token-row layout of a sequence-parallel rank (runtime/parallel/dit.ts): tokens [start, start + count)
// of every sample as rows fp32 [B, count, C*p*p] in patchify's (c, i, j) order. The sampler updates a
// rank's rows in place; the latent is assembled only at the end.
// Offset in latent fp32 [B, C, T, H, W] of element e of the token rows [B, count, C*p*p] that start
// at token `start` (patchify's (c, i, j) order within a row): the one index map both directions use.
__device__ __forceinline__ u64 row_element_in_latent(u64 e, int C, int T, int H, int W, int p, int start,
                                                    int count) {
  const int hp = H / p, wp = W / p, width = C * p * p;
  const int col = (int)(e % width);
  const u64 r = e / width;
  const int b = (int)(r / count), n = start + (int)(r % count);
  const int c = col / (p * p), i = (col / p) % p, j = col % p;
  const int w = n % wp, h = (n / wp) % hp, t = n / (wp * hp);
  return ((((u64)b * C + c) * T + t) * H + h * p + i) * W + w * p + j;
}

// latent fp32 [B, C, T, H, W] -> rows of tokens [start, start + count).
extern "C" __global__ void dit_latent_to_rows(const float* __restrict__ latent, float* __restrict__ rows, int B,
                                              int C, int T, int H, int W, int p, int start, int count) {
  GRID_STRIDE(e, (u64)B * count * C * p * p) rows[e] = latent[row_element_in_latent(e, C, T, H, W, p, start, count)];
}

// The inverse: rows of tokens [start, start + count) into their places of latent fp32 [B, C, T, H, W].
extern "C" __global__ void dit_rows_to_latent(const float* __restrict__ rows, float* __restrict__ latent, int B,
                                              int C, int T, int H, int W, int p, int start, int count) {
  GRID_STRIDE(e, (u64)B * count * C * p * p) latent[row_element_in_latent(e, C, T, H, W, p, start, count)] = rows[e];
}

// proj_out rows fp32 [R, p*p*C] ((i, j, c) order) + bias -> token rows fp32 [R, C*p*p] ((c, i, j) order):
// the sliced forward's output in the layout its input came in (the same sum as dit_unpatchify).
extern "C" __global__ void dit_proj_to_rows(const float* __restrict__ proj, const float* __restrict__ bias,
                                            float* __restrict__ rows, u64 R, int C, int p) {
  const int width = C * p * p;
  GRID_STRIDE(e, R * width) {
    const int col = (int)(e % width);
    const u64 r = e / width;
    const int c = col / (p * p), ij = col % (p * p);
    const int from = ij * C + c;
    rows[e] = proj[r * width + from] + bias[from];
  }
}

__device__ __forceinline__ float block_sum(float v, float* scratch) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
  __syncthreads();  // scratch may still be read by the previous reduction
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float s = lane < warps ? scratch[lane] : 0.f;
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  return s;
}

// out[r] = LayerNorm(x[r]) * (1 + scale) + shift, bf16; one block per row. The modulation of sample b is
// table[idx*C + c] + temb[b*tembStride + idx*chunkStride + c] (ada_norm_single: table = the block's
// scale_shift_table, temb = adaln_single's 6C output; final layer: chunkStride 0, temb = embedded_timestep).
extern "C" __global__ void dit_norm_modulate(const float* __restrict__ x, bf16* __restrict__ out,
                                             const float* __restrict__ table, const float* __restrict__ temb,
                                             int C, int tokens, int tembStride, int chunkStride, int shiftIdx,
                                             int scaleIdx, float eps) {
  __shared__ float scratch[32];
  const u64 r = blockIdx.x;
  const float* xr = x + r * C;
  const int b = (int)(r / tokens);
  float s = 0.f;
  for (int c = threadIdx.x; c < C; c += blockDim.x) s += xr[c];
  const float mean = block_sum(s, scratch) / C;
  float v = 0.f;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    const float d = xr[c] - mean;
    v += d * d;
  }
  const float rstd = rsqrtf(block_sum(v, scratch) / C + eps);
  const float* tb = temb + (u64)b * tembStride;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    const float shift = table[shiftIdx * C + c] + tb[shiftIdx * chunkStride + c];
    const float scale = table[scaleIdx * C + c] + tb[scaleIdx * chunkStride + c];
    out[r * C + c] = f2bf((xr[c] - mean) * rstd * (1.f + scale) + shift);
  }
}

// x += gate * (y + bias) over rows of C; gate = table[gateIdx*C + c] + temb[b*tembStride + gateIdx*C + c],
// or 1 when gateIdx < 0 (cross-attention).
extern "C" __global__ void dit_gate_residual(float* __restrict__ x, const bf16* __restrict__ y,
                                             const float* __restrict__ bias, const float* __restrict__ table,
                                             const float* __restrict__ temb, u64 rows, int C, int tokens,
                                             int tembStride, int gateIdx) {
  GRID_STRIDE(e, rows * C) {
    const int c = (int)(e % C);
    const u64 r = e / C;
    float g = 1.f;
    if (gateIdx >= 0) g = table[gateIdx * C + c] + temb[(r / tokens) * tembStride + gateIdx * C + c];
    x[e] += g * (bf2f(y[e]) + bias[c]);
  }
}

// y = act(y + bias) in place, bf16 rows of `cols` (bias may be null).
extern "C" __global__ void dit_bias_act_bf16(bf16* __restrict__ y, const float* __restrict__ bias, u64 rows,
                                             int cols, int act) {
  GRID_STRIDE(e, rows * cols) {
    const float b = bias ? bias[e % cols] : 0.f;
    y[e] = f2bf(activate(bf2f(y[e]) + b, act));
  }
}

// act(in + bias) from fp32 into fp32 and/or bf16 outputs (either may be null; outF may alias in).
extern "C" __global__ void dit_bias_act_f32(const float* in, const float* __restrict__ bias, float* outF,
                                            bf16* __restrict__ outB, u64 rows, int cols, int act) {
  GRID_STRIDE(e, rows * cols) {
    const float v = activate(in[e] + (bias ? bias[e % cols] : 0.f), act);
    if (outF) outF[e] = v;
    if (outB) outB[e] = f2bf(v);
  }
}

// q, k, v each [M, heads*D] bf16: add the projection biases (bias [3*heads*D] for q, k, v; may be null),
// then rotate q and k by OSP's RoPE3D at the rows' global token positions: row r is token
// start + r % tokens of its sample (a sequence-parallel rank holds tokens [start, start + tokens); the
// whole sequence is start 0, tokens T*Hh*Ww). One thread per (which, row, head, pair j < D/2): the head
// vector is three thirds (t, h, w) of width P = D/3; pair (j, j + P/2) of a third rotates by
// pos/scale · base^(−2j/P) (rotate_half convention).
extern "C" __global__ void dit_qkv_bias_rope(bf16* __restrict__ q, bf16* __restrict__ k, bf16* __restrict__ v,
                                             const float* __restrict__ bias, int M, int tokens, int start,
                                             int heads, int D, int T, int Hh, int Ww, float invScaleT,
                                             float invScaleH, float invScaleW, float log2Base) {
  const int pairs = D / 2, third = D / 3, half = third / 2;
  const u64 perMatrix = (u64)M * heads * pairs;
  const int HD = heads * D;
  GRID_STRIDE(e, 3 * perMatrix) {
    const int which = (int)(e / perMatrix);
    const u64 rem = e % perMatrix;
    const int j = (int)(rem % pairs);
    const int h = (int)((rem / pairs) % heads);
    const u64 row = rem / ((u64)pairs * heads);
    const int axis = j / half, jj = j % half;
    const int d0 = axis * third + jj, d1 = d0 + half;
    bf16* base = (which == 0 ? q : which == 1 ? k : v) + row * HD + h * D;
    float x0 = bf2f(base[d0]), x1 = bf2f(base[d1]);
    if (bias) {
      x0 += bias[which * HD + h * D + d0];
      x1 += bias[which * HD + h * D + d1];
    }
    if (which < 2) {
      const int n = start + (int)(row % (u64)tokens);
      const float pos = axis == 0 ? (n / (Hh * Ww)) * invScaleT
                        : axis == 1 ? ((n / Ww) % Hh) * invScaleH
                                    : (n % Ww) * invScaleW;
      const float angle = pos * exp2f(-log2Base * (2.f * jj) / third);
      float s, c;
      sincosf(angle, &s, &c);
      const float y0 = x0 * c - x1 * s, y1 = x1 * c + x0 * s;
      x0 = y0;
      x1 = y1;
    }
    base[d0] = f2bf(x0);
    base[d1] = f2bf(x1);
  }
}

// Row softmax of fp32 scores [rows, cols] into bf16 probabilities over the first `valid` columns (the
// rest 0; valid = 0 gives an all-zero row). One warp per row.
extern "C" __global__ void dit_softmax_rows(const float* __restrict__ s, bf16* __restrict__ p, u64 rows, int cols,
                                            int valid) {
  const u64 row = (blockIdx.x * (u64)blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const float* sr = s + row * cols;
  bf16* pr = p + row * cols;
  float m = __int_as_float(0xff800000);  // -inf (no headers under NVRTC)
  for (int c = lane; c < valid; c += 32) m = fmaxf(m, sr[c]);
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  float sum = 0.f;
  for (int c = lane; c < valid; c += 32) sum += expf(sr[c] - m);
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  const float inv = valid > 0 ? 1.f / sum : 0.f;
  for (int c = lane; c < cols; c += 32) pr[c] = f2bf(c < valid ? expf(sr[c] - m) * inv : 0.f);
}

extern "C" __global__ void dit_cast_bf16(const float* __restrict__ x, bf16* __restrict__ y, u64 n) {
  GRID_STRIDE(e, n) y[e] = f2bf(x[e]);
}

// out = a*x + b*y + c*z (y, z may be null): the samplers' update on fp32 latents. out may alias x.
extern "C" __global__ void dit_lincomb(float* out, const float* x, float a, const float* y, float b, const float* z,
                                       float c, u64 n) {
  GRID_STRIDE(e, n) {
    float v = a * x[e];
    if (y) v += b * y[e];
    if (z) v += c * z[e];
    out[e] = v;
  }
}

// Counter-based random numbers (splitmix64 of seed and index): reproducible, no state.
__device__ __forceinline__ u64 mix64(u64 z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
__device__ __forceinline__ float unit(u64 bits) { return ((bits >> 40) + 0.5f) * (1.f / 16777216.f); }  // (0,1)

// Uniform in [-scale, scale): bf16 (outB) or fp32 (outF) — random weights for benchmarks.
extern "C" __global__ void dit_random_uniform(bf16* outB, float* outF, u64 n, u64 seed, float scale) {
  GRID_STRIDE(e, n) {
    const float v = (2.f * unit(mix64(seed * 0x100000001b3ull + e)) - 1.f) * scale;
    if (outB) outB[e] = f2bf(v);
    else outF[e] = v;
  }
}

// Standard normal fp32 (Box–Muller): the samplers' noise.
extern "C" __global__ void dit_random_normal(float* out, u64 n, u64 seed) {
  GRID_STRIDE(e, n) {
    const u64 a = mix64(seed * 0x100000001b3ull + 2 * e), b = mix64(seed * 0x100000001b3ull + 2 * e + 1);
    out[e] = sqrtf(-2.f * logf(unit(a))) * cospif(2.f * unit(b));
  }
}
