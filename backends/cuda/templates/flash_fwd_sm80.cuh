// tilec CUDA template: block-sparse FlashAttention-2 forward, bf16/fp16, sm_80+
// (flash_fwd_sm80.cuh)
//
// Concatenation order of the generated .cu file (done by the TS backend):
//   generated prelude  +  ptx.cuh  +  mma_tiles.cuh  +  this file        (no #include anywhere)
// The prelude must define TILEC_HEAD_DIM, TILEC_BLOCK_Q, TILEC_BLOCK_KV,
// TILEC_NUM_WARPS, TILEC_STAGES, TILEC_KERNEL_NAME, exactly one of
// TILEC_DTYPE_BF16 / TILEC_DTYPE_FP16, and
//   __device__ __forceinline__ bool tilec_mask(int q, int k);   // global token ids
// Optional knobs: TILEC_Q_IN_REGS (0/1), TILEC_SUB_KV (keys per softmax step),
// both chosen by a register estimate by default; TILEC_MIN_CTAS (second
// __launch_bounds__ argument, default 1).
//
// ---------------------------------------------------------------------------
// Kernel parameters: struct TilecParams, defined (with its byte layout) in ptx.cuh.
// Launch: grid (ceil(seq_len / BLOCK_Q), num_heads, batch), block NUM_WARPS*32,
// dynamic shared memory TILEC_SMEM_BYTES =
//     (BLOCK_Q + 2 * STAGES * BLOCK_KV) * HEAD_DIM * 2 + 128 bytes
// (Q tile, reused as the output staging tile, + STAGES x {K tile, V tile}, + 128
// bytes of alignment slack). e.g. d=96, 128x64, 2 stages: 73,856 B;
// d=128, 128x64, 2 stages: 98,432 B.
// Needs cudaFuncSetAttribute(MaxDynamicSharedMemorySize) above 48 KB.
// ---------------------------------------------------------------------------
#ifndef TILEC_FLASH_FWD_SM80_CUH
#define TILEC_FLASH_FWD_SM80_CUH

#if defined(TILEC_DTYPE_BF16)
#define TILEC_MMA tilec_mma_bf16
#define TILEC_PACK tilec_pack_bf16
#elif defined(TILEC_DTYPE_FP16)
#define TILEC_MMA tilec_mma_f16
#define TILEC_PACK tilec_pack_f16
#else
#error "flash_fwd_sm80.cuh needs TILEC_DTYPE_BF16 or TILEC_DTYPE_FP16 (fp32 uses flash_fwd_f32.cuh)"
#endif

#define TILEC_SMEM_BYTES ((TILEC_BLOCK_Q + 2 * TILEC_STAGES * TILEC_BLOCK_KV) * TILEC_HEAD_DIM * 2 + 128)

#ifndef TILEC_MIN_CTAS
#define TILEC_MIN_CTAS 1
#endif

namespace tilec_fa {

constexpr int D = TILEC_HEAD_DIM;
constexpr int BQ = TILEC_BLOCK_Q;
constexpr int BKV = TILEC_BLOCK_KV;
constexpr int NW = TILEC_NUM_WARPS;
constexpr int NTHR = NW * 32;
constexpr int STAGES = TILEC_STAGES;
constexpr int WROWS = BQ / NW;   // query rows per warp
constexpr int MT = WROWS / 16;   // 16-row mma tiles per warp
constexpr int DT = D / 8;        // 8-dim n-tiles of O per warp
constexpr int KD = D / 16;       // k-steps of Q.K^T
constexpr int CPR = D / 8;       // 16-byte chunks per smem row
constexpr int ROWB = D * 2;      // bytes per smem row (no padding: XOR swizzle instead)
constexpr int TILE_KV_BYTES = BKV * ROWB;
constexpr int STAGE_BYTES = 2 * TILE_KV_BYTES;

static_assert(D % 16 == 0 && D >= 16 && D <= 256, "head dim must be a multiple of 16 in 16..256");
static_assert(BQ % (NW * 16) == 0, "BLOCK_Q / NUM_WARPS must be a multiple of 16");
static_assert(BKV % 16 == 0, "BLOCK_KV must be a multiple of 16");
static_assert(STAGES >= 2, "need at least double buffering");

// Register plan. Per thread: O accumulator MT*DT*4, S chunk MT*SKV/2, Q
// fragments MT*KD*4 if kept in registers. ptxas needs ~70 more for row state,
// addresses, loop control and operand prefetch, so the big arrays get REG_BUDGET.
// SKV (keys per online-softmax step) is picked first: the largest divisor of
// BLOCK_KV whose S chunk fits next to O with Q in smem (the plan's block size is
// untouched, only the softmax granularity). Then Q stays in registers if it
// still fits. Measured on H100 at d=96, 128x64, 4 warps: SKV=64 with Q re-read
// from smem (FA2's choice, 357 TFLOP/s) beats Q in registers with SKV=32 (338).
// d=128 gets SKV=32 + Q in smem (SKV=64 spills); d=64 gets SKV=64 + Q in regs.
constexpr int REG_BUDGET = 184;
constexpr int REG_ACC = MT * DT * 4, REG_Q = MT * KD * 4;
__host__ __device__ constexpr int pick_skv(int skv) {
  return (skv <= 16 || (BKV % skv == 0 && REG_ACC + MT * skv / 2 <= REG_BUDGET)) ? skv : pick_skv(skv - 16);
}
#ifdef TILEC_SUB_KV
constexpr int SKV = TILEC_SUB_KV;
#else
constexpr int SKV = pick_skv(BKV);
#endif
#ifdef TILEC_Q_IN_REGS
constexpr bool Q_IN_REGS = TILEC_Q_IN_REGS;
#else
constexpr bool Q_IN_REGS = REG_ACC + MT * SKV / 2 + REG_Q <= REG_BUDGET;
#endif
// Lazy rescaling threshold (log2 units): a row's reference max only moves when
// the new max exceeds it by more than this, so P <= 2^8 (fine for bf16/fp16 and
// fp32 sums) and O/l are rescaled a few times per row instead of on every change.
#ifdef TILEC_RESCALE_TH
constexpr float RESCALE_TH = TILEC_RESCALE_TH;  // 0: classic eager rescaling
#else
constexpr float RESCALE_TH = 8.0f;
#endif
constexpr int NCH = BKV / SKV;  // softmax steps per kv block
constexpr int SNT = SKV / 8;    // 8-key n-tiles per step
constexpr int MASK_WORDS = (MT * SNT * 4 + 31) / 32;  // one bit per S element of a thread
constexpr int CLASS_WORDS = tilec_class_words(BKV);  // sub-tile class words per 16-row stripe
static_assert(SKV % 16 == 0 && BKV % SKV == 0, "TILEC_SUB_KV must be a multiple of 16 dividing BLOCK_KV");

// Shared-memory tiles: mma_tiles.cuh's row-XOR-swizzled layout and ldmatrix addressing (one register
// per operand, the k-step folded into the immediate), at this head dim and thread count.
__device__ __forceinline__ int swz_bits(int row) { return tilec_tiles::swz_bits<CPR>(row); }
__device__ __forceinline__ u32 swz(int row, int chunk) { return tilec_tiles::swz<CPR>(row, chunk); }
constexpr int SWW = tilec_tiles::sww<CPR>();
static_assert((BQ * ROWB) % 128 == 0 && (BKV * ROWB) % 128 == 0, "tile bases must stay 128-byte aligned");
__device__ __forceinline__ u32 lane_off(int row, int cb, int xs) { return tilec_tiles::lane_off<CPR>(row, cb, xs); }
__device__ __forceinline__ u32 kstep_addr(u32 base_plus_off, int kk) {
  return tilec_tiles::kstep_addr<CPR>(base_plus_off, kk);
}
template <int ROWS>
__device__ __forceinline__ void load_tile(u32 sdst, const u16* g, long long stride, int rows_valid, int tid) {
  tilec_tiles::load_tile<ROWS, CPR, NTHR>(sdst, g, stride, rows_valid, tid);
}

struct alignas(16) U4 {
  u32 x, y, z, w;
};

}  // namespace tilec_fa

// First query row and head of this CTA, recomputed for the epilogue instead of held across the kv
// loop: with the host's work order they come from memory (q_order) and arithmetic
// (tilec_work_item), so unlike blockIdx they cannot be rematerialized for free, and at d = 96 the
// loop has no register to spare. The opaque blockIdx keeps the compiler from merging the
// recomputation with the prologue's values.
__device__ __forceinline__ void tilec_epilogue_item(const TilecParams& p, int& q0, int& h) {
  int qi;
  tilec_work_item(tilec_opaque((int)blockIdx.x), tilec_opaque((int)blockIdx.y), qi, h);
  q0 = (p.q_order ? __ldg(p.q_order + qi) : qi) * TILEC_BLOCK_Q;
}

extern "C" __global__ void __launch_bounds__(TILEC_NUM_WARPS * 32, TILEC_MIN_CTAS)
    TILEC_KERNEL_NAME(const TilecParams p) {
  using namespace tilec_fa;
  extern __shared__ __align__(128) unsigned char smem[];

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3;  // mma fragment row group / column pair
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
  const int wrow0 = warp * WROWS;  // first CTA-local row of this warp

  const TilecPlanRow row(p.full_offsets, p.partial_offsets, qb);
  const int n_full = row.n_full, total = row.total;
  // This template holds the row's list pointers (it has the registers: no S of a whole tile).
  const int* f_idx = p.full_indices + row.f_beg;
  const int* p_idx = p.partial_indices + row.p_beg;
  // kv block of the i-th step of the one sequence "full list, then partial list".
  auto fetch_kb = [&](int i) -> int { return i < n_full ? f_idx[i] : (i < total ? p_idx[i - n_full] : 0); };

  const u16* qg = (const u16*)p.q + b * p.q_batch_stride + h * p.q_head_stride + q0 * p.q_seq_stride;
  // (output pointers are formed after the main loop so they hold no registers in it)
  if (total == 0) {  // nothing allowed for this query block: O = 0, lse = -inf
    u16* og = (u16*)p.o + b * p.o_batch_stride + h * p.o_head_stride + q0 * p.o_seq_stride;
    float* lse = p.lse ? p.lse + ((long long)b * p.num_heads + h) * seq : nullptr;
    const U4 z = {0u, 0u, 0u, 0u};
    for (int i = tid; i < BQ * CPR; i += NTHR) {
      const int r = i / CPR, c = i % CPR;
      if (q0 + r < seq) *(U4*)(og + r * p.o_seq_stride + c * 8) = z;
    }
    if (lse)
      for (int r = tid; r < BQ; r += NTHR)
        if (q0 + r < seq) lse[q0 + r] = TILEC_NEG_INF;
    return;
  }

  // The swizzle arithmetic XORs absolute shared addresses, so the tiles must
  // start 128-byte aligned; TILEC_SMEM_BYTES reserves 128 bytes of slack for this.
  const u32 s_raw = tilec_smem_u32(smem);
  unsigned char* sbase = smem + ((128u - (s_raw & 127u)) & 127u);
  const u32 sQ = tilec_smem_u32(sbase);
  const u32 sKV = sQ + BQ * ROWB;

  // K/V tile copy for kv block kb into ring slot dst (K tile, then V tile). The
  // per-CTA pointers are rebuilt from the parameter bank on every call, behind
  // tilec_opaque, so the compiler cannot hoist them out of the main loop and keep
  // four 64-bit values alive across the mma-heavy body (that alone caused spills).
  auto load_kv = [&](u32 dst, int kb) {
    const int k0 = kb * BKV, bb = tilec_opaque(b), hh = tilec_opaque(hkv), tt = tilec_opaque(tid);
    const u16* kg = (const u16*)p.k + bb * p.k_batch_stride + hh * p.k_head_stride + k0 * p.k_seq_stride;
    const u16* vg = (const u16*)p.v + bb * p.v_batch_stride + hh * p.v_head_stride + k0 * p.v_seq_stride;
    load_tile<BKV>(dst, kg, p.k_seq_stride, seq - k0, tt);
    load_tile<BKV>(dst + TILE_KV_BYTES, vg, p.v_seq_stride, seq - k0, tt);
  };

  // Group 0: Q. Groups 1..STAGES-1: the first kv blocks. Every later iteration
  // commits exactly one (possibly empty) group so wait_group counts stay uniform.
  load_tile<BQ>(sQ, qg, p.q_seq_stride, seq - q0, tid);
  tilec_cp_async_commit();
#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < total) load_kv(sKV + s * STAGE_BYTES, fetch_kb(s));
    tilec_cp_async_commit();
  }

  // Per-lane ldmatrix row/chunk selectors. All tiles start rows at multiples of
  // 8, so the swizzle bits depend only on lane & 7.
  // x4 matrix order: A (Q) [rows 0-7|8-15] x [k 0-7|8-15]; B (K) keys 0-7 {k 0-7, 8-15},
  // keys 8-15 {..}; B (V, .trans) dims 0-7 {keys 0-7, 8-15}, dims 8-15 {..}.
  const int xs = swz_bits(lane & 7);
  const u32 qoff = sQ + lane_off(wrow0 + (lane & 15), lane >> 4, xs);
  const u32 koff = lane_off((lane & 7) + ((lane >> 4) << 3), (lane >> 3) & 1, xs);
  const u32 voff = lane_off((lane & 7) + (((lane >> 3) & 1) << 3), lane >> 4, xs);

  u32 qf[MT][KD][4];  // used only when Q_IN_REGS (dead otherwise)
  tilec_cp_async_wait<STAGES - 1>();  // Q landed (this thread's part) ...
  __syncthreads();                    // ... and everybody else's
  if constexpr (Q_IN_REGS) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int kk = 0; kk < KD; ++kk)
        tilec_ldsm_x4(qf[mt][kk][0], qf[mt][kk][1], qf[mt][kk][2], qf[mt][kk][3],
                      kstep_addr(qoff, kk) + mt * 16 * ROWB);
  }

  float acc[MT][DT][4];
  // Row sums are fp32 sums of the unrounded probabilities (as in FA2), so lse
  // is accurate to fp32 even though P.V uses bf16/fp16 P. Each thread sums its
  // own columns; the quad reduction happens once, in the epilogue.
  float m_run[MT][2];  // reference max per row, raw score units
  float l_run[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int dt = 0; dt < DT; ++dt) acc[mt][dt][0] = acc[mt][dt][1] = acc[mt][dt][2] = acc[mt][dt][3] = 0.f;
    m_run[mt][0] = m_run[mt][1] = TILEC_NEG_INF;
    l_run[mt][0] = l_run[mt][1] = 0.f;
  }
  const float sl2 = p.scale_log2;

  u32 sK = sKV;  // ring slot (K tile; V follows) of the block computed now
#pragma unroll 1
  for (int j = 0; j < total; ++j) {
    // Both index loads are issued before the barrier and complete while waiting
    // on it; nothing is carried across iterations (registers are the limit here).
    const int kb = fetch_kb(j), kb_next = fetch_kb(j + STAGES - 1);
    // Block j's group is complete once at most STAGES-2 newer groups are pending.
    // The barrier also proves every warp finished block j-1, whose slot
    // is refilled right below: one barrier per iteration.
    tilec_cp_async_wait<STAGES - 2>();
    __syncthreads();
    if (j + STAGES - 1 < total)  // refill the slot of block j-1 (the one before sK in the ring)
      load_kv(sK == sKV ? sKV + (STAGES - 1) * STAGE_BYTES : sK - STAGE_BYTES, kb_next);
    tilec_cp_async_commit();

    const u32 sV = sK + TILE_KV_BYTES;
    const int k0 = kb * BKV;
    const bool partial = j >= n_full;

    // The block is consumed in NCH chunks of SKV keys, each a full online-softmax
    // step (see SKV above): S chunk -> mask -> softmax -> O += P V. The chunk loop
    // stays rolled on purpose: unrolled, ptxas overlaps chunk c+1's Q.K^T with
    // chunk c's P.V and the register peak is back to a whole block's.
#pragma unroll 1
    for (int ch = 0; ch < NCH; ++ch) {
      const int kc0 = k0 + ch * SKV;  // first key of this chunk

      // ---- element predicates of a partial chunk, evaluated BEFORE S is live and kept as
      // one bit per element: the generated mask's arithmetic then never competes with the S
      // and O accumulators for registers (evaluated after the mma it spilled at d=96).
      // Branch-free: && would short-circuit into a branch + convergence barrier per element.
      // tilec_mask runs on indices clamped into [0, seq) so masks that index tables stay in
      // bounds; the bounds are AND-ed in afterwards. tilec_opaque keeps the compiler from
      // hoisting per-row mask terms out of the kv loop, where they would hold registers.
      //
      // Sub-tile classes first (compiler/subPlan.ts; TilecParams.partial_classes): when every
      // 16 x 8 sub-tile of this warp's rows in this block is FULL or EMPTY (always, for Attention
      // Tile masks), the predicates are never evaluated and the classes alone mask S. The classes
      // are uniform across the warp, so `elementwise` never diverges.
      u32 cls[MT][CLASS_WORDS];
      bool elementwise = false;
      if (partial) {
        const int entry = (int)(p_idx - p.partial_indices) + j - n_full;  // p_idx is live anyway
        u32 any = 0u;
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
          for (int w = 0; w < CLASS_WORDS; ++w) {
            cls[mt][w] = tilec_class_word(p.partial_classes, entry, BQ / 16, warp * MT + mt, CLASS_WORDS, w);
            any |= tilec_class_partial_bits(cls[mt][w]);
          }
        elementwise = any != 0u;
      }
      u32 keep[MASK_WORDS];
#pragma unroll
      for (int w = 0; w < MASK_WORDS; ++w) keep[w] = 0u;
      if (elementwise) {
        const int q0c = q0;  // kept live (cheaper here than reloading: measured by ptxas -v)
#pragma unroll
        for (int nt = 0; nt < SNT; ++nt)
#pragma unroll
          for (int cc = 0; cc < 2; ++cc) {
            const int kc = kc0 + nt * 8 + 2 * t + cc;
            const bool k_ok = kc < seq;
            const int kcl = k_ok ? kc : seq - 1;
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
              for (int hh = 0; hh < 2; ++hh) {
                const int qr = q0c + wrow0 + mt * 16 + g + hh * 8;
                const bool q_ok = qr < seq;  // rows past seq_len are computed, never stored
                const bool ok = q_ok & k_ok & tilec_mask(tilec_opaque(q_ok ? qr : seq - 1), kcl);
                const int bit = (mt * SNT + nt) * 4 + 2 * hh + cc;
                keep[bit >> 5] |= (ok ? 1u : 0u) << (bit & 31);
              }
          }
      } else if (partial) {
        // Uniform sub-tiles: a FULL one keeps its 4 elements per thread, an EMPTY one none.
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
          for (int nt = 0; nt < SNT; ++nt) {
            const int bt = ch * SNT + nt, bit = (mt * SNT + nt) * 4;  // n-tile in the block; first bit
            if (tilec_class_full(cls[mt], bt)) keep[bit >> 5] |= 0xfu << (bit & 31);
          }
      }

      // ---- S = Q K^T (fp32 accumulators in registers)
      float s[MT][SNT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < SNT; ++nt) s[mt][nt][0] = s[mt][nt][1] = s[mt][nt][2] = s[mt][nt][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < KD; ++kk) {
        u32 qs[MT][4];  // used only when !Q_IN_REGS
        if constexpr (!Q_IN_REGS) {
#pragma unroll
          for (int mt = 0; mt < MT; ++mt)
            tilec_ldsm_x4(qs[mt][0], qs[mt][1], qs[mt][2], qs[mt][3], kstep_addr(qoff, kk) + mt * 16 * ROWB);
        }
#pragma unroll
        for (int np = 0; np < SNT / 2; ++np) {
          u32 b0, b1, b2, b3;
          tilec_ldsm_x4(b0, b1, b2, b3, kstep_addr(sK + koff, kk) + (ch * SKV + np * 16) * ROWB);
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            if constexpr (Q_IN_REGS) {
              TILEC_MMA(s[mt][2 * np], qf[mt][kk], b0, b1);
              TILEC_MMA(s[mt][2 * np + 1], qf[mt][kk], b2, b3);
            } else {
              TILEC_MMA(s[mt][2 * np], qs[mt], b0, b1);
              TILEC_MMA(s[mt][2 * np + 1], qs[mt], b2, b3);
            }
          }
        }
      }

      // ---- element predicates: only partial blocks and the ragged last block pay
      if (partial) {
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
          for (int nt = 0; nt < SNT; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int bit = (mt * SNT + nt) * 4 + e;
              if (!((keep[bit >> 5] >> (bit & 31)) & 1u)) s[mt][nt][e] = TILEC_NEG_INF;
            }
      } else if (kc0 + SKV > seq) {
#pragma unroll
        for (int nt = 0; nt < SNT; ++nt)
#pragma unroll
          for (int cc = 0; cc < 2; ++cc)
            if (kc0 + nt * 8 + 2 * t + cc >= seq)
#pragma unroll
              for (int mt = 0; mt < MT; ++mt) s[mt][nt][cc] = s[mt][nt][2 + cc] = TILEC_NEG_INF;
      }

      // ---- online softmax (base-2, scale folded into one FFMA per score)
      float corr[MT][2];
      bool grew = false;  // did any of this thread's reference maxima move?
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
          float red[SNT];  // row max as a tree: short dependency chain
#pragma unroll
          for (int nt = 0; nt < SNT; ++nt) red[nt] = tilec_fmax(s[mt][nt][2 * hh], s[mt][nt][2 * hh + 1]);
#pragma unroll
          for (int w = 1; w < SNT; w *= 2)
#pragma unroll
            for (int i = 0; i + w < SNT; i += 2 * w) red[i] = tilec_fmax(red[i], red[i + w]);
          const float m_old = m_run[mt][hh];
          float mx = tilec_fmax(m_old, red[0]);
          mx = tilec_fmax(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
          mx = tilec_fmax(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
          // Move the reference max only past the threshold. Old max -inf: the
          // difference is +inf, so the first finite max is always taken; both -inf:
          // NaN compares false and the row stays at -inf.
          const bool upd = (mx - m_old) * sl2 > RESCALE_TH;
          const float m_new = upd ? mx : m_old;
          // Check_inf: a row that saw only masked scores keeps max -inf; subtract 0
          // instead so exp2(-inf - (-inf)) never produces NaN.
          // base = m*scale_log2 rounded once (mul.rn, never fused) so that P, the
          // rescale factor and lse all see the very same reference value.
          const float base = (m_new == TILEC_NEG_INF) ? 0.f : tilec_mul_rn(m_new, sl2);
          corr[mt][hh] = upd ? tilec_exp2(tilec_mul_rn(m_old, sl2) - base) : 1.f;  // 0 if the old max was -inf
          grew |= upd;
          m_run[mt][hh] = m_new;
#pragma unroll
          for (int nt = 0; nt < SNT; ++nt) {
            s[mt][nt][2 * hh] = tilec_exp2(s[mt][nt][2 * hh] * sl2 - base);
            s[mt][nt][2 * hh + 1] = tilec_exp2(s[mt][nt][2 * hh + 1] * sl2 - base);
            red[nt] = s[mt][nt][2 * hh] + s[mt][nt][2 * hh + 1];
          }
#pragma unroll
          for (int w = 1; w < SNT; w *= 2)
#pragma unroll
            for (int i = 0; i + w < SNT; i += 2 * w) red[i] += red[i + w];
          // Summed here, before the warp-uniform branch below: ptxas does not move
          // the adds past it, so the fp32 P values are not kept alive through P.V.
          l_run[mt][hh] = l_run[mt][hh] * corr[mt][hh] + red[0];
        }
      // Rescale O only if some reference max of the warp moved; otherwise
      // all corr == 1 and the MT*DT*4 FMULs are skipped (warp-uniform branch).
      if (__any_sync(0xffffffffu, grew)) {
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
          for (int hh = 0; hh < 2; ++hh) {
#pragma unroll
            for (int dt = 0; dt < DT; ++dt) {
              acc[mt][dt][2 * hh] *= corr[mt][hh];
              acc[mt][dt][2 * hh + 1] *= corr[mt][hh];
            }
          }
      }

      // ---- O += P V: the S accumulator layout of two adjacent n-tiles is exactly
      // the A-fragment layout of one 16-key k-step, so P never leaves registers.
#pragma unroll
      for (int kk = 0; kk < SKV / 16; ++kk) {
        u32 pa[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          pa[mt][0] = TILEC_PACK(s[mt][2 * kk][0], s[mt][2 * kk][1]);
          pa[mt][1] = TILEC_PACK(s[mt][2 * kk][2], s[mt][2 * kk][3]);
          pa[mt][2] = TILEC_PACK(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
          pa[mt][3] = TILEC_PACK(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
        }
#pragma unroll
        for (int dp = 0; dp < D / 16; ++dp) {
          u32 b0, b1, b2, b3;
          tilec_ldsm_x4_t(b0, b1, b2, b3, kstep_addr(sV + voff, dp) + (ch * SKV + kk * 16) * ROWB);
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            TILEC_MMA(acc[mt][2 * dp], pa[mt], b0, b1);
            TILEC_MMA(acc[mt][2 * dp + 1], pa[mt], b2, b3);
          }
        }
      }
    }

    sK = (sK == sKV + (STAGES - 1) * STAGE_BYTES) ? sKV : sK + STAGE_BYTES;
  }
  tilec_cp_async_wait<0>();  // only empty groups can be left; drain anyway
  int q0e, he;
  tilec_epilogue_item(p, q0e, he);
  u16* og = (u16*)p.o + b * p.o_batch_stride + he * p.o_head_stride + q0e * p.o_seq_stride;
  float* lse = p.lse ? p.lse + ((long long)b * p.num_heads + he) * seq : nullptr;

  // ---- epilogue: finish row sums, normalize, lse, stage O through this warp's
  // own rows of the Q tile (no other warp touches them), then 16-byte stores.
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      float l = l_run[mt][hh];  // this thread's columns; finish the row over the quad
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      const float inv = l > 0.f ? tilec_rcp(l) : 0.f;  // fully masked row: acc == 0 -> O = 0
      const int r = wrow0 + mt * 16 + g + hh * 8;
      if (lse && t == 0 && q0e + r < seq)
        lse[q0e + r] = l > 0.f ? (tilec_mul_rn(m_run[mt][hh], sl2) + tilec_log2(l)) * TILEC_LN2 : TILEC_NEG_INF;
#pragma unroll
      for (int dt = 0; dt < DT; ++dt) {
        const u32 v = TILEC_PACK(acc[mt][dt][2 * hh] * inv, acc[mt][dt][2 * hh + 1] * inv);
        *(u32*)(sbase + swz(r, dt) + t * 4) = v;
      }
    }
  __syncwarp();
#pragma unroll
  for (int i = 0; i < WROWS * CPR / 32; ++i) {
    const int idx = lane + 32 * i;
    const int r = wrow0 + idx / CPR, c = idx % CPR;
    const U4 v = *(const U4*)(sbase + swz(r, c));
    if (q0e + r < seq) *(U4*)(og + r * p.o_seq_stride + c * 8) = v;
  }
}

#undef TILEC_MMA
#undef TILEC_PACK
#endif  // TILEC_FLASH_FWD_SM80_CUH
