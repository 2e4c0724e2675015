// tilec CUDA template: attention backward, the pieces every backward template shares (bwd_common.cuh)
//
// Concatenation order of a generated backward .cu file (backends/cuda/emitBackward.ts):
//   generated prelude (#define TILEC_*, struct TilecBwdParams) + ptx.cuh [+ ptx_sm90.cuh, tensor maps,
//   wgmma wrappers] + tilec_mask + mma_tiles.cuh + this file + bwd_sm80.cuh [+ bwd_sm90.cuh]
// The prelude defines TILEC_HEAD_DIM, TILEC_SEQ_PAD (query rows per (batch, head) of the fp32
// workspace, a multiple of 64), TILEC_STAT_ROWS (query rows per block of the first and last launch,
// which their grids divide SEQ_PAD by), one of TILEC_DTYPE_BF16 / TILEC_DTYPE_FP16, and the entry names.
//
// Math (FlashAttention-2's backward, base 2): with P = exp2(S·scale·log2 e − lse·log2 e) recomputed
// from the forward's log-sum-exp, D = rowsum(dO ∘ O),
//   dV = Pᵀ dO,  dP = dO Vᵀ,  dS = P ∘ (dP − D),  dK = scale · dSᵀ Q,  dQ = scale · dS K.
// Fully masked rows (lse = −inf) become lse·log2 e = +inf in the workspace, as do the padding rows
// past seq_len, so every P of theirs is exp2(−inf) = 0 and they add nothing, never a NaN.
#ifndef TILEC_BWD_COMMON_CUH
#define TILEC_BWD_COMMON_CUH

#if defined(TILEC_DTYPE_BF16)
#define TILEC_PACK tilec_pack_bf16
#define TILEC_UNPACK tilec_unpack_bf16
#define TILEC_MMA tilec_mma_bf16
#elif defined(TILEC_DTYPE_FP16)
#define TILEC_PACK tilec_pack_f16
#define TILEC_UNPACK tilec_unpack_f16
#define TILEC_MMA tilec_mma_f16
#else
#error "the backward templates need TILEC_DTYPE_BF16 or TILEC_DTYPE_FP16"
#endif

#define TILEC_LOG2E 1.44269504088896340736f
#define TILEC_POS_INF (__int_as_float(0x7f800000))

namespace tilec_bwd {

constexpr int D = TILEC_HEAD_DIM;
constexpr int SEQ_PAD = TILEC_SEQ_PAD;
constexpr int CPR = D / 8;  // 16-byte chunks per row of a [.., D] tile
constexpr int STAT_ROWS = TILEC_STAT_ROWS;  // rows per block of the statistics and conversion launches
static_assert(SEQ_PAD % 64 == 0, "the workspace holds whole 64-row tiles");
static_assert(SEQ_PAD % STAT_ROWS == 0 && STAT_ROWS * 4 == 128, "four threads per row, 128 per block");
static_assert(D % 16 == 0 && D <= 128, "backward: head dim a multiple of 16 up to 128");

struct alignas(16) U4 {
  u32 x, y, z, w;
};
struct alignas(16) F4 {
  float x, y, z, w;
};

// Row r of [batch, seq, heads, dim] tensor `base` for (b, h): the struct's strides, in elements.
__device__ __forceinline__ const u16* row_of(const void* base, long long sb, long long ss, long long sh, int b, int h,
                                             int r) {
  return (const u16*)base + b * sb + h * sh + (long long)r * ss;
}

// One step of a key-major pass: the GQA group's query heads one after the other, each walking the
// key block's row of the transposed lists (full, then partial). Derived once here for the producer
// (which loads the step's Q and dO) and the consumers (which need its head, rows and class entry).
struct KeyMajorWalk {
  TilecPlanRow row;
  int group, total;
  __device__ __forceinline__ KeyMajorWalk(const TilecBwdParams& p, int kb)
      : row(p.fullT_offsets, p.partialT_offsets, kb) {
    group = p.num_heads / p.num_kv_heads;
    total = row.total * group;
  }
  // Step j < total: query head (of the group, 0-based), query block, and the partial-list entry (-1: full).
  __device__ __forceinline__ void step(const TilecBwdParams& p, int j, int& head_in_group, int& qb, int& entry) const {
    head_in_group = j / row.total;
    const int r = j - head_in_group * row.total;
    qb = row.tile(p.fullT_indices, p.partialT_indices, r);
    entry = row.partial(r) ? row.entry(r) : -1;
  }
};

}  // namespace tilec_bwd

// ---------------------------------------------------------------- row statistics (first launch)
// Grid (SEQ_PAD / STAT_ROWS, heads, batch), 128 threads: 4 threads per query row. delta = rowsum(dO ∘ O) in
// fp32 from the stored (rounded) O, as the forward returned it; lse_log2 = lse·log2 e, +inf for fully
// masked rows and padding rows. When dq_accum is given (the atomic variant) its rows are zeroed here,
// on the same stream, so the dK/dV pass can add into them.
extern "C" __global__ void __launch_bounds__(128) TILEC_BWD_PRE(const TilecBwdParams p) {
  using namespace tilec_bwd;
  const int h = blockIdx.y, b = blockIdx.z;
  const int r = threadIdx.x >> 2, part = threadIdx.x & 3;
  const int row = blockIdx.x * STAT_ROWS + r;
  const long long bh = (long long)b * p.num_heads + h;
  float dot = 0.f;
  if (row < p.seq_len) {
    const u16* o = row_of(p.o, p.o_batch_stride, p.o_seq_stride, p.o_head_stride, b, h, row);
    const u16* g = row_of(p.do_, p.do_batch_stride, p.do_seq_stride, p.do_head_stride, b, h, row);
    for (int c = part; c < CPR; c += 4) {
      const U4 x = *(const U4*)(o + c * 8), y = *(const U4*)(g + c * 8);
      const u32 xs[4] = {x.x, x.y, x.z, x.w}, ys[4] = {y.x, y.y, y.z, y.w};
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        float a0, a1, b0, b1;
        TILEC_UNPACK(xs[i], a0, a1);
        TILEC_UNPACK(ys[i], b0, b1);
        dot += a0 * b0 + a1 * b1;
      }
    }
  }
  dot += __shfl_xor_sync(0xffffffffu, dot, 1);
  dot += __shfl_xor_sync(0xffffffffu, dot, 2);
  if (part == 0) {
    const float l = row < p.seq_len ? p.lse[bh * p.seq_len + row] : TILEC_NEG_INF;
    p.delta[bh * SEQ_PAD + row] = row < p.seq_len ? dot : 0.f;
    p.lse_log2[bh * SEQ_PAD + row] = l == TILEC_NEG_INF ? TILEC_POS_INF : l * TILEC_LOG2E;
  }
  if (p.dq_accum) {
    F4* acc = (F4*)(p.dq_accum + (bh * SEQ_PAD + blockIdx.x * STAT_ROWS) * D);
    for (int i = threadIdx.x; i < STAT_ROWS * D / 4; i += 128) acc[i] = F4{0.f, 0.f, 0.f, 0.f};
  }
}

// ---------------------------------------------------------------- dQ conversion (last launch, atomic variant)
// Grid (SEQ_PAD / STAT_ROWS, heads, batch), 128 threads: dq = scale · dq_accum in the tensors' dtype.
extern "C" __global__ void __launch_bounds__(128) TILEC_BWD_POST(const TilecBwdParams p) {
  using namespace tilec_bwd;
  const int h = blockIdx.y, b = blockIdx.z;
  const long long bh = (long long)b * p.num_heads + h;
  for (int i = threadIdx.x; i < STAT_ROWS * CPR; i += 128) {
    const int row = blockIdx.x * STAT_ROWS + i / CPR, c = i % CPR;
    if (row >= p.seq_len) continue;
    const F4* src = (const F4*)(p.dq_accum + (bh * SEQ_PAD + row) * D + c * 8);
    const F4 x = src[0], y = src[1];
    const float s = p.scale;
    U4 v;
    v.x = TILEC_PACK(x.x * s, x.y * s);
    v.y = TILEC_PACK(x.z * s, x.w * s);
    v.z = TILEC_PACK(y.x * s, y.y * s);
    v.w = TILEC_PACK(y.z * s, y.w * s);
    *(U4*)((u16*)p.dq + b * p.dq_batch_stride + h * p.dq_head_stride + (long long)row * p.dq_seq_stride + c * 8) = v;
  }
}

#endif  // TILEC_BWD_COMMON_CUH
