// tilec CUDA template: block-sparse attention backward, dK/dV pass with wgmma, bf16/fp16, sm_90a
// (bwd_sm90.cuh)
//
// After bwd_common.cuh and bwd_sm80.cuh (whose dQ pass the deterministic variant uses; the prelude
// defines TILEC_BWD_DKDV_SM90 so bwd_sm80.cuh leaves the dK/dV entry points to this file).
//
// Structure (FlashAttention-3's backward, warp-specialized), one CTA per (128-key block, kv head,
// batch), heavy key blocks (those every query attends, for Attention Tile masks) dispatched first:
//   warpgroup 0     producer: one thread drives the tensor memory accelerator: K and V once (and K
//                   again in the swizzle dQ's operand needs, see K2 below), then for every query head
//                   of the GQA group and every query block of the key block's transposed lists (full,
//                   then partial) the 64-row Q and dO tiles, their rows' lse·log2 e and rowsum(dO∘O),
//                   and a partial block's sub-tile classes, into a STAGES-deep ring on mbarriers.
//   warpgroups 1-2  consumers, 64 keys each. Per step:
//                     Sᵀ = K Qᵀ and dPᵀ = V dOᵀ        (wgmma, both operands in shared memory)
//                     P = exp2(Sᵀ·scale·log2 e − lse·log2 e), dS = P ∘ (dPᵀ − D)   (registers)
//                     dV += Pᵀ dO, dK += dSᵀ Q         (wgmma, Pᵀ / dSᵀ as register A operands)
//                   and in the default variant
//                     dSᵀ → shared memory (double-buffered), both warpgroups meet, then
//                     dQ[:, half] = dS K[:, half]      (wgmma, both operands MN-major: warpgroup w
//                                                       computes head-dim columns w·D/2 ..)
//                   added into the fp32 dQ workspace with vector reductions. dK, dV stored at the end.
//
// Shared memory (TILEC_DKDV90_SMEM_BYTES): K, V (and K2) tiles of 128 rows, two dSᵀ tiles (128 keys x
// 64 queries, 128-byte swizzle), STAGES x {Q, dO} tiles of 64 rows, STAGES x {512 bytes of row
// statistics, 32 bytes of classes}, 1024 bytes of alignment slack. Tiles use wgmma's canonical
// swizzled layout (column blocks of SW bytes a row, SW = 128 when the head dim fills it, else 64), as
// TMA writes it. K2: dQ's B operand starts at column D/2 for the second warpgroup, which must be a
// column-block boundary; where D/2 is not a multiple of SW/2 elements (head dims 64 and 96) K is
// loaded a second time with the widest swizzle whose blocks divide D/2 (64 and 32 bytes).
#ifndef TILEC_BWD_SM90_CUH
#define TILEC_BWD_SM90_CUH

#define TILEC_BWD90_SW ((TILEC_HEAD_DIM % 64 == 0) ? 128 : 64)
#define TILEC_BWD90_SW2 \
  (((TILEC_HEAD_DIM / 2) % 64 == 0) ? 128 : ((TILEC_HEAD_DIM / 2) % 32 == 0) ? 64 : 32)
#define TILEC_BWD90_KV_BYTES (128 * TILEC_HEAD_DIM * 2)
#define TILEC_BWD90_Q_BYTES (64 * TILEC_HEAD_DIM * 2)
#define TILEC_DKDV90_SMEM_BYTES                                                                              \
  ((TILEC_BWD90_SW2 == TILEC_BWD90_SW ? 2 : 3) * TILEC_BWD90_KV_BYTES + 2 * 128 * 64 * 2 +                    \
   TILEC_DKDV_STAGES * (2 * TILEC_BWD90_Q_BYTES + 512 + 32) + 1024)

namespace tilec_b90 {
using namespace tilec_bwd;

constexpr int BKV = 128, BQ = 64, NCWG = 2, NTHR = 128 * (NCWG + 1);
constexpr int STAGES = TILEC_DKDV_STAGES;
constexpr int SW = TILEC_BWD90_SW, SWMODE = SW == 128 ? 1 : 2;
constexpr int SW2 = TILEC_BWD90_SW2, SW2MODE = SW2 == 128 ? 1 : SW2 == 64 ? 2 : 3;
constexpr bool K2_SEPARATE = SW2 != SW;
constexpr int KSA = SW / 32;  // 16-element k-steps per column block
constexpr int KV_BYTES = TILEC_BWD90_KV_BYTES, Q_BYTES = TILEC_BWD90_Q_BYTES;
constexpr int DS_BYTES = BKV * BQ * 2;  // one dSᵀ tile: 128 keys x 64 queries = 128-byte rows
constexpr int STATS_BYTES = 2 * BQ * 4, CLASS_BYTES = (BKV / 16) * 4;  // 8 key stripes x 1 word
constexpr int SNT = BQ / 8;  // 8-query n-tiles of a thread's Sᵀ fragment
constexpr int DQN = D / 2;   // dQ columns per consumer warpgroup
static_assert(D == 64 || D == 96 || D == 128, "sm90 backward: head dim 64, 96 or 128");
static_assert(tilec_class_words(BQ) == 1 && CLASS_BYTES % 16 == 0, "one class word per key stripe");
static_assert(DQN % (SW2 / 2) == 0, "dQ's column halves start on K2 column blocks");

constexpr int PRODUCER_REGS = 24, CONSUMER_REGS = 240;
constexpr int LAUNCH_REGS = 65536 / NTHR / 8 * 8;
static_assert(PRODUCER_REGS * 128 + CONSUMER_REGS * 128 * NCWG <= LAUNCH_REGS * NTHR,
              "setmaxnreg budgets exceed the launch allocation");

// acc (64 keys x 64 queries of this warpgroup) = A · Bᵀ with A = 64 rows of a 128-row K-major tile
// (descriptor dA) and B = a 64-row K-major tile (dB): Sᵀ = K Qᵀ and dPᵀ = V dOᵀ.
__device__ __forceinline__ void issue_scores(float (&acc)[BQ / 2], u64 dA, u64 dB) {
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    const u32 aoff = (u32)(((kk / KSA) * BKV * SW + (kk % KSA) * 32) >> 4);
    const u32 boff = (u32)(((kk / KSA) * BQ * SW + (kk % KSA) * 32) >> 4);
    tilec_wgmma_ss_n64(acc, dA + aoff, dB + boff, kk > 0);
  }
}

// acc (64 keys x D) += A · B with A = 64 x 64 in registers (four k-steps over queries) and B = a
// 64-row tile read N-major: dV += Pᵀ dO, dK += dSᵀ Q.
#define TILEC_WGMMA_RS_D_(n) tilec_wgmma_rs_n##n
#define TILEC_WGMMA_RS_D(n) TILEC_WGMMA_RS_D_(n)
#define TILEC_WGMMA_SSTT_(n) tilec_wgmma_sstt_n##n
#define TILEC_WGMMA_SSTT(n) TILEC_WGMMA_SSTT_(n)
__device__ __forceinline__ void issue_accumulate(float (&acc)[D / 2], const u32 (&a)[4][4], u32 sB) {
  const u64 dB = tilec_gmma_desc(sB, BQ * SW, 8 * SW, SWMODE);
#pragma unroll
  for (int kk = 0; kk < BQ / 16; ++kk) TILEC_WGMMA_RS_D(TILEC_HEAD_DIM)(acc, a[kk], dB + (u32)((kk * 16 * SW) >> 4), 1);
}

// dq (64 queries x D/2) = dS · K2[:, half]: A = the dSᵀ tile read M-major, B = K2 read N-major,
// over the block's 128 keys.
__device__ __forceinline__ void issue_dq(float (&acc)[DQN / 2], u32 sDS, u32 sK2half) {
  const u64 dA = tilec_gmma_desc(sDS, BKV * 128, 8 * 128, 1);
  const u64 dB = tilec_gmma_desc(sK2half, BKV * SW2, 8 * SW2, SW2MODE);
#pragma unroll
  for (int kk = 0; kk < BKV / 16; ++kk)
    TILEC_WGMMA_SSTT(TILEC_BWD90_DQN)(acc, dA + (u32)((kk * 16 * 128) >> 4), dB + (u32)((kk * 16 * SW2) >> 4), kk > 0);
}

// Which of this thread's Sᵀ elements are kept (bit nt*4 + e: key row r0 + 8*(e>>1), query column
// q0 + nt*8 + 2t + (e&1)): tilec_b80::keep_bits in the key-major orientation, whose word layout is the
// same (a warp's 16 rows x 64 columns).
__device__ __forceinline__ u32 keep_of(bool partial, u32 cls, int key0, int q0, int seq, int lane) {
  return tilec_b80::keep_bits<true>(partial, cls, key0, q0, seq, lane);
}

__device__ __forceinline__ void pack_a(u32 (&a)[4][4], const float (&x)[BQ / 2]) {
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    a[kk][0] = TILEC_PACK(x[(2 * kk) * 4 + 0], x[(2 * kk) * 4 + 1]);
    a[kk][1] = TILEC_PACK(x[(2 * kk) * 4 + 2], x[(2 * kk) * 4 + 3]);
    a[kk][2] = TILEC_PACK(x[(2 * kk + 1) * 4 + 0], x[(2 * kk + 1) * 4 + 1]);
    a[kk][3] = TILEC_PACK(x[(2 * kk + 1) * 4 + 2], x[(2 * kk + 1) * 4 + 3]);
  }
}

// Rows of a [b, s, h, d] tensor from this warp's rows of a 64 x D accumulator (times `scale`).
__device__ __forceinline__ void store_acc_rows(void* base, long long sb, long long ss, long long sh, int b, int h,
                                               int row0, int seq, const float (&acc)[D / 2], float scale, int lane) {
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int hh = 0; hh < 2; ++hh) {
    const int r = row0 + g + 8 * hh;
    if (r >= seq) continue;
    u16* dst = (u16*)base + b * sb + h * sh + (long long)r * ss + 2 * t;
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt)
      *(u32*)(dst + dt * 8) = TILEC_PACK(acc[dt * 4 + 2 * hh] * scale, acc[dt * 4 + 2 * hh + 1] * scale);
  }
}

template <bool WITH_DQ>
__device__ __forceinline__ void dkdv(const TilecBwdParams& p, const TilecTensorMaps& tm, unsigned char* smem,
                                     u64* bars) {
  const int tid = threadIdx.x;
  int ki, hk;
  tilec_work_item_of<TILEC_DKDV_BLOCKS, TILEC_DKDV_HEAVY>(blockIdx.x, blockIdx.y, ki, hk);
  const int b = blockIdx.z;
  const int kb = p.kv_order ? p.kv_order[ki] : ki;
  const int k0 = kb * BKV, seq = p.seq_len;
  const KeyMajorWalk walk(p, kb);

  const u32 s_raw = tilec_smem_u32(smem);
  unsigned char* sbase = smem + ((1024u - (s_raw & 1023u)) & 1023u);
  const u32 sK = tilec_smem_u32(sbase), sV = sK + KV_BYTES;
  const u32 sK2 = K2_SEPARATE ? sV + KV_BYTES : sK;
  const u32 sDS = sV + (K2_SEPARATE ? 2 : 1) * KV_BYTES;  // two dSᵀ tiles
  const u32 sQ0 = sDS + 2 * DS_BYTES;                     // STAGES x {Q, dO}
  const u32 sSmall = sQ0 + STAGES * 2 * Q_BYTES;          // STAGES x {stats, classes}
  const u32 barKV = tilec_smem_u32(&bars[0]);
  const u32 barFull = barKV + 8, barEmpty = barKV + 8 * (1 + STAGES);

  if (tid == 0) {
    tilec_mbar_init(barKV, 1);
    for (int s = 0; s < STAGES; ++s) {
      tilec_mbar_init(barFull + 8 * s, 1);
      tilec_mbar_init(barEmpty + 8 * s, 4 * NCWG);
    }
    tilec_mbar_init_fence();
  }
  __syncthreads();

  if (tid < 128) {
    // ------------------------------------------------------------------ producer
    tilec_setmaxnreg_dec<PRODUCER_REGS>();
    if (tid != 0) return;
    tilec_prefetch_tensormap(&tm.q);
    tilec_prefetch_tensormap(&tm.do_);
    tilec_mbar_expect_tx(barKV, (K2_SEPARATE ? 3 : 2) * KV_BYTES);
    tilec_tma_tile<BKV, SW, D>(sK, &tm.k, k0, hk, b, barKV);
    tilec_tma_tile<BKV, SW, D>(sV, &tm.v, k0, hk, b, barKV);
    if constexpr (K2_SEPARATE) tilec_tma_tile<BKV, SW2, D>(sK2, &tm.k_dq, k0, hk, b, barKV);
#pragma unroll 1
    for (int j = 0; j < walk.total; ++j) {
      const int slot = j % STAGES;
      const u32 bar = barFull + 8 * slot, sQ = sQ0 + slot * 2 * Q_BYTES, sSt = sSmall + slot * (STATS_BYTES + CLASS_BYTES);
      tilec_mbar_wait(barEmpty + 8 * slot, ((j / STAGES) & 1) ^ 1);
      int hi, qb, entry;
      walk.step(p, j, hi, qb, entry);
      const int h = hk * walk.group + hi, q0 = qb * BQ;
      const bool classes = entry >= 0 && p.partialT_classes;
      tilec_mbar_expect_tx(bar, 2 * Q_BYTES + STATS_BYTES + (classes ? CLASS_BYTES : 0));
      tilec_tma_tile<BQ, SW, D>(sQ, &tm.q, q0, h, b, bar);
      tilec_tma_tile<BQ, SW, D>(sQ + Q_BYTES, &tm.do_, q0, h, b, bar);
      const long long row = ((long long)b * p.num_heads + h) * SEQ_PAD + q0;
      tilec_bulk_load(sSt, p.lse_log2 + row, BQ * 4, bar);
      tilec_bulk_load(sSt + BQ * 4, p.delta + row, BQ * 4, bar);
      if (classes) tilec_bulk_load(sSt + STATS_BYTES, p.partialT_classes + entry * (CLASS_BYTES / 4), CLASS_BYTES, bar);
    }
    return;
  }

  // -------------------------------------------------------------------- consumers
  tilec_setmaxnreg_inc<CONSUMER_REGS>();
  const int wg = (tid >> 7) - 1;  // keys wg*64 .. wg*64+63 of the block
  const int warp = (tid >> 5) & 3, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int key0 = k0 + wg * 64 + warp * 16;  // this warp's first key
  const float sl2 = p.scale_log2;
  const u64 dKa = tilec_gmma_desc(sK + wg * 64 * SW, 16, 8 * SW, SWMODE);
  const u64 dVa = tilec_gmma_desc(sV + wg * 64 * SW, 16, 8 * SW, SWMODE);
  const u32 sK2half = sK2 + (wg * DQN / (SW2 / 2)) * BKV * SW2;

  float dk[D / 2], dv[D / 2];
#pragma unroll
  for (int i = 0; i < D / 2; ++i) dk[i] = dv[i] = 0.f;
  tilec_mbar_wait(barKV, 0);

#pragma unroll 1
  for (int j = 0; j < walk.total; ++j) {
    const int slot = j % STAGES;
    const u32 sQ = sQ0 + slot * 2 * Q_BYTES, sdO = sQ + Q_BYTES;
    const unsigned char* small = sbase + (sSmall - sK) + slot * (STATS_BYTES + CLASS_BYTES);
    int hi, qb, entry;
    walk.step(p, j, hi, qb, entry);
    const int q0 = qb * BQ;
    tilec_mbar_wait(barFull + 8 * slot, (j / STAGES) & 1);
    const u32 cls = entry < 0 ? 0u
                    : p.partialT_classes ? ((const u32*)(small + STATS_BYTES))[wg * 4 + warp]
                                         : 0x5555u;
    const u32 keep = keep_of(entry >= 0, cls, key0, q0, seq, lane);

    float s[BQ / 2], dp[BQ / 2];
    tilec_reg_fence(dk);
    tilec_reg_fence(dv);
    tilec_wgmma_fence();
    issue_scores(s, dKa, tilec_gmma_desc(sQ, 16, 8 * SW, SWMODE));
    tilec_wgmma_commit();
    issue_scores(dp, dVa, tilec_gmma_desc(sdO, 16, 8 * SW, SWMODE));
    tilec_wgmma_commit();
    tilec_wgmma_wait<1>();
    tilec_reg_fence(s);
    const float* stats = (const float*)small;
#pragma unroll
    for (int nt = 0; nt < SNT; ++nt) {
      const int c = nt * 8 + 2 * t;
      const float l0 = stats[c], l1 = stats[c + 1];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const bool kept = (keep >> (nt * 4 + e)) & 1u;
        s[nt * 4 + e] = kept ? tilec_exp2(s[nt * 4 + e] * sl2 - ((e & 1) ? l1 : l0)) : 0.f;
      }
    }
    u32 pa[4][4];
    pack_a(pa, s);
    tilec_wgmma_fence();
    issue_accumulate(dv, pa, sdO);
    tilec_wgmma_commit();
    tilec_wgmma_wait<1>();  // dPᵀ has landed (dV may still run)
    tilec_reg_fence(dp);
#pragma unroll
    for (int nt = 0; nt < SNT; ++nt) {
      const int c = nt * 8 + 2 * t;
      const float d0 = stats[BQ + c], d1 = stats[BQ + c + 1];
#pragma unroll
      for (int e = 0; e < 4; ++e) dp[nt * 4 + e] = s[nt * 4 + e] * (dp[nt * 4 + e] - ((e & 1) ? d1 : d0));
    }
    u32 dsa[4][4];
    pack_a(dsa, dp);
    if constexpr (WITH_DQ) {
      // dSᵀ rows (keys) wg*64 + warp*16 + g (+8), columns (queries) 2t, 2t+1 of each n-tile.
      const u32 sD = sDS + (j & 1) * DS_BYTES;
      unsigned char* dsp = sbase + (sD - sK);
      const int r = wg * 64 + warp * 16 + g;
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        *(u32*)(dsp + tilec_swz_off<BKV, 128>(r, 2 * kk) + t * 4) = dsa[kk][0];
        *(u32*)(dsp + tilec_swz_off<BKV, 128>(r + 8, 2 * kk) + t * 4) = dsa[kk][1];
        *(u32*)(dsp + tilec_swz_off<BKV, 128>(r, 2 * kk + 1) + t * 4) = dsa[kk][2];
        *(u32*)(dsp + tilec_swz_off<BKV, 128>(r + 8, 2 * kk + 1) + t * 4) = dsa[kk][3];
      }
    }
    tilec_wgmma_fence();
    issue_accumulate(dk, dsa, sQ);
    tilec_wgmma_commit();
    if constexpr (WITH_DQ) {
      float dq[DQN / 2];
      // The generic-proxy stores above must be visible to the tensor cores' (async proxy) reads, and
      // both warpgroups' halves of dSᵀ must be in place.
      asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
      tilec_named_barrier(1, 256);
      tilec_wgmma_fence();
      issue_dq(dq, sDS + (j & 1) * DS_BYTES, sK2half);
      tilec_wgmma_commit();
      tilec_wgmma_wait<0>();
      tilec_reg_fence(dq);
      tilec_reg_fence(dk);
      tilec_reg_fence(dv);
      if (lane == 0) tilec_mbar_arrive(barEmpty + 8 * slot);
      const int h = hk * walk.group + hi;
      float* acc = p.dq_accum + (((long long)b * p.num_heads + h) * SEQ_PAD + q0 + warp * 16 + g) * D + wg * DQN + 2 * t;
#pragma unroll
      for (int nt = 0; nt < DQN / 8; ++nt) {
        tilec_red_add2(acc + nt * 8, dq[nt * 4 + 0], dq[nt * 4 + 1]);
        tilec_red_add2(acc + 8 * D + nt * 8, dq[nt * 4 + 2], dq[nt * 4 + 3]);
      }
    } else {
      tilec_wgmma_wait<0>();
      tilec_reg_fence(dk);
      tilec_reg_fence(dv);
      if (lane == 0) tilec_mbar_arrive(barEmpty + 8 * slot);
    }
  }
  store_acc_rows(p.dk, p.dk_batch_stride, p.dk_seq_stride, p.dk_head_stride, b, hk, key0, seq, dk, p.scale, lane);
  store_acc_rows(p.dv, p.dv_batch_stride, p.dv_seq_stride, p.dv_head_stride, b, hk, key0, seq, dv, 1.f, lane);
}

}  // namespace tilec_b90

extern "C" __global__ void __launch_bounds__(tilec_b90::NTHR, 1)
    TILEC_BWD_DKDV(const __grid_constant__ TilecBwdParams p, const __grid_constant__ TilecTensorMaps tm) {
  extern __shared__ __align__(128) unsigned char smem[];  // aligned to 1024 inside
  __shared__ __align__(8) u64 bars[1 + 2 * tilec_b90::STAGES];
  tilec_b90::dkdv<true>(p, tm, smem, bars);
}
extern "C" __global__ void __launch_bounds__(tilec_b90::NTHR, 1)
    TILEC_BWD_DKDV_DET(const __grid_constant__ TilecBwdParams p, const __grid_constant__ TilecTensorMaps tm) {
  extern __shared__ __align__(128) unsigned char smem[];  // aligned to 1024 inside
  __shared__ __align__(8) u64 bars[1 + 2 * tilec_b90::STAGES];
  tilec_b90::dkdv<false>(p, tm, smem, bars);
}

#endif  // TILEC_BWD_SM90_CUH
