// tilec CUDA template: block-sparse attention backward with mma.sync, bf16/fp16, sm_80+ (bwd_sm80.cuh)
//
// After bwd_common.cuh. Two passes over the mask (compiler/lowerBackward.ts), both with four warps,
// 64-row query tiles and 64-key tiles, both walking the plan's lists so empty blocks are never touched:
//
//   dK/dV (TILEC_BWD_DKDV, TILEC_BWD_DKDV_DET; unless the sm_90a template provides them): one block
//     per (key block, kv head, batch), its 64 keys four warps of 16. K and V stay in shared memory;
//     for every query head of the GQA group and every query block of the key block's transposed lists
//     (full, then partial) the step's Q, dO and row statistics stream through a cp.async ring, and
//         Sᵀ = K Qᵀ, dPᵀ = V dOᵀ (warp: 16 keys x 64 queries), P and dS in registers,
//         dV += Pᵀ dO, dK += dSᵀ Q     (Pᵀ and dSᵀ are already A fragments: no shared memory),
//     and in the default variant dSᵀ goes to shared memory and each warp adds its 16 query rows of
//     dS K into the fp32 dQ workspace (red.global.add). dK, dV are stored once, at the end.
//   dQ (TILEC_BWD_DQ, the deterministic variant): one block per (query block, head, batch), the
//     forward's walk: S = Q Kᵀ, dP = dO Vᵀ, dS = P ∘ (dP − D), dQ += dS K, stored once.
#ifndef TILEC_BWD_SM80_CUH
#define TILEC_BWD_SM80_CUH

#define TILEC_BWD80_TILE_BYTES (64 * TILEC_HEAD_DIM * 2)
// K, V tiles + stages x {Q, dO, lse_log2 and delta rows} + the dSᵀ tile + alignment slack
#define TILEC_DKDV80_SMEM_BYTES \
  (2 * TILEC_BWD80_TILE_BYTES + TILEC_DKDV_STAGES * (2 * TILEC_BWD80_TILE_BYTES + 512) + 64 * 64 * 2 + 128)
// Q, dO tiles + stages x {K, V}
#define TILEC_DQ80_SMEM_BYTES (2 * TILEC_BWD80_TILE_BYTES + TILEC_DQ_STAGES * 2 * TILEC_BWD80_TILE_BYTES + 128)

namespace tilec_b80 {
using namespace tilec_bwd;
using namespace tilec_tiles;

constexpr int NTHR = 128;    // four warps
constexpr int ROWS = 64;     // query rows of a step (dK/dV) or a block (dQ); keys of a block or tile
constexpr int KD = D / 16;   // k-steps over the head dim
constexpr int DT = D / 8;    // 8-wide n-tiles over the head dim
constexpr int ROWB = D * 2;  // bytes per tile row
constexpr int TILE_BYTES = TILEC_BWD80_TILE_BYTES;
constexpr int DS_CPR = 8;    // the dSᵀ tile: 64 keys x 64 queries, 8 chunks a row
constexpr int SNT = 8;       // 8-wide n-tiles of a warp's 16 x 64 score fragment
constexpr int QH = 2;  // the dK/dV pass takes a step's 64 queries in two halves (see dkdv)
constexpr int QN = 64 / QH, QNT = QN / 8;
static_assert(TILE_BYTES % 128 == 0, "tile bases stay 128-byte aligned");

// Which of a warp's 16 x 64 score elements are kept (bit nt*4 + e: row g + 8*(e>>1), column
// nt*8 + 2t + (e&1)). KEY_MAJOR: rows are keys and columns queries (Sᵀ of the dK/dV pass), else the
// forward's orientation. Partial tiles first by their sub-tile classes (one 32-bit word: 8 n-tiles
// of this warp's stripe); a word with a PARTIAL sub-tile evaluates tilec_mask on indices clamped into
// [0, seq). Keys past seq_len are never kept (their zero-filled K rows would still give P > 0);
// queries past it need no bound here: their lse_log2 is +inf, so their P is 0.
template <bool KEY_MAJOR>
__device__ __forceinline__ u32 keep_bits(bool partial, u32 cls, int row0, int col0, int seq, int lane) {
  const int g = lane >> 2, t = lane & 3;
  u32 keep = 0xffffffffu;
  if (partial) {
    keep = 0u;
    if (tilec_class_partial_bits(cls)) {
#pragma unroll 1
      for (int nt = 0; nt < SNT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int r = row0 + g + 8 * (e >> 1), c = col0 + nt * 8 + 2 * t + (e & 1);
          const int q = KEY_MAJOR ? c : r, k = KEY_MAJOR ? r : c;
          const bool in = q < seq && k < seq;
          const bool ok = in & tilec_mask(in ? q : seq - 1, in ? k : seq - 1);
          keep |= (ok ? 1u : 0u) << (nt * 4 + e);
        }
    } else {
#pragma unroll
      for (int nt = 0; nt < SNT; ++nt)
        if (tilec_class_full(&cls, nt)) keep |= 0xfu << (nt * 4);
    }
  }
  if (KEY_MAJOR) {
    if (row0 + 16 > seq) {
      const u32 lo = row0 + g < seq ? 0x3u : 0u, hi = row0 + g + 8 < seq ? 0xcu : 0u;
      u32 rows = 0u;
#pragma unroll
      for (int nt = 0; nt < SNT; ++nt) rows |= (lo | hi) << (nt * 4);
      keep &= rows;
    }
  } else if (col0 + 64 > seq) {
#pragma unroll
    for (int nt = 0; nt < SNT; ++nt)
#pragma unroll
      for (int cc = 0; cc < 2; ++cc)
        if (col0 + nt * 8 + 2 * t + cc >= seq) keep &= ~(0x5u << (nt * 4 + cc));
  }
  return keep;
}

// acc[NT][4] = A(16 x D, rows of the tile at a_addr) · Bᵀ, B = NT*8 rows of the tile at b_base read
// as [n][k] (non-trans): a warp's 16 x NT*8 scores (S = Q Kᵀ, Sᵀ = K Qᵀ, dP = dO Vᵀ, ...).
template <int NT>
__device__ __forceinline__ void scores(float (&acc)[NT][4], u32 a_base, u32 b_base) {
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;
#pragma unroll
  for (int kk = 0; kk < KD; ++kk) {
    u32 a[4];
    tilec_ldsm_x4(a[0], a[1], a[2], a[3], kstep_addr<CPR>(a_base, kk));
#pragma unroll
    for (int np = 0; np < NT / 2; ++np) {
      u32 b0, b1, b2, b3;
      tilec_ldsm_x4(b0, b1, b2, b3, kstep_addr<CPR>(b_base, kk) + np * 16 * ROWB);
      TILEC_MMA(acc[2 * np], a, b0, b1);
      TILEC_MMA(acc[2 * np + 1], a, b2, b3);
    }
  }
}

// acc[DT][4] += A (16 x KS*16, KS k-steps of A fragments in registers) · B, B = KS*16 rows x D of the
// tile at bt_base read as [k][n] (.trans): dV += Pᵀ dO, dK += dSᵀ Q, dQ += dS K.
template <int KS>
__device__ __forceinline__ void accumulate(float (&acc)[DT][4], const u32 (&a)[KS][4], u32 bt_base) {
#pragma unroll
  for (int kk = 0; kk < KS; ++kk)
#pragma unroll
    for (int dp = 0; dp < D / 16; ++dp) {
      u32 b0, b1, b2, b3;
      tilec_ldsm_x4_t(b0, b1, b2, b3, kstep_addr<CPR>(bt_base, dp) + kk * 16 * ROWB);
      TILEC_MMA(acc[2 * dp], a[kk], b0, b1);
      TILEC_MMA(acc[2 * dp + 1], a[kk], b2, b3);
    }
}

// Scores -> A fragments: two adjacent n-tiles of a 16 x NT*8 accumulator are one 16-wide k-step.
template <int NT>
__device__ __forceinline__ void to_a_fragments(u32 (&a)[NT / 2][4], const float (&x)[NT][4]) {
#pragma unroll
  for (int kk = 0; kk < NT / 2; ++kk) {
    a[kk][0] = TILEC_PACK(x[2 * kk][0], x[2 * kk][1]);
    a[kk][1] = TILEC_PACK(x[2 * kk][2], x[2 * kk][3]);
    a[kk][2] = TILEC_PACK(x[2 * kk + 1][0], x[2 * kk + 1][1]);
    a[kk][3] = TILEC_PACK(x[2 * kk + 1][2], x[2 * kk + 1][3]);
  }
}

__device__ __forceinline__ void zero(float (&acc)[DT][4]) {
#pragma unroll
  for (int dt = 0; dt < DT; ++dt) acc[dt][0] = acc[dt][1] = acc[dt][2] = acc[dt][3] = 0.f;
}

// Rows row0 + g, row0 + g + 8 of a [b, s, h, d] tensor from a warp's 16 x D accumulator (times
// `scale`), rows at or past seq skipped. 4-byte stores: the epilogue runs once per block.
__device__ __forceinline__ void store_rows(void* base, long long sb, long long ss, long long sh, int b, int h,
                                           int row0, int seq, const float (&acc)[DT][4], float scale, int lane) {
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int hh = 0; hh < 2; ++hh) {
    const int r = row0 + g + 8 * hh;
    if (r >= seq) continue;
    u16* dst = (u16*)base + b * sb + h * sh + (long long)r * ss + 2 * t;
#pragma unroll
    for (int dt = 0; dt < DT; ++dt)
      *(u32*)(dst + dt * 8) = TILEC_PACK(acc[dt][2 * hh] * scale, acc[dt][2 * hh + 1] * scale);
  }
}

#ifndef TILEC_BWD_DKDV_SM90
// The dK/dV pass (see the top of the file). WITH_DQ: the default variant, dQ added into dq_accum.
template <bool WITH_DQ>
__device__ __forceinline__ void dkdv(const TilecBwdParams& p, unsigned char* smem) {
  constexpr int STAGES = TILEC_DKDV_STAGES;
  constexpr int STAGE_BYTES = 2 * TILE_BYTES + 512;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
  int ki, hk;
  tilec_work_item_of<TILEC_DKDV_BLOCKS, TILEC_DKDV_HEAVY>(blockIdx.x, blockIdx.y, ki, hk);
  const int b = blockIdx.z;
  const int kb = p.kv_order ? p.kv_order[ki] : ki;
  const int k0 = kb * ROWS, seq = p.seq_len;
  const KeyMajorWalk walk(p, kb);
  const float sl2 = p.scale_log2;

  const u32 s_raw = tilec_smem_u32(smem);
  unsigned char* sbase = smem + ((128u - (s_raw & 127u)) & 127u);
  const u32 sK = tilec_smem_u32(sbase), sV = sK + TILE_BYTES, sStages = sV + TILE_BYTES;
  const u32 sDS = sStages + STAGES * STAGE_BYTES;

  load_tile<ROWS, CPR, NTHR>(sK, row_of(p.k, p.k_batch_stride, p.k_seq_stride, p.k_head_stride, b, hk, k0),
                             p.k_seq_stride, seq - k0, tid);
  load_tile<ROWS, CPR, NTHR>(sV, row_of(p.v, p.v_batch_stride, p.v_seq_stride, p.v_head_stride, b, hk, k0),
                             p.v_seq_stride, seq - k0, tid);
  tilec_cp_async_commit();
  // Step j's Q and dO rows and row statistics into ring slot `slot`.
  auto load_step = [&](int j, int slot) {
    int hi, qb, entry;
    walk.step(p, j, hi, qb, entry);
    const int h = hk * walk.group + hi, q0 = qb * ROWS;
    const u32 dst = sStages + slot * STAGE_BYTES;
    load_tile<ROWS, CPR, NTHR>(dst, row_of(p.q, p.q_batch_stride, p.q_seq_stride, p.q_head_stride, b, h, q0),
                               p.q_seq_stride, seq - q0, tid);
    load_tile<ROWS, CPR, NTHR>(dst + TILE_BYTES,
                               row_of(p.do_, p.do_batch_stride, p.do_seq_stride, p.do_head_stride, b, h, q0),
                               p.do_seq_stride, seq - q0, tid);
    if (tid < 32) {
      const long long row = ((long long)b * p.num_heads + h) * SEQ_PAD + q0 + 4 * (tid & 15);
      tilec_cp_async16(dst + 2 * TILE_BYTES + tid * 16, (tid < 16 ? p.lse_log2 : p.delta) + row, 16);
    }
  };
#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < walk.total) load_step(s, s);
    tilec_cp_async_commit();
  }

  const int xs = swz_bits<CPR>(lane & 7);
  const u32 a_off = lane_off<CPR>(warp * 16 + a_row(lane), a_chunk(lane), xs);
  const u32 b_off = lane_off<CPR>(b_row(lane), b_chunk(lane), xs);
  const u32 bt_off = lane_off<CPR>(bt_row(lane), bt_chunk(lane), xs);

  float dk[DT][4], dv[DT][4];
  zero(dk);
  zero(dv);
#pragma unroll 1
  for (int j = 0; j < walk.total; ++j) {
    tilec_cp_async_wait<STAGES - 2>();
    __syncthreads();  // step j landed everywhere; every warp is done with step j-1 (its slot, dSᵀ)
    if (j + STAGES - 1 < walk.total) load_step(j + STAGES - 1, (j + STAGES - 1) % STAGES);
    tilec_cp_async_commit();
    const u32 sQ = sStages + (j % STAGES) * STAGE_BYTES, sdO = sQ + TILE_BYTES;
    const float* stats = (const float*)(sbase + (sQ - sK) + 2 * TILE_BYTES);
    int hi, qb, entry;
    walk.step(p, tilec_opaque(j), hi, qb, entry);
    const int q0 = qb * ROWS;
    const u32 cls = entry >= 0 && p.partialT_classes ? __ldg(p.partialT_classes + entry * 4 + warp)
                                                     : (entry >= 0 ? 0x5555u : 0u);
    const u32 keep = keep_bits<true>(entry >= 0, cls, k0 + warp * 16, q0, seq, lane);

    // The step's 64 queries in two halves of 32: half the Sᵀ and dPᵀ
    // registers beside dK and dV (which alone hold D/2 floats each per thread).
#pragma unroll 1
    for (int half = 0; half < QH; ++half) {
      const u32 qoff = half * QN * ROWB;
      float s[QNT][4], dp[QNT][4];
      scores(s, sK + a_off, sQ + qoff + b_off);
      scores(dp, sV + a_off, sdO + qoff + b_off);
      // P = exp2(S·scale·log2 e − lse·log2 e); dS = P ∘ (dP − D); columns are queries.
#pragma unroll
      for (int nt = 0; nt < QNT; ++nt) {
        const int c = half * QN + nt * 8 + 2 * t;
        const float l0 = stats[c], l1 = stats[c + 1], d0 = stats[64 + c], d1 = stats[64 + c + 1];
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const bool kept = (keep >> (half * QNT * 4 + nt * 4 + e)) & 1u;
          const float pe = kept ? tilec_exp2(s[nt][e] * sl2 - ((e & 1) ? l1 : l0)) : 0.f;
          s[nt][e] = pe;
          dp[nt][e] = pe * (dp[nt][e] - ((e & 1) ? d1 : d0));
        }
      }
      u32 pa[QNT / 2][4], dsa[QNT / 2][4];
      to_a_fragments(pa, s);
      to_a_fragments(dsa, dp);
      accumulate(dv, pa, sdO + qoff + bt_off);
      accumulate(dk, dsa, sQ + qoff + bt_off);
      if constexpr (WITH_DQ) {
        // dSᵀ to shared memory (rows: keys, columns: queries) for the dQ product below.
        const int r = warp * 16 + g;
#pragma unroll
        for (int kk = 0; kk < QNT / 2; ++kk) {
          const int ch = half * (QN / 8) + 2 * kk;
          *(u32*)(sbase + (sDS - sK) + swz<DS_CPR>(r, ch) + t * 4) = dsa[kk][0];
          *(u32*)(sbase + (sDS - sK) + swz<DS_CPR>(r + 8, ch) + t * 4) = dsa[kk][1];
          *(u32*)(sbase + (sDS - sK) + swz<DS_CPR>(r, ch + 1) + t * 4) = dsa[kk][2];
          *(u32*)(sbase + (sDS - sK) + swz<DS_CPR>(r + 8, ch + 1) + t * 4) = dsa[kk][3];
        }
      }
    }
    if constexpr (WITH_DQ) {
      // This warp's 16 query rows of dS K, over the block's 64 keys.
      __syncthreads();
      float dq[DT][4];
      zero(dq);
      const int dsx = swz_bits<DS_CPR>(lane & 7);
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        u32 a[4];
        tilec_ldsm_x4_t(a[0], a[1], a[2], a[3],
                        kstep_addr<DS_CPR>(sDS + lane_off<DS_CPR>(kk * 16 + at_row(lane), at_chunk(lane), dsx), warp));
#pragma unroll
        for (int dd = 0; dd < D / 16; ++dd) {
          u32 b0, b1, b2, b3;
          tilec_ldsm_x4_t(b0, b1, b2, b3, kstep_addr<CPR>(sK + bt_off, dd) + kk * 16 * ROWB);
          TILEC_MMA(dq[2 * dd], a, b0, b1);
          TILEC_MMA(dq[2 * dd + 1], a, b2, b3);
        }
      }
      const int h = hk * walk.group + hi;
      float* acc = p.dq_accum + (((long long)b * p.num_heads + h) * SEQ_PAD + q0 + warp * 16 + g) * D + 2 * t;
#pragma unroll
      for (int dt = 0; dt < DT; ++dt) {
        tilec_red_add2(acc + dt * 8, dq[dt][0], dq[dt][1]);
        tilec_red_add2(acc + 8 * D + dt * 8, dq[dt][2], dq[dt][3]);
      }
    }
  }
  tilec_cp_async_wait<0>();
  store_rows(p.dk, p.dk_batch_stride, p.dk_seq_stride, p.dk_head_stride, b, hk, k0 + warp * 16, seq, dk, p.scale,
             lane);
  store_rows(p.dv, p.dv_batch_stride, p.dv_seq_stride, p.dv_head_stride, b, hk, k0 + warp * 16, seq, dv, 1.f, lane);
}
#endif  // !TILEC_BWD_DKDV_SM90

// The dQ pass (see the top of the file): the deterministic variant's dQ.
__device__ __forceinline__ void dq_pass(const TilecBwdParams& p, unsigned char* smem) {
  constexpr int STAGES = TILEC_DQ_STAGES;
  constexpr int STAGE_BYTES = 2 * TILE_BYTES;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2;
  int qi, h;
  tilec_work_item_of<TILEC_DQ_BLOCKS, TILEC_DQ_HEAVY>(blockIdx.x, blockIdx.y, qi, h);
  const int b = blockIdx.z;
  const int qb = p.q_order ? p.q_order[qi] : qi;
  const int hk = h / (p.num_heads / p.num_kv_heads);
  const int q0 = qb * ROWS, seq = p.seq_len;
  const float sl2 = p.scale_log2;
  const TilecPlanRow row(p.full_offsets, p.partial_offsets, qb);
  const int total = row.total;
  auto tile_of = [&](int j) { return row.tile(p.full_indices, p.partial_indices, j); };

  const u32 s_raw = tilec_smem_u32(smem);
  unsigned char* sbase = smem + ((128u - (s_raw & 127u)) & 127u);
  const u32 sQ = tilec_smem_u32(sbase), sdO = sQ + TILE_BYTES, sKV = sdO + TILE_BYTES;
  load_tile<ROWS, CPR, NTHR>(sQ, row_of(p.q, p.q_batch_stride, p.q_seq_stride, p.q_head_stride, b, h, q0),
                             p.q_seq_stride, seq - q0, tid);
  load_tile<ROWS, CPR, NTHR>(sdO, row_of(p.do_, p.do_batch_stride, p.do_seq_stride, p.do_head_stride, b, h, q0),
                             p.do_seq_stride, seq - q0, tid);
  tilec_cp_async_commit();
  auto load_kv = [&](int j, int slot) {
    const int k0 = tile_of(j) * ROWS, bb = tilec_opaque(b), hh = tilec_opaque(hk), tt = tilec_opaque(tid);
    const u32 dst = sKV + slot * STAGE_BYTES;
    load_tile<ROWS, CPR, NTHR>(dst, row_of(p.k, p.k_batch_stride, p.k_seq_stride, p.k_head_stride, bb, hh, k0),
                               p.k_seq_stride, seq - k0, tt);
    load_tile<ROWS, CPR, NTHR>(dst + TILE_BYTES,
                               row_of(p.v, p.v_batch_stride, p.v_seq_stride, p.v_head_stride, bb, hh, k0),
                               p.v_seq_stride, seq - k0, tt);
  };
#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < total) load_kv(s, s);
    tilec_cp_async_commit();
  }
  // This thread's rows' statistics (rows past seq are padding: lse_log2 +inf, delta 0).
  const long long stat_row = ((long long)b * p.num_heads + h) * SEQ_PAD + q0 + warp * 16 + g;
  const float l2[2] = {p.lse_log2[stat_row], p.lse_log2[stat_row + 8]};
  const float dl[2] = {p.delta[stat_row], p.delta[stat_row + 8]};

  const int xs = swz_bits<CPR>(lane & 7);
  const u32 a_off = lane_off<CPR>(warp * 16 + a_row(lane), a_chunk(lane), xs);
  const u32 b_off = lane_off<CPR>(b_row(lane), b_chunk(lane), xs);
  const u32 bt_off = lane_off<CPR>(bt_row(lane), bt_chunk(lane), xs);
  float dq[DT][4];
  zero(dq);
#pragma unroll 1
  for (int j = 0; j < total; ++j) {
    tilec_cp_async_wait<STAGES - 2>();
    __syncthreads();
    if (j + STAGES - 1 < total) load_kv(j + STAGES - 1, (j + STAGES - 1) % STAGES);
    tilec_cp_async_commit();
    const u32 sK = sKV + (j % STAGES) * STAGE_BYTES, sV = sK + TILE_BYTES;
    const int k0 = tile_of(j) * ROWS;
    const bool partial = row.partial(j);
    const int entry = row.entry(j);
    const u32 cls = partial && p.partial_classes ? __ldg(p.partial_classes + entry * 4 + warp) : (partial ? 0x5555u : 0u);
    const u32 keep = keep_bits<false>(partial, cls, q0 + warp * 16, k0, seq, lane);

    float s[SNT][4], dp[SNT][4];
    scores(s, sQ + a_off, sK + b_off);
    scores(dp, sdO + a_off, sV + b_off);
#pragma unroll
    for (int nt = 0; nt < SNT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const bool kept = (keep >> (nt * 4 + e)) & 1u;
        const float pe = kept ? tilec_exp2(s[nt][e] * sl2 - l2[e >> 1]) : 0.f;
        dp[nt][e] = pe * (dp[nt][e] - dl[e >> 1]);
      }
    u32 dsa[4][4];
    to_a_fragments(dsa, dp);
    accumulate(dq, dsa, sK + bt_off);
  }
  tilec_cp_async_wait<0>();
  store_rows(p.dq, p.dq_batch_stride, p.dq_seq_stride, p.dq_head_stride, b, h, q0 + warp * 16, seq, dq, p.scale, lane);
}

}  // namespace tilec_b80

#ifndef TILEC_BWD_DKDV_SM90
extern "C" __global__ void __launch_bounds__(tilec_b80::NTHR, 1) TILEC_BWD_DKDV(const TilecBwdParams p) {
  extern __shared__ __align__(128) unsigned char smem[];
  tilec_b80::dkdv<true>(p, smem);
}
extern "C" __global__ void __launch_bounds__(tilec_b80::NTHR, 1) TILEC_BWD_DKDV_DET(const TilecBwdParams p) {
  extern __shared__ __align__(128) unsigned char smem[];
  tilec_b80::dkdv<false>(p, smem);
}
#endif
extern "C" __global__ void __launch_bounds__(tilec_b80::NTHR, 1) TILEC_BWD_DQ(const TilecBwdParams p) {
  extern __shared__ __align__(128) unsigned char smem[];
  tilec_b80::dq_pass(p, smem);
}

#endif  // TILEC_BWD_SM80_CUH
