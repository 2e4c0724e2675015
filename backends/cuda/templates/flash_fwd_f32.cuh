// tilec CUDA template: block-sparse attention forward, fp32 SIMT path, sm_80+
// (flash_fwd_f32.cuh)
//
// Concatenation order of the generated .cu file (done by the TS backend):
//   generated prelude  +  ptx.cuh  +  this file        (no #include anywhere)
// The prelude defines TILEC_HEAD_DIM, TILEC_BLOCK_Q, TILEC_BLOCK_KV,
// TILEC_NUM_WARPS, TILEC_STAGES, TILEC_KERNEL_NAME, TILEC_DTYPE_FP32 and
//   __device__ __forceinline__ bool tilec_mask(int q, int k);   // global token ids
// Same entry point, parameters (struct TilecParams in ptx.cuh), grid, plan and
// masking semantics as flash_fwd_sm80.cuh, but all math is plain fp32 FMA (no
// tf32 tensor cores), for results within ~1e-6 of a float64 reference.
//
// Launch: grid (ceil(seq_len / BLOCK_Q), num_heads, batch), block NUM_WARPS*32,
// dynamic shared memory TILEC_SMEM_BYTES =
//     ((BLOCK_Q + 2*STAGES*BLOCK_KV) * (HEAD_DIM + 4) + BLOCK_Q * (SKV + 8)) * 4
// with SKV = 32 if BLOCK_KV % 32 == 0 else 16 (Q tile, STAGES x {K, V} tiles
// with rows padded by 16 bytes against bank conflicts, and a per-warp P tile).
// e.g. d=64, 64x64, 2 stages: 99,840 B. Above 48 KB the host must raise
// cudaFuncAttributeMaxDynamicSharedMemorySize.
//
// Thread layout: warp w owns query rows [w*WROWS, (w+1)*WROWS). Lane = rl*8+cl;
// the lane holds rows rl+4i (i < WROWS/4); for S it holds keys cl+8j of the
// current SKV-key step, for O the dims 2cl+16j, 2cl+16j+1. Row reductions are
// shuffles over the 8 lanes with the same rl. P goes through a per-warp smem
// tile to switch from the key layout to the row-broadcast layout of P.V.
#ifndef TILEC_FLASH_FWD_F32_CUH
#define TILEC_FLASH_FWD_F32_CUH

#if !defined(TILEC_DTYPE_FP32)
#error "flash_fwd_f32.cuh is the TILEC_DTYPE_FP32 kernel"
#endif

#define TILEC_F32_SKV ((TILEC_BLOCK_KV % 32 == 0) ? 32 : 16)
#define TILEC_SMEM_BYTES                                                                    \
  (((TILEC_BLOCK_Q + 2 * TILEC_STAGES * TILEC_BLOCK_KV) * (TILEC_HEAD_DIM + 4) +            \
    TILEC_BLOCK_Q * (TILEC_F32_SKV + 8)) * 4)

namespace tilec_f32 {

constexpr int D = TILEC_HEAD_DIM;
constexpr int BQ = TILEC_BLOCK_Q;
constexpr int BKV = TILEC_BLOCK_KV;
constexpr int NW = TILEC_NUM_WARPS;
constexpr int NTHR = NW * 32;
constexpr int STAGES = TILEC_STAGES;
constexpr int WROWS = BQ / NW;
constexpr int RT = WROWS / 4;        // rows per lane
constexpr int SKV = TILEC_F32_SKV;   // keys per online-softmax step
constexpr int CT = SKV / 8;          // keys per lane per step
constexpr int DJ = D / 16;           // F2 column pairs per lane
constexpr int DP = D + 4;            // padded smem row pitch (floats)
constexpr int PP = SKV + 8;          // P tile pitch (floats): rows rl land 8 banks apart
constexpr int TILE_FLOATS = BKV * DP;
constexpr int STAGE_FLOATS = 2 * TILE_FLOATS;

static_assert(D % 16 == 0 && D >= 16 && D <= 256, "head dim must be a multiple of 16 in 16..256");
static_assert(BQ % (NW * 16) == 0, "BLOCK_Q / NUM_WARPS must be a multiple of 16");
static_assert(BKV % 16 == 0, "BLOCK_KV must be a multiple of 16");
static_assert(STAGES >= 2, "need at least double buffering");

// Own vector types: the template may not rely on any header (NVRTC, no includes).
struct alignas(16) F4 {
  float x, y, z, w;
};
struct alignas(8) F2 {
  float x, y;
};

// Copy ROWS x D floats (row stride `stride` elements, g = row 0) into a padded smem
// tile with 16-byte cp.async; rows >= rows_valid are zero-filled without reading.
template <int ROWS>
__device__ __forceinline__ void load_tile(float* sdst, const float* g, long long stride, int rows_valid,
                                          int tid) {
  constexpr int CPR = D / 4;  // 16-byte chunks per row
  for (int i = tid; i < ROWS * CPR; i += NTHR) {
    const int r = i / CPR, c = i % CPR;
    const bool ok = r < rows_valid;
    tilec_cp_async16(tilec_smem_u32(sdst + r * DP + c * 4), ok ? g + r * stride + c * 4 : g, ok ? 16 : 0);
  }
}

}  // namespace tilec_f32

extern "C" __global__ void __launch_bounds__(TILEC_NUM_WARPS * 32, 1) TILEC_KERNEL_NAME(const TilecParams p) {
  using namespace tilec_f32;
  extern __shared__ __align__(16) float smemf[];
  float* sQ = smemf;                      // [BQ][DP]
  float* sKV = sQ + BQ * DP;              // [STAGES][K|V][BKV][DP]
  float* sP0 = sKV + STAGES * STAGE_FLOATS;  // [BQ][PP], rows of warp w are its own

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int rl = lane >> 3, cl = lane & 7;
  // The host's work order (tilec_work_item, ptx.cuh): heavy query blocks of every head first, so
  // light blocks fill the last wave instead of a heavy one trailing it; q_order maps the position
  // to the query block. Without an order it is plain 0, 1, 2, ...
  int qi, h;
  tilec_work_item(blockIdx.x, blockIdx.y, qi, h);
  const int b = blockIdx.z;
  const int qb = p.q_order ? p.q_order[qi] : qi;
  const int hkv = h / (p.num_heads / p.num_kv_heads);
  const int seq = p.seq_len;
  const int q0 = qb * BQ;
  const int wrow0 = warp * WROWS;

  const TilecPlanRow row(p.full_offsets, p.partial_offsets, qb);
  const int n_full = row.n_full, p_beg = row.p_beg, total = row.total;
  auto fetch_kb = [&](int i) -> int {
    return row.tile_or_0(p.full_indices, p.partial_indices, i);
  };

  const float* qg = (const float*)p.q + b * p.q_batch_stride + h * p.q_head_stride + q0 * p.q_seq_stride;
  const float* kg = (const float*)p.k + b * p.k_batch_stride + hkv * p.k_head_stride;
  const float* vg = (const float*)p.v + b * p.v_batch_stride + hkv * p.v_head_stride;
  float* og = (float*)p.o + b * p.o_batch_stride + h * p.o_head_stride + q0 * p.o_seq_stride;
  float* lse = p.lse ? p.lse + ((long long)b * p.num_heads + h) * seq : nullptr;

  auto load_kv = [&](float* dst, int kb) {
    const int k0 = kb * BKV;
    load_tile<BKV>(dst, kg + k0 * p.k_seq_stride, p.k_seq_stride, seq - k0, tid);
    load_tile<BKV>(dst + TILE_FLOATS, vg + k0 * p.v_seq_stride, p.v_seq_stride, seq - k0, tid);
  };

  // Same group accounting as the bf16 kernel: Q, STAGES-1 prologue blocks, then
  // exactly one (possibly empty) group per iteration.
  if (total > 0) {
    load_tile<BQ>(sQ, qg, p.q_seq_stride, seq - q0, tid);
    tilec_cp_async_commit();
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
      if (s < total) load_kv(sKV + s * STAGE_FLOATS, fetch_kb(s));
      tilec_cp_async_commit();
    }
  }

  float acc[RT][DJ][2];
  float m_run[RT], l_run[RT];  // running max (raw units); this lane's partial row sum
#pragma unroll
  for (int i = 0; i < RT; ++i) {
#pragma unroll
    for (int jd = 0; jd < DJ; ++jd) acc[i][jd][0] = acc[i][jd][1] = 0.f;
    m_run[i] = TILEC_NEG_INF;
    l_run[i] = 0.f;
  }
  const float sl2 = p.scale_log2;
  float* sP = sP0 + wrow0 * PP;

  for (int j = 0; j < total; ++j) {
    const int kb = fetch_kb(j), kb_next = fetch_kb(j + STAGES - 1);
    tilec_cp_async_wait<STAGES - 2>();
    __syncthreads();  // block j visible to all; everyone is done with block j-1's slot
    if (j + STAGES - 1 < total) load_kv(sKV + ((j + STAGES - 1) % STAGES) * STAGE_FLOATS, kb_next);
    tilec_cp_async_commit();

    const float* sK = sKV + (j % STAGES) * STAGE_FLOATS;
    const float* sV = sK + TILE_FLOATS;
    const int k0 = kb * BKV;
    const bool partial = j >= n_full;

#pragma unroll 1
    for (int ch = 0; ch < BKV / SKV; ++ch) {
      const int kc0 = k0 + ch * SKV;
      const float* sKc = sK + ch * SKV * DP;
      // ---- S chunk: s[i][c] = q_row(rl+4i) . k_key(cl+8c)
      float s[RT][CT];
#pragma unroll
      for (int i = 0; i < RT; ++i)
#pragma unroll
        for (int c = 0; c < CT; ++c) s[i][c] = 0.f;
#pragma unroll 2
      for (int d4 = 0; d4 < D / 4; ++d4) {
        F4 kv[CT];
#pragma unroll
        for (int c = 0; c < CT; ++c) kv[c] = *(const F4*)(sKc + (cl + 8 * c) * DP + 4 * d4);
#pragma unroll
        for (int i = 0; i < RT; ++i) {
          const F4 qv = *(const F4*)(sQ + (wrow0 + rl + 4 * i) * DP + 4 * d4);
#pragma unroll
          for (int c = 0; c < CT; ++c)
            s[i][c] += qv.x * kv[c].x + qv.y * kv[c].y + qv.z * kv[c].z + qv.w * kv[c].w;
        }
      }
      // ---- predicates (partial blocks: mask + key bound; full blocks: key bound if
      // ragged). Branch-free, with tilec_mask's arguments clamped into [0, seq).
      if (partial || kc0 + SKV > seq) {
#pragma unroll
        for (int c = 0; c < CT; ++c) {
          const int kc = kc0 + cl + 8 * c;
          const bool k_ok = kc < seq;
#pragma unroll
          for (int i = 0; i < RT; ++i) {
            const int qr = q0 + wrow0 + rl + 4 * i;
            const bool q_ok = qr < seq;
            const bool ok = k_ok & (!partial | (q_ok & tilec_mask(q_ok ? qr : seq - 1, k_ok ? kc : seq - 1)));
            s[i][c] = ok ? s[i][c] : TILEC_NEG_INF;
          }
        }
      }
      // ---- online softmax; P to this warp's smem rows
      __syncwarp();  // previous step's P.V reads of sP are done
      float corr[RT];
      bool grew = false;
#pragma unroll
      for (int i = 0; i < RT; ++i) {
        float mx = m_run[i];
#pragma unroll
        for (int c = 0; c < CT; ++c) mx = tilec_fmax(mx, s[i][c]);
        mx = tilec_fmax(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = tilec_fmax(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        mx = tilec_fmax(mx, __shfl_xor_sync(0xffffffffu, mx, 4));
        // base rounded once (mul.rn) and reused for P, the rescale factor and lse;
        // corr is exactly 1 while the max is unchanged, so no drift accumulates
        // over thousands of steps (a fused m*c - base would leave a residual that
        // compounds into a visible lse error). Check_inf: -inf max -> base 0.
        const float base = (mx == TILEC_NEG_INF) ? 0.f : tilec_mul_rn(mx, sl2);
        corr[i] = (mx == m_run[i]) ? 1.f : tilec_exp2(tilec_mul_rn(m_run[i], sl2) - base);
        grew |= mx != m_run[i];
        m_run[i] = mx;
        float sum = 0.f;
#pragma unroll
        for (int c = 0; c < CT; ++c) {
          const float e = tilec_exp2(s[i][c] * sl2 - base);
          sum += e;
          sP[(rl + 4 * i) * PP + cl + 8 * c] = e;
        }
        l_run[i] = l_run[i] * corr[i] + sum;
      }
      if (__any_sync(0xffffffffu, grew)) {
#pragma unroll
        for (int i = 0; i < RT; ++i)
#pragma unroll
          for (int jd = 0; jd < DJ; ++jd) {
            acc[i][jd][0] *= corr[i];
            acc[i][jd][1] *= corr[i];
          }
      }
      __syncwarp();
      // ---- O += P V
      const float* sVc = sV + ch * SKV * DP;
#pragma unroll 4
      for (int k = 0; k < SKV; ++k) {
        F2 vv[DJ];
#pragma unroll
        for (int jd = 0; jd < DJ; ++jd) vv[jd] = *(const F2*)(sVc + k * DP + 2 * cl + 16 * jd);
#pragma unroll
        for (int i = 0; i < RT; ++i) {
          const float pv = sP[(rl + 4 * i) * PP + k];
#pragma unroll
          for (int jd = 0; jd < DJ; ++jd) {
            acc[i][jd][0] += pv * vv[jd].x;  // contracted to FFMA
            acc[i][jd][1] += pv * vv[jd].y;
          }
        }
      }
    }
  }
  if (total > 0) tilec_cp_async_wait<0>();

  // ---- epilogue: full row sums, normalize (IEEE division), store, lse
#pragma unroll
  for (int i = 0; i < RT; ++i) {
    float l = l_run[i];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    l += __shfl_xor_sync(0xffffffffu, l, 4);
    const float inv = l > 0.f ? 1.0f / l : 0.f;  // fully masked row (or empty list): O = 0
    const int r = wrow0 + rl + 4 * i;
    if (q0 + r < seq) {
      if (lse && cl == 0)
        lse[q0 + r] = l > 0.f ? (tilec_mul_rn(m_run[i], sl2) + tilec_log2(l)) * TILEC_LN2 : TILEC_NEG_INF;
#pragma unroll
      for (int jd = 0; jd < DJ; ++jd) {
        F2 v;
        v.x = acc[i][jd][0] * inv;
        v.y = acc[i][jd][1] * inv;
        *(F2*)(og + r * p.o_seq_stride + 2 * cl + 16 * jd) = v;
      }
    }
  }
}

#endif  // TILEC_FLASH_FWD_F32_CUH
