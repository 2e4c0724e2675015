// tilec CUDA template: block-sparse FlashAttention forward for Hopper, bf16/fp16, sm_90a
// (flash_fwd_sm90.cuh)
//
// Concatenation order of the generated .cu file (done by the TS backend):
//   generated prelude + ptx.cuh + ptx_sm90.cuh + wgmma wrappers (wgmma.ts) + this file
// The prelude defines TILEC_HEAD_DIM, TILEC_BLOCK_Q, TILEC_BLOCK_KV, TILEC_STAGES,
// TILEC_KERNEL_NAME, one of TILEC_DTYPE_BF16 / TILEC_DTYPE_FP16, and tilec_mask(q, k).
//
// Structure (FlashAttention-3 style, warp-specialized):
//   warpgroup 0       producer: cp.async copies of Q and of the K/V tiles of the plan's lists
//                     (full list, then partial list) into a STAGES-deep ring; each copy completes
//                     on an mbarrier (cp.async.mbarrier.arrive.noinc), so no thread waits for its
//                     own copies. Gives its registers away (setmaxnreg.dec).
//   warpgroups 1..W   consumers, 64 query rows each (BLOCK_Q = 64·W): S = Q K^T with wgmma from
//                     shared memory, element mask, online softmax in registers, O += P V with P as
//                     the register A operand; releases the slot on its "empty" mbarrier.
// Why cp.async and not the tensor-copy engine: TMA needs a tensor map per call encoded by the
// driver (cuTensorMapEncodeTiled), which the runtime does not expose yet; 16-byte cp.async writes
// the same swizzled layout, handles [b,s,h,d] and [b,h,s,d] strides and zero-fills rows past seq_len.
//
// Shared memory (TILEC_SMEM_BYTES): Q tile, STAGES x {K tile, V tile}, 1024 bytes alignment slack.
// Tiles are stored as wgmma's canonical swizzled layout: column blocks of SW bytes per row
// (SW = 128 when head_dim % 64 == 0, else 64), each block ROWS x SW bytes with 16-byte chunks
// XOR-swizzled by address bits 7.. (Swizzle<3,4,3> / <2,4,3>). K and V tiles share the layout; Q
// and K are read K-major, V N-major (imm-trans-b), so no tile is ever transposed.
#ifndef TILEC_FLASH_FWD_SM90_CUH
#define TILEC_FLASH_FWD_SM90_CUH

#if defined(TILEC_DTYPE_BF16)
#define TILEC_PACK tilec_pack_bf16
#elif defined(TILEC_DTYPE_FP16)
#define TILEC_PACK tilec_pack_f16
#else
#error "flash_fwd_sm90.cuh needs TILEC_DTYPE_BF16 or TILEC_DTYPE_FP16"
#endif

#define TILEC_SMEM_BYTES ((TILEC_BLOCK_Q + 2 * TILEC_STAGES * TILEC_BLOCK_KV) * TILEC_HEAD_DIM * 2 + 1024)

#define TILEC_WGMMA_SS_(n) tilec_wgmma_ss_n##n
#define TILEC_WGMMA_SS(n) TILEC_WGMMA_SS_(n)
#define TILEC_WGMMA_RS_(n) tilec_wgmma_rs_n##n
#define TILEC_WGMMA_RS(n) TILEC_WGMMA_RS_(n)

namespace tilec_h {

constexpr int D = TILEC_HEAD_DIM;
constexpr int BQ = TILEC_BLOCK_Q;
constexpr int BKV = TILEC_BLOCK_KV;
constexpr int STAGES = TILEC_STAGES;
constexpr int NCWG = BQ / 64;            // consumer warpgroups
constexpr int NTHR = (NCWG + 1) * 128;   // + the producer warpgroup
constexpr int SW = (D % 64 == 0) ? 128 : 64;  // swizzle width, bytes per row of a column block
constexpr int SWMODE = SW == 128 ? 1 : 2;     // descriptor encoding
constexpr int CPA = SW / 16;             // 16-byte chunks per swizzle row
constexpr int CPR = D / 8;               // 16-byte chunks per head-dim row
constexpr int KSA = SW / 32;             // 16-element k-steps per column block
constexpr int TILE_KV_BYTES = BKV * D * 2;
constexpr int STAGE_BYTES = 2 * TILE_KV_BYTES;
constexpr int SNT = BKV / 8;             // 8-key n-tiles of S per thread
constexpr int MASK_WORDS = (SNT * 4 + 31) / 32;

static_assert(D % 32 == 0 && D >= 64 && D <= 128, "sm90 template: head dim 64, 96 or 128");
static_assert(BQ == 64 || BQ == 128, "sm90 template: 64 or 128 query rows (1 or 2 consumer warpgroups)");
static_assert(BKV % 16 == 0 && BKV >= 16 && BKV <= 256, "sm90 template: key tile a multiple of 16 up to 256");
static_assert(STAGES >= 2, "need at least double buffering");

// Producer and consumer register budgets after setmaxnreg (multiples of 8; total <= 64K).
constexpr int PRODUCER_REGS = 40;
constexpr int CONSUMER_REGS = NCWG == 1 ? 240 : 232;
static_assert(PRODUCER_REGS * 128 + CONSUMER_REGS * 128 * NCWG <= 65536, "register file");

#ifdef TILEC_RESCALE_TH
constexpr float RESCALE_TH = TILEC_RESCALE_TH;
#else
constexpr float RESCALE_TH = 8.0f;  // lazy rescaling, as in flash_fwd_sm80.cuh
#endif

// Byte offset of 16-byte chunk `c` of row `r` in a tile of ROWS rows (see the layout above).
template <int ROWS>
__device__ __forceinline__ u32 chunk_off(int r, int c) {
  return (u32)((c / CPA) * ROWS * SW + r * SW + (((c % CPA) ^ ((r * SW >> 7) & (CPA - 1))) << 4));
}

// The producer warpgroup's copy of a ROWS x D tile (row stride `stride` elements) into the
// swizzled layout; rows >= rows_valid are zero-filled without reading global memory.
template <int ROWS>
__device__ __forceinline__ void load_tile(u32 sdst, const u16* g, long long stride, int rows_valid, int ptid) {
  constexpr int CHUNKS = ROWS * CPR;
#pragma unroll 4
  for (int i = ptid; i < CHUNKS; i += 128) {
    const int r = i / CPR, c = i % CPR;
    const bool ok = r < rows_valid;
    tilec_cp_async16(sdst + chunk_off<ROWS>(r, c), ok ? g + r * stride + c * 8 : g, ok ? 16 : 0);
  }
}

struct alignas(16) U4 {
  u32 x, y, z, w;
};

}  // namespace tilec_h

extern "C" __global__ void __launch_bounds__(tilec_h::NTHR, 1) TILEC_KERNEL_NAME(const TilecParams p) {
  using namespace tilec_h;
  extern __shared__ __align__(16) unsigned char smem[];  // aligned to 1024 below
  // mbarriers: Q, STAGES x full, STAGES x empty
  __shared__ __align__(8) u64 bars[1 + 2 * STAGES];

  const int tid = threadIdx.x;
  const int qi = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int qb = p.q_order ? p.q_order[qi] : qi;
  const int hkv = h / (p.num_heads / p.num_kv_heads);
  const int seq = p.seq_len;
  const int q0 = qb * BQ;

  const int f_beg = p.full_offsets[qb];
  const int n_full = p.full_offsets[qb + 1] - f_beg;
  const int p_beg = p.partial_offsets[qb];
  const int total = n_full + (p.partial_offsets[qb + 1] - p_beg);
  const int* f_idx = p.full_indices + f_beg;
  const int* p_idx = p.partial_indices + p_beg;

  const u32 s_raw = tilec_smem_u32(smem);
  unsigned char* sbase = smem + ((1024u - (s_raw & 1023u)) & 1023u);
  const u32 sQ = tilec_smem_u32(sbase);
  const u32 sKV = sQ + BQ * D * 2;
  const u32 barQ = tilec_smem_u32(&bars[0]);
  const u32 barFull = barQ + 8, barEmpty = barQ + 8 * (1 + STAGES);

  if (tid == 0) {
    tilec_mbar_init(barQ, 128);
    for (int s = 0; s < STAGES; ++s) {
      tilec_mbar_init(barFull + 8 * s, 128);       // every producer thread's copies landed
      tilec_mbar_init(barEmpty + 8 * s, 4 * NCWG);  // every consumer warp is done with the slot
    }
    tilec_mbar_init_fence();
  }
  __syncthreads();

  if (tid < 128) {
    // ------------------------------------------------------------------ producer
    tilec_setmaxnreg_dec<PRODUCER_REGS>();
    const u16* qg = (const u16*)p.q + b * p.q_batch_stride + h * p.q_head_stride + q0 * p.q_seq_stride;
    load_tile<BQ>(sQ, qg, p.q_seq_stride, seq - q0, tid);
    tilec_cp_async_mbar_arrive(barQ);
    const u16* kbase = (const u16*)p.k + b * p.k_batch_stride + hkv * p.k_head_stride;
    const u16* vbase = (const u16*)p.v + b * p.v_batch_stride + hkv * p.v_head_stride;
#pragma unroll 1
    for (int j = 0; j < total; ++j) {
      const int kb = j < n_full ? f_idx[j] : p_idx[j - n_full];
      const int slot = j % STAGES;
      // Round r of a slot waits for the consumers' release of round r-1 (parity (r-1)&1); the
      // first round passes at once.
      tilec_mbar_wait(barEmpty + 8 * slot, ((j / STAGES) & 1) ^ 1);
      const int k0 = kb * BKV;
      const u32 sK = sKV + slot * STAGE_BYTES;
      load_tile<BKV>(sK, kbase + k0 * p.k_seq_stride, p.k_seq_stride, seq - k0, tid);
      load_tile<BKV>(sK + TILE_KV_BYTES, vbase + k0 * p.v_seq_stride, p.v_seq_stride, seq - k0, tid);
      tilec_cp_async_mbar_arrive(barFull + 8 * slot);
    }
    asm volatile("cp.async.wait_all;\n" ::: "memory");  // no copy outlives its issuing thread
    return;
  }

  // -------------------------------------------------------------------- consumers
  tilec_setmaxnreg_inc<CONSUMER_REGS>();
  const int wg = (tid >> 7) - 1;  // consumer warpgroup: query rows wg*64 .. wg*64+63
  const int ctid = tid & 127;
  const int warp = ctid >> 5, lane = tid & 31;
  const int g = lane >> 2, t = lane & 3;
  const int row0 = wg * 64 + warp * 16 + g;  // this thread's rows: row0 and row0 + 8
  const float sl2 = p.scale_log2;

  float o[D / 2];
#pragma unroll
  for (int i = 0; i < D / 2; ++i) o[i] = 0.f;
  float m_run[2] = {TILEC_NEG_INF, TILEC_NEG_INF};
  float l_run[2] = {0.f, 0.f};

  // Descriptors. Q (A, K-major): this warpgroup's 64 rows; K (B, K-major): BKV rows; k-step kk
  // moves 32 bytes inside a column block and a whole block every KSA steps. V (B, N-major):
  // leading offset = one column block (BKV rows), stride = 8 rows; key step kk moves 16 rows.
  const u64 dQ = tilec_gmma_desc(sQ + wg * 64 * SW, 16, 8 * SW, SWMODE);
  tilec_mbar_wait(barQ, 0);

#pragma unroll 1
  for (int j = 0; j < total; ++j) {
    const int kb = j < n_full ? f_idx[j] : p_idx[j - n_full];
    const int slot = j % STAGES;
    const u32 sK = sKV + slot * STAGE_BYTES, sV = sK + TILE_KV_BYTES;
    const u64 dK = tilec_gmma_desc(sK, 16, 8 * SW, SWMODE);
    const u64 dV = tilec_gmma_desc(sV, BKV * SW, 8 * SW, SWMODE);
    const int k0 = kb * BKV;
    const bool partial = j >= n_full;
    tilec_mbar_wait(barFull + 8 * slot, (j / STAGES) & 1);
    tilec_fence_proxy_async();

    // ---- S = Q K^T, issued asynchronously
    float s[BKV / 2];
    tilec_wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      const u32 qoff = (u32)(((kk / KSA) * BQ * SW + (kk % KSA) * 32) >> 4);
      const u32 koff = (u32)(((kk / KSA) * BKV * SW + (kk % KSA) * 32) >> 4);
      TILEC_WGMMA_SS(TILEC_BLOCK_KV)(s, dQ + qoff, dK + koff, kk > 0);
    }
    tilec_wgmma_commit();

    // ---- element predicates of a partial tile, evaluated while the tensor cores work
    u32 keep[MASK_WORDS];
#pragma unroll
    for (int w = 0; w < MASK_WORDS; ++w) keep[w] = 0u;
    if (partial) {
#pragma unroll
      for (int nt = 0; nt < SNT; ++nt)
#pragma unroll
        for (int cc = 0; cc < 2; ++cc) {
          const int kc = k0 + nt * 8 + 2 * t + cc;
          const bool k_ok = kc < seq;
          const int kcl = k_ok ? kc : seq - 1;
#pragma unroll
          for (int hh = 0; hh < 2; ++hh) {
            const int qr = q0 + row0 + hh * 8;
            const bool q_ok = qr < seq;
            const bool ok = q_ok & k_ok & tilec_mask(q_ok ? qr : seq - 1, kcl);
            const int bit = nt * 4 + 2 * hh + cc;
            keep[bit >> 5] |= (ok ? 1u : 0u) << (bit & 31);
          }
        }
    }
    tilec_wgmma_wait<0>();
    tilec_reg_fence(s);

    if (partial) {
#pragma unroll
      for (int nt = 0; nt < SNT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int bit = nt * 4 + e;
          if (!((keep[bit >> 5] >> (bit & 31)) & 1u)) s[nt * 4 + e] = TILEC_NEG_INF;
        }
    } else if (k0 + BKV > seq) {
#pragma unroll
      for (int nt = 0; nt < SNT; ++nt)
#pragma unroll
        for (int cc = 0; cc < 2; ++cc)
          if (k0 + nt * 8 + 2 * t + cc >= seq) s[nt * 4 + cc] = s[nt * 4 + 2 + cc] = TILEC_NEG_INF;
    }

    // ---- online softmax (base 2, scale folded into one FFMA per score; see flash_fwd_sm80.cuh)
    float corr[2];
    bool grew = false;
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      float red[SNT];
#pragma unroll
      for (int nt = 0; nt < SNT; ++nt) red[nt] = tilec_fmax(s[nt * 4 + 2 * hh], s[nt * 4 + 2 * hh + 1]);
#pragma unroll
      for (int w = 1; w < SNT; w *= 2)
#pragma unroll
        for (int i = 0; i + w < SNT; i += 2 * w) red[i] = tilec_fmax(red[i], red[i + w]);
      const float m_old = m_run[hh];
      float mx = tilec_fmax(m_old, red[0]);
      mx = tilec_fmax(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = tilec_fmax(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const bool upd = (mx - m_old) * sl2 > RESCALE_TH;
      const float m_new = upd ? mx : m_old;
      const float base = (m_new == TILEC_NEG_INF) ? 0.f : tilec_mul_rn(m_new, sl2);
      corr[hh] = upd ? tilec_exp2(tilec_mul_rn(m_old, sl2) - base) : 1.f;
      grew |= upd;
      m_run[hh] = m_new;
#pragma unroll
      for (int nt = 0; nt < SNT; ++nt) {
        s[nt * 4 + 2 * hh] = tilec_exp2(s[nt * 4 + 2 * hh] * sl2 - base);
        s[nt * 4 + 2 * hh + 1] = tilec_exp2(s[nt * 4 + 2 * hh + 1] * sl2 - base);
        red[nt] = s[nt * 4 + 2 * hh] + s[nt * 4 + 2 * hh + 1];
      }
#pragma unroll
      for (int w = 1; w < SNT; w *= 2)
#pragma unroll
        for (int i = 0; i + w < SNT; i += 2 * w) red[i] += red[i + w];
      l_run[hh] = l_run[hh] * corr[hh] + red[0];
    }
    if (__any_sync(0xffffffffu, grew)) {
#pragma unroll
      for (int dt = 0; dt < D / 8; ++dt) {
        o[dt * 4 + 0] *= corr[0];
        o[dt * 4 + 1] *= corr[0];
        o[dt * 4 + 2] *= corr[1];
        o[dt * 4 + 3] *= corr[1];
      }
    }

    // ---- O += P V: the S fragment of two adjacent n-tiles is the A fragment of one 16-key step
    u32 pa[BKV / 16][4];
#pragma unroll
    for (int kk = 0; kk < BKV / 16; ++kk) {
      pa[kk][0] = TILEC_PACK(s[(2 * kk) * 4 + 0], s[(2 * kk) * 4 + 1]);
      pa[kk][1] = TILEC_PACK(s[(2 * kk) * 4 + 2], s[(2 * kk) * 4 + 3]);
      pa[kk][2] = TILEC_PACK(s[(2 * kk + 1) * 4 + 0], s[(2 * kk + 1) * 4 + 1]);
      pa[kk][3] = TILEC_PACK(s[(2 * kk + 1) * 4 + 2], s[(2 * kk + 1) * 4 + 3]);
    }
    tilec_reg_fence(o);
    tilec_wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < BKV / 16; ++kk)
      TILEC_WGMMA_RS(TILEC_HEAD_DIM)(o, pa[kk], dV + (u32)((kk * 16 * SW) >> 4), 1);
    tilec_wgmma_commit();
    tilec_wgmma_wait<0>();
    tilec_reg_fence(o);
    if (lane == 0) tilec_mbar_arrive(barEmpty + 8 * slot);
  }

  // ---- epilogue: finish row sums, normalize, lse; stage O through this warpgroup's own Q rows
  // (no other warpgroup reads them, and its last wgmma has completed), then 16-byte stores.
  u16* og = (u16*)p.o + b * p.o_batch_stride + h * p.o_head_stride + q0 * p.o_seq_stride;
  float* lse = p.lse ? p.lse + ((long long)b * p.num_heads + h) * seq : nullptr;
#pragma unroll
  for (int hh = 0; hh < 2; ++hh) {
    float l = l_run[hh];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const float inv = l > 0.f ? tilec_rcp(l) : 0.f;  // fully masked row: O = 0
    const int r = row0 + hh * 8;
    if (lse && t == 0 && q0 + r < seq)
      lse[q0 + r] = l > 0.f ? (tilec_mul_rn(m_run[hh], sl2) + tilec_log2(l)) * TILEC_LN2 : TILEC_NEG_INF;
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) {
      const u32 v = TILEC_PACK(o[dt * 4 + 2 * hh] * inv, o[dt * 4 + 2 * hh + 1] * inv);
      *(u32*)(sbase + chunk_off<BQ>(r, dt) + t * 4) = v;
    }
  }
  tilec_named_barrier(1 + wg, 128);
#pragma unroll
  for (int i = ctid; i < 64 * CPR; i += 128) {
    const int r = wg * 64 + i / CPR, c = i % CPR;
    const U4 v = *(const U4*)(sbase + chunk_off<BQ>(r, c));
    if (q0 + r < seq) *(U4*)(og + r * p.o_seq_stride + c * 8) = v;
  }
}

#undef TILEC_PACK
#endif  // TILEC_FLASH_FWD_SM90_CUH
