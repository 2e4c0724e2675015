// tilec CUDA template: block-sparse FlashAttention forward for Hopper, bf16/fp16, sm_90a
// (flash_fwd_sm90.cuh)
//
// Concatenation order of the generated .cu file (done by the TS backend):
//   generated prelude + ptx.cuh + ptx_sm90.cuh + wgmma wrappers (wgmma.ts) + this file
// The prelude defines TILEC_HEAD_DIM, TILEC_BLOCK_Q, TILEC_BLOCK_KV, TILEC_STAGES,
// TILEC_KERNEL_NAME, one of TILEC_DTYPE_BF16 / TILEC_DTYPE_FP16, and tilec_mask(q, k).
//
// Structure (FlashAttention-3 style, warp-specialized), one CTA per (query block, head, batch):
//   warpgroup 0       producer: one thread drives the tensor memory accelerator (TMA): the Q tile,
//                     then the K/V tiles of the plan's lists (full list, then partial list)
//                     into a STAGES-deep ring, each tile one bulk tensor copy per column block that
//                     completes as transaction bytes on the slot's "full" mbarrier (with a partial
//                     tile's sub-tile class words, one plain bulk copy into the slot). Gives its
//                     registers away (setmaxnreg.dec).
//   warpgroups 1..W   consumers, 64 query rows each (BLOCK_Q = 64·W): S = Q K^T with wgmma from
//                     shared memory, element mask, online softmax in registers (without row
//                     maxima while the running max holds: softmax_fast), O += P V with P as the
//                     register A operand; release each slot on its "empty" mbarrier.
// Not persistent: a persistent grid (one CTA per SM, K/V ring running on across items) measured 0-4%
// slower with a static deal of the items (bench/NOTES.md step 14) and the same as one block per item
// with a dynamic one from an atomic counter (step 22): the hardware's block dispatch balances the
// unequal items as well, and per-block start-up costs little with TMA.
//
// Shared memory (TILEC_SMEM_BYTES): Q tile, STAGES x {K tile, V tile}, STAGES x class words of a
// partial tile, 1024 bytes alignment slack.
// Tiles are stored as wgmma's canonical swizzled layout, which is also what TMA writes with the
// matching swizzle mode: column blocks of SW bytes per row (SW = 128 when head_dim % 64 == 0, else
// 64), each block ROWS x SW bytes with 16-byte chunks XOR-swizzled by address bits 7..
// (Swizzle<3,4,3> / <2,4,3>). K and V tiles share the layout; Q and K are read K-major, V N-major
// (imm-trans-b), so no tile is ever transposed. Rows past seq_len arrive as zeros (TMA fill).
#ifndef TILEC_FLASH_FWD_SM90_CUH
#define TILEC_FLASH_FWD_SM90_CUH

#if defined(TILEC_DTYPE_BF16)
#define TILEC_PACK tilec_pack_bf16
#define TILEC_MMA tilec_mma_bf16
#elif defined(TILEC_DTYPE_FP16)
#define TILEC_PACK tilec_pack_f16
#define TILEC_MMA tilec_mma_f16
#else
#error "flash_fwd_sm90.cuh needs TILEC_DTYPE_BF16 or TILEC_DTYPE_FP16"
#endif

#define TILEC_CLASS_BYTES ((TILEC_BLOCK_Q / 16) * ((TILEC_BLOCK_KV / 8 + 15) / 16) * 4)
#define TILEC_SMEM_BYTES \
  ((TILEC_BLOCK_Q + 2 * TILEC_STAGES * TILEC_BLOCK_KV) * TILEC_HEAD_DIM * 2 + TILEC_STAGES * TILEC_CLASS_BYTES + 1024)

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
// Swizzle width, bytes per row of a column block. (Padding head dim 96 to 128-byte atoms measured
// the same on H100: 525 vs 520 TFLOP/s dense, 485 vs 497 on tile_2_6.)
constexpr int SW = (D % 64 == 0) ? 128 : 64;
constexpr int SWMODE = SW == 128 ? 1 : 2;     // descriptor encoding
constexpr int CPR = D / 8;               // 16-byte chunks per head-dim row
constexpr int KSA = SW / 32;             // 16-element k-steps per column block
constexpr int TILE_KV_BYTES = BKV * D * 2;
constexpr int STAGE_BYTES = 2 * TILE_KV_BYTES;
constexpr int SNT = BKV / 8;             // 8-key n-tiles of S per thread
constexpr int MASK_WORDS = (SNT * 4 + 31) / 32;
constexpr int CLASS_WORDS = tilec_class_words(BKV);  // sub-tile class words per 16-row stripe (ptx.cuh)
constexpr int CLASS_BYTES = TILEC_CLASS_BYTES;       // one partial tile's classes: BQ/16 stripes
static_assert(CLASS_BYTES == (BQ / 16) * CLASS_WORDS * 4 && CLASS_BYTES % 16 == 0, "bulk-copy size");

static_assert(D % 32 == 0 && D >= 64 && D <= 128, "sm90 template: head dim 64, 96 or 128");
static_assert(BQ == 64 || BQ == 128, "sm90 template: 64 or 128 query rows (1 or 2 consumer warpgroups)");
static_assert(BKV % 16 == 0 && BKV >= 16 && BKV <= 256, "sm90 template: key tile a multiple of 16 up to 256");
static_assert(STAGES >= 2, "need at least double buffering");

// Producer and consumer register budgets after setmaxnreg (multiples of 8; total <= 64K).
constexpr int PRODUCER_REGS = 24;
constexpr int CONSUMER_REGS = NCWG == 1 ? 256 : 240;
// setmaxnreg moves registers inside the CTA's launch allocation (the __launch_bounds__ budget per
// thread, a multiple of 8, times NTHR): a consumer's .inc waits until the producer's .dec has freed
// enough, forever if the budgets add up to more than that allocation (a hang, not a compile error).
constexpr int LAUNCH_REGS = 65536 / NTHR / 8 * 8;
static_assert(PRODUCER_REGS * 128 + CONSUMER_REGS * 128 * NCWG <= LAUNCH_REGS * NTHR,
              "setmaxnreg budgets exceed the launch allocation: the consumers would wait forever");

#ifdef TILEC_PINGPONG
constexpr bool PINGPONG = TILEC_PINGPONG && NCWG == 2;
#else
constexpr bool PINGPONG = NCWG == 2;
#endif

#ifdef TILEC_RESCALE_TH
constexpr float RESCALE_TH = TILEC_RESCALE_TH;
#else
constexpr float RESCALE_TH = 8.0f;  // lazy rescaling, as in flash_fwd_sm80.cuh
#endif

// Byte offset of 16-byte chunk `c` of row `r` in a tile of ROWS rows (see the layout above).
template <int ROWS>
__device__ __forceinline__ u32 chunk_off(int r, int c) {
  return tilec_swz_off<ROWS, SW>(r, c);
}

struct alignas(16) U4 {
  u32 x, y, z, w;
};

// A ROWS x D tile by the copy engine into the swizzled layout above.
template <int ROWS>
__device__ __forceinline__ void tma_tile(u32 sdst, const TilecTensorMap* map, int row, int head, int batch, u32 bar) {
  tilec_tma_tile<ROWS, SW, D>(sdst, map, row, head, batch, bar);
}

// ---- consumer building blocks. Fragment layout of S (wgmma m64nBKV accumulator): per thread,
// s[nt*4 + e] is row row0 + 8*(e>>1), key nt*8 + 2*t + (e&1) of the tile (t = lane % 4).

// S = Q K^T over D/16 k-steps: Q and K are K-major; step kk moves 32 bytes inside a column block
// and one whole block (ROWS x SW bytes) every KSA steps.
__device__ __forceinline__ void issue_s(float (&s)[BKV / 2], u64 dQ, u32 sK) {
  const u64 dK = tilec_gmma_desc(sK, 16, 8 * SW, SWMODE);
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    const u32 qoff = (u32)(((kk / KSA) * BQ * SW + (kk % KSA) * 32) >> 4);
    const u32 koff = (u32)(((kk / KSA) * BKV * SW + (kk % KSA) * 32) >> 4);
    TILEC_WGMMA_SS(TILEC_BLOCK_KV)(s, dQ + qoff, dK + koff, kk > 0);
  }
}

// O += P V over BKV/16 key steps: V is read N-major; leading offset = one column block (BKV
// rows), stride = 8 rows; key step kk moves 16 rows.
__device__ __forceinline__ void issue_pv(float (&o)[D / 2], const u32 (&pa)[BKV / 16][4], u32 sV) {
  const u64 dV = tilec_gmma_desc(sV, BKV * SW, 8 * SW, SWMODE);
#pragma unroll
  for (int kk = 0; kk < BKV / 16; ++kk) TILEC_WGMMA_RS(TILEC_HEAD_DIM)(o, pa[kk], dV + (u32)((kk * 16 * SW) >> 4), 1);
}

// This warp's 16 rows of S = Q K^T again, with warp-level mma.sync from the Q and K tiles in shared
// memory: the rare fallback of softmax_fast, which has overwritten S. Warp-local on purpose (a
// wgmma would need all four warps of the warpgroup, and the others may have accepted their rows).
// m16n8k16's accumulator fragment is this warp's slice of the wgmma m64nBKV accumulator; ldmatrix
// reads the swizzled tiles through chunk_off (lane l addresses row l % 8 of 8x8 matrix l / 8).
__device__ __forceinline__ void recompute_s_warp(float (&s)[BKV / 2], u32 sQ, u32 sK) {
#pragma unroll
  for (int i = 0; i < BKV / 2; ++i) s[i] = 0.f;
  // The thread index read here, by a volatile asm: the lane-dependent row offsets below would
  // otherwise be hoisted out of the kernel's main loop and held in registers for the whole of it.
  int tid;
  asm volatile("mov.u32 %0, %%tid.x;" : "=r"(tid));
  const int lane = tid & 31, mi = lane >> 3;
  const int qrow = ((tid >> 5) - 4) * 16;  // consumer warp w (warps 4..) owns Q rows 16·(w-4) ..

  // Rolled over k-steps: unrolled, ptxas hoists the loads of all of them and spills.
#pragma unroll 1
  for (int kk = 0; kk < D / 16; ++kk) {
    u32 a[4];
    tilec_ldsm_x4(a[0], a[1], a[2], a[3], sQ + chunk_off<BQ>(qrow + (lane & 7) + ((mi & 1) << 3), kk * 2 + (mi >> 1)));
#pragma unroll
    for (int np = 0; np < SNT / 2; ++np) {
      u32 b[4];
      tilec_ldsm_x4(b[0], b[1], b[2], b[3], sK + chunk_off<BKV>(np * 16 + (lane & 7) + ((mi >> 1) << 3), kk * 2 + (mi & 1)));
      TILEC_MMA(&s[(2 * np) * 4], a, b[0], b[1]);
      TILEC_MMA(&s[(2 * np + 1) * 4], a, b[2], b[3]);
    }
  }
}

// Element predicates of a partial tile as one bit per S element, evaluated before its wgmmas are
// issued. No divergence; tilec_mask sees indices clamped into [0, seq) (see flash_fwd_sm80.cuh).
__device__ __forceinline__ void mask_bits(u32 (&keep)[MASK_WORDS], int qrow0, int k0, int seq, int t) {
  // One n-tile (2 keys x 2 rows) per trip of a rolled loop: unrolled, ptxas hoists all 2·SNT key
  // decodes to the top of the path and spills beside S, P and O (the consumers' 240 registers).
  // Measured as fast as the unrolled loop on masks that never take this path (NOTES step 25).
#pragma unroll
  for (int w = 0; w < MASK_WORDS; ++w) {
    u32 word = 0u;
#pragma unroll 1
    for (int i = 0; i < 8 && w * 8 + i < SNT; ++i) {
      const int nt = w * 8 + i;
#pragma unroll
      for (int cc = 0; cc < 2; ++cc) {
        const int kc = k0 + nt * 8 + 2 * t + cc;
        const bool k_ok = kc < seq;
        const int kcl = k_ok ? kc : seq - 1;
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
          const int qr = qrow0 + hh * 8;
          const bool q_ok = qr < seq;
          const bool ok = q_ok & k_ok & tilec_mask(q_ok ? qr : seq - 1, kcl);
          word |= (ok ? 1u : 0u) << (i * 4 + 2 * hh + cc);
        }
      }
    }
    keep[w] = word;
  }
}

__device__ __forceinline__ void apply_mask(float (&s)[BKV / 2], const u32 (&keep)[MASK_WORDS]) {
#pragma unroll
  for (int bit = 0; bit < SNT * 4; ++bit)
    if (!((keep[bit >> 5] >> (bit & 31)) & 1u)) s[bit] = TILEC_NEG_INF;
}

// Sub-tile classes of a partial tile (compiler/subPlan.ts): this warp's 16 rows, 2 bits per n-tile.
// A partial tile whose classes are all FULL or EMPTY (every Attention Tile mask: frame boundaries
// fall on multiples of 16 tokens) needs no predicate at all: one FSEL per element from the class
// bits, against ~600 instructions per thread for evaluating the mask on 64 elements. The classes
// are the same for all lanes of a warp, so the choice between the two paths never diverges.
// The producer copies them into the tile's stage beside K and V (shared memory, `scls`), so reading
// them costs no global-memory latency on the consumers' path (null classes: every sub-tile PARTIAL).
__device__ __forceinline__ void load_classes(u32 (&cls)[CLASS_WORDS], bool have, const u32* scls, int stripe) {
#pragma unroll
  for (int w = 0; w < CLASS_WORDS; ++w) cls[w] = have ? scls[stripe * CLASS_WORDS + w] : 0x55555555u;
}

__device__ __forceinline__ bool any_partial_subtile(const u32 (&cls)[CLASS_WORDS]) {
  u32 any = 0u;
#pragma unroll
  for (int w = 0; w < CLASS_WORDS; ++w) any |= tilec_class_partial_bits(cls[w]);
  return any != 0u;
}

__device__ __forceinline__ void apply_classes(float (&s)[BKV / 2], const u32 (&cls)[CLASS_WORDS]) {
#pragma unroll
  for (int nt = 0; nt < SNT; ++nt) {
    const bool keep = tilec_class_full(cls, nt);
#pragma unroll
    for (int e = 0; e < 4; ++e) s[nt * 4 + e] = keep ? s[nt * 4 + e] : TILEC_NEG_INF;
  }
}

// Keys past seq_len in the ragged last tile of a full block.
__device__ __forceinline__ void mask_tail(float (&s)[BKV / 2], int k0, int seq, int t) {
#pragma unroll
  for (int nt = 0; nt < SNT; ++nt)
#pragma unroll
    for (int cc = 0; cc < 2; ++cc)
      if (k0 + nt * 8 + 2 * t + cc >= seq) s[nt * 4 + cc] = s[nt * 4 + 2 + cc] = TILEC_NEG_INF;
}

// Row hh of this thread's S (its SNT n-tiles, 2 scores each) becomes P = exp2(s·scale_log2 - base);
// returns the row's partial sum over this thread's columns. Four running sums, not a tree over
// all n-tiles: fewer live registers, and the MUFU pipe, not this chain, sets the pace.
__device__ __forceinline__ float exp_row(float (&s)[BKV / 2], int hh, float base, float sl2) {
  float red[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
  for (int nt = 0; nt < SNT; ++nt) {
    s[nt * 4 + 2 * hh] = tilec_exp2(s[nt * 4 + 2 * hh] * sl2 - base);
    s[nt * 4 + 2 * hh + 1] = tilec_exp2(s[nt * 4 + 2 * hh + 1] * sl2 - base);
    red[nt % 4] += s[nt * 4 + 2 * hh] + s[nt * 4 + 2 * hh + 1];
  }
  return (red[0] + red[1]) + (red[2] + red[3]);
}

// Online softmax of one tile (base 2, scale folded into one FFMA per score, lazy rescaling; see
// flash_fwd_sm80.cuh): s becomes P, corr the factor O must be scaled by; returns whether a
// reference max moved.
__device__ __forceinline__ bool softmax_step(float (&s)[BKV / 2], float (&m_run)[2], float (&l_run)[2],
                                             float (&corr)[2], float sl2) {
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
    l_run[hh] = l_run[hh] * corr[hh] + exp_row(s, hh, base, sl2);
  }
  return grew;
}

// The common case of softmax_step without its row maxima: exponentiate against the running max
// as it stands and accept the tile if no row's partial sum exceeds FAST_LIMIT, which bounds every
// P element by it (scores are not rescaled, so that bound is all the arithmetic needs: P fits fp16
// and bf16, O and l fit f32). The ~44 FMNMX and 2 shuffles per row and their latency before the
// first exponential go (bench/NOTES.md step 25: +10-13%). On rejection (a row's max jumped by at
// least log2(FAST_LIMIT / 40) ≈ 8.7 binary orders, rarer than softmax_step's own rescale at 8) s
// is garbage and the caller recomputes S. Needs every row of the warp to have a finite running max
// (not a row's first tile). TILEC_FAST_SOFTMAX=0 turns it off (for A/B measurements).
#ifdef TILEC_FAST_SOFTMAX
constexpr bool FAST_SOFTMAX = TILEC_FAST_SOFTMAX;
#else
constexpr bool FAST_SOFTMAX = true;
#endif
constexpr float FAST_LIMIT = 16384.f;
__device__ __forceinline__ bool softmax_fast(float (&s)[BKV / 2], const float (&m_run)[2], float (&l_run)[2],
                                             float sl2) {
  float part[2];
#pragma unroll
  for (int hh = 0; hh < 2; ++hh) {
    part[hh] = exp_row(s, hh, tilec_mul_rn(m_run[hh], sl2), sl2);
  }
  // NaN and +inf fail the comparison too.
  if (!__all_sync(0xffffffffu, part[0] <= FAST_LIMIT && part[1] <= FAST_LIMIT)) return false;
  l_run[0] += part[0];
  l_run[1] += part[1];
  return true;
}

__device__ __forceinline__ void rescale(float (&o)[D / 2], const float (&corr)[2]) {
#pragma unroll
  for (int dt = 0; dt < D / 8; ++dt) {
    o[dt * 4 + 0] *= corr[0];
    o[dt * 4 + 1] *= corr[0];
    o[dt * 4 + 2] *= corr[1];
    o[dt * 4 + 3] *= corr[1];
  }
}

}  // namespace tilec_h

extern "C" __global__ void __launch_bounds__(tilec_h::NTHR, 1)
    TILEC_KERNEL_NAME(const __grid_constant__ TilecParams p, const __grid_constant__ TilecTensorMaps tm) {
  using namespace tilec_h;
  extern __shared__ __align__(16) unsigned char smem[];  // aligned to 1024 below
  // mbarriers: Q, STAGES x full, STAGES x empty
  __shared__ __align__(8) u64 bars[1 + 2 * STAGES];

  const int tid = threadIdx.x;
  int qi, h;
  tilec_work_item(blockIdx.x, blockIdx.y, qi, h);
  const int b = blockIdx.z;
  const int qb = p.q_order ? p.q_order[qi] : qi;
  const int seq = p.seq_len;
  const int q0 = qb * BQ;

  const TilecPlanRow row(p.full_offsets, p.partial_offsets, qb);
  const int n_full = row.n_full, p_beg = row.p_beg, total = row.total;
  auto tile_of = [&](int j) { return row.tile(p.full_indices, p.partial_indices, j); };

  const u32 s_raw = tilec_smem_u32(smem);
  unsigned char* sbase = smem + ((1024u - (s_raw & 1023u)) & 1023u);
  const u32 sQ = tilec_smem_u32(sbase);
  const u32 sKV = sQ + BQ * D * 2;
  const u32 sCls = sKV + STAGES * STAGE_BYTES;  // STAGES x CLASS_BYTES, 16-byte aligned
  const u32 barQ = tilec_smem_u32(&bars[0]);
  const u32 barFull = barQ + 8, barEmpty = barQ + 8 * (1 + STAGES);

  if (tid == 0) {
    tilec_mbar_init(barQ, 1);  // the producer's expect_tx, then the bytes
    for (int s = 0; s < STAGES; ++s) {
      tilec_mbar_init(barFull + 8 * s, 1);
      tilec_mbar_init(barEmpty + 8 * s, 4 * NCWG);  // every consumer warp is done with the slot
    }
    tilec_mbar_init_fence();
  }
  __syncthreads();

  if (tid < 128) {
    // ------------------------------------------------------------------ producer
    tilec_setmaxnreg_dec<PRODUCER_REGS>();
    if (tid != 0) return;  // one thread drives the copy engine
    const int hkv = h / (p.num_heads / p.num_kv_heads);
    tilec_prefetch_tensormap(&tm.k);
    tilec_prefetch_tensormap(&tm.v);
    tilec_mbar_expect_tx(barQ, BQ * D * 2);
    tma_tile<BQ>(sQ, &tm.q, q0, h, b, barQ);
#pragma unroll 1
    for (int j = 0; j < total; ++j) {
      const int slot = j % STAGES;
      const u32 bar = barFull + 8 * slot, sK = sKV + slot * STAGE_BYTES;
      // Round r of a slot waits for the consumers' release of round r-1 (parity (r-1)&1); the
      // first round passes at once.
      tilec_mbar_wait(barEmpty + 8 * slot, ((j / STAGES) & 1) ^ 1);
      const bool classes = j >= n_full && p.partial_classes;
      tilec_mbar_expect_tx(bar, STAGE_BYTES + (classes ? CLASS_BYTES : 0));
      if (classes)
        tilec_bulk_load(sCls + slot * CLASS_BYTES, p.partial_classes + (p_beg + j - n_full) * (CLASS_BYTES / 4),
                        CLASS_BYTES, bar);
      const int k0 = tile_of(j) * BKV;
      tma_tile<BKV>(sK, &tm.k, k0, hkv, b, bar);
      tma_tile<BKV>(sK + TILE_KV_BYTES, &tm.v, k0, hkv, b, bar);
    }
    return;
  }

  // -------------------------------------------------------------------- consumers
  tilec_setmaxnreg_inc<CONSUMER_REGS>();
  const int wg = (tid >> 7) - 1;  // consumer warpgroup: query rows wg*64 .. wg*64+63
  const int ctid = tid & 127;
  const int warp = ctid >> 5, lane = tid & 31;
  const int row0 = wg * 64 + warp * 16 + (lane >> 2);  // this thread's rows: row0 and row0 + 8
  const float sl2 = p.scale_log2;

  float o[D / 2];
#pragma unroll
  for (int i = 0; i < D / 2; ++i) o[i] = 0.f;
  float m_run[2] = {TILEC_NEG_INF, TILEC_NEG_INF};
  float l_run[2] = {0.f, 0.f};
  float s[BKV / 2];
  u32 pa[BKV / 16][4];  // P of the previous tile, the A operand of its P V

  // Q (A, K-major): this warpgroup's 64 rows.
  const u64 dQ = tilec_gmma_desc(sQ + wg * 64 * SW, 16, 8 * SW, SWMODE);
  tilec_mbar_wait(barQ, 0);

  // Software pipeline over the tile sequence (full list, then partial list): iteration j issues
  // S_j = Q K_j^T and O += P_{j-1} V_{j-1} back to back, then runs the mask and softmax of S_j
  // on the CUDA cores while the tensor cores finish P_{j-1} V_{j-1}. A slot (K_j and V_j) is
  // released once its P V has completed, one iteration later, so STAGES >= 3 keeps the producer
  // a full tile ahead. The first S and the last P V are peeled off so that the steady-state body
  // is branch-free between wgmma issue and wait (ptxas serializes wgmma otherwise).
  // Mask + softmax of S_j (issued, maybe in flight); waits for all but `pending` wgmma groups.
  // The element mask of a partial tile is evaluated before its wgmmas are issued: then S is not
  // yet live (P of the previous tile and O are), and the mask arithmetic fits beside them.
  auto scores_to_p = [&](int j, int kb, bool pv_in_flight, const u32(&keep)[MASK_WORDS],
                         const u32(&cls)[CLASS_WORDS], bool elementwise, u32 sK) {
    const int k0 = kb * BKV;
    const bool partial = j >= n_full;
    if (pv_in_flight)
      tilec_wgmma_wait<1>();
    else
      tilec_wgmma_wait<0>();
    tilec_reg_fence(s);
    auto mask_scores = [&]() {
      if (partial && elementwise)
        apply_mask(s, keep);
      else if (partial)
        apply_classes(s, cls);
      else if (k0 + BKV > seq)
        mask_tail(s, k0, seq, lane & 3);
    };
    mask_scores();
    float corr[2] = {1.f, 1.f};
    bool grew = false, done = false;
    if (FAST_SOFTMAX && pv_in_flight &&
        __all_sync(0xffffffffu, m_run[0] != TILEC_NEG_INF && m_run[1] != TILEC_NEG_INF)) {
      done = softmax_fast(s, m_run, l_run, sl2);
      if (!done) {
        // Rare: this warp's rows of S_j again (K_j stays resident until P_j V_j has completed),
        // then the full step. P_{j-1} V_{j-1} completes first: its P registers are then free.
        tilec_wgmma_wait<0>();
        recompute_s_warp(s, sQ, sK);
        mask_scores();
      }
    }
    if (!done) grew = softmax_step(s, m_run, l_run, corr, sl2);
    if (pv_in_flight) {
      tilec_wgmma_wait<0>();
      tilec_reg_fence(o);
      if (lane == 0) tilec_mbar_arrive(barEmpty + 8 * ((j + STAGES - 1) % STAGES));
      if (__any_sync(0xffffffffu, grew)) rescale(o, corr);
    }
#pragma unroll
    for (int kk = 0; kk < BKV / 16; ++kk) {
      pa[kk][0] = TILEC_PACK(s[(2 * kk) * 4 + 0], s[(2 * kk) * 4 + 1]);
      pa[kk][1] = TILEC_PACK(s[(2 * kk) * 4 + 2], s[(2 * kk) * 4 + 3]);
      pa[kk][2] = TILEC_PACK(s[(2 * kk + 1) * 4 + 0], s[(2 * kk + 1) * 4 + 1]);
      pa[kk][3] = TILEC_PACK(s[(2 * kk + 1) * 4 + 2], s[(2 * kk + 1) * 4 + 3]);
    }
  };
  // Ping-pong between the two consumer warpgroups (FlashAttention-3): a warpgroup issues its
  // wgmmas only on its turn and hands the turn over right after issuing, so the tensor cores run
  // one warpgroup's products while the other does its softmax. Named barriers 3 and 4: a turn
  // completes when the waiting warpgroup syncs and the other one has arrived. Each warpgroup
  // takes total + 1 turns (first S, total - 1 steady-state steps, last P V); the second one
  // opens the first turn and skips its last hand-over, so no arrival is left dangling.
  const bool last_turn_skips = wg == NCWG - 1;
  auto turn_begin = [&]() {
    if (PINGPONG) tilec_named_barrier(3 + wg, 256);
  };
  auto turn_end = [&](bool last) {
    if (PINGPONG && !(last && last_turn_skips)) tilec_named_barrier_arrive(3 + (wg ^ 1), 256);
  };
  if (PINGPONG && wg == 1 && total > 0) tilec_named_barrier_arrive(3, 256);
  // The element mask of a partial tile, or its sub-tile classes when they decide every element.
  const int stripe = wg * 4 + warp;
  auto prepare_partial = [&](int j, int kb, int slot, u32(&keep)[MASK_WORDS], u32(&cls)[CLASS_WORDS]) -> bool {
    if (j < n_full) return false;
    load_classes(cls, p.partial_classes != nullptr, (const u32*)(sbase + (sCls - sQ) + slot * CLASS_BYTES), stripe);
    const bool elementwise = any_partial_subtile(cls);
    if (elementwise) mask_bits(keep, q0 + row0, kb * BKV, seq, lane & 3);
    return elementwise;
  };
  if (total > 0) {
    const int kb = tile_of(0);
    u32 keep[MASK_WORDS], cls[CLASS_WORDS];
    tilec_mbar_wait(barFull, 0);
    const bool elementwise = prepare_partial(0, kb, 0, keep, cls);
    turn_begin();
    tilec_wgmma_fence();
    issue_s(s, dQ, sKV);
    tilec_wgmma_commit();
    turn_end(false);
    scores_to_p(0, kb, false, keep, cls, elementwise, sKV);
  }
#pragma unroll 1
  for (int j = 1; j < total; ++j) {
    const int kb = tile_of(j);
    const int slot = j % STAGES, prev = (j + STAGES - 1) % STAGES;
    u32 keep[MASK_WORDS], cls[CLASS_WORDS];
    tilec_mbar_wait(barFull + 8 * slot, (j / STAGES) & 1);
    const bool elementwise = prepare_partial(j, kb, slot, keep, cls);
    tilec_reg_fence(o);
    turn_begin();
    tilec_wgmma_fence();
    issue_s(s, dQ, sKV + slot * STAGE_BYTES);
    tilec_wgmma_commit();
    issue_pv(o, pa, sKV + prev * STAGE_BYTES + TILE_KV_BYTES);
    tilec_wgmma_commit();
    turn_end(false);
    scores_to_p(j, kb, true, keep, cls, elementwise, sKV + slot * STAGE_BYTES);
  }
  if (total > 0) {
    tilec_reg_fence(o);
    turn_begin();
    tilec_wgmma_fence();
    issue_pv(o, pa, sKV + ((total - 1) % STAGES) * STAGE_BYTES + TILE_KV_BYTES);
    tilec_wgmma_commit();
    turn_end(true);
    tilec_wgmma_wait<0>();
    tilec_reg_fence(o);
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
    const int r = row0 + hh * 8, t = lane & 3;
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
#undef TILEC_MMA
#endif  // TILEC_FLASH_FWD_SM90_CUH
