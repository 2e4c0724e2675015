// tilec CUDA template: shared PTX helpers (ptx.cuh)
//
// Concatenation order of the generated .cu file (done by the TS backend):
//   1. generated prelude   (#define TILEC_*  +  __device__ bool tilec_mask(int q, int k))
//   2. ptx.cuh             (this file: typedefs, inline-PTX wrappers)
//   3. flash_fwd_sm80.cuh  (bf16/fp16, TILEC_DTYPE_BF16 / TILEC_DTYPE_FP16)
//      or flash_fwd_f32.cuh (fp32 SIMT, TILEC_DTYPE_FP32)
//
// No #include anywhere: the text must compile under nvcc and NVRTC without
// include paths, so every conversion / tensor-core / async-copy operation is
// spelled as inline PTX and only builtins (threadIdx, __syncthreads,
// __shfl_xor_sync, __int_as_float) are used. Requires sm_80 or newer.
#ifndef TILEC_PTX_CUH
#define TILEC_PTX_CUH

typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned long long u64;

#define TILEC_NEG_INF (__int_as_float(0xff800000))

// ---------------------------------------------------------------- kernel ABI
// The parameter struct (TilecParams for the forward, TilecBwdParams for the backward) is rendered
// into the generated source before this file, from backends/cuda/params.ts: the same table every
// launcher packs it with. Requirements: base pointers 16-byte aligned and batch/seq/head strides
// multiples of 16 bytes' worth of elements (16-byte copies and stores); num_heads % num_kv_heads == 0
// (GQA: kv head = head / (num_heads/num_kv_heads)); scale_log2 = softmax scale * log2(e) > 0.

// ---------------------------------------------------------------- sub-tile classes
// Decoding of TilecParams.partial_classes (compiler/subPlan.ts): 2 bits per 16-row x 8-key sub-tile
// of a partial block, EMPTY 00, PARTIAL 01, FULL 10, 16 n-tiles per word. One definition for every
// template, so the encoding lives in one place on each side of the ABI.
constexpr int tilec_class_words(int block_kv) { return (block_kv / 8 + 15) / 16; }
// Word w of stripe `stripe` of partial-list entry `entry`; without classes every sub-tile is PARTIAL.
__device__ __forceinline__ u32 tilec_class_word(const unsigned* classes, int entry, int stripes, int stripe,
                                                int words, int w) {
  return classes ? __ldg(classes + (entry * stripes + stripe) * words + w) : 0x55555555u;
}
// Nonzero when the word holds a PARTIAL sub-tile (the element mask must run).
__device__ __forceinline__ u32 tilec_class_partial_bits(u32 word) { return word & ~(word >> 1) & 0x55555555u; }
// Whether n-tile nt (of the block) is FULL; `cls` holds the stripe's words.
__device__ __forceinline__ bool tilec_class_full(const u32* cls, int nt) {
  return (cls[nt / 16] >> (2 * (nt % 16) + 1)) & 1u;
}

// ---------------------------------------------------------------- plan walk
// One row of a plan's CSR lists — a query block's (full/partial lists) or a key block's (the transposed
// fullT/partialT lists) — walked as one sequence of `total` steps: its full tiles, then its partial
// ones. Every template walks its plan through this. The list pointers are passed at each use, from
// the kernel parameters, rather than held: two 64-bit pointers kept in registers for a whole main
// loop cost spills beside the big accumulators.
struct TilecPlanRow {
  int f_beg, n_full, p_beg, total;
  __device__ __forceinline__ TilecPlanRow(const int* full_offsets, const int* partial_offsets, int row) {
    f_beg = full_offsets[row];
    n_full = full_offsets[row + 1] - f_beg;
    p_beg = partial_offsets[row];
    total = n_full + (partial_offsets[row + 1] - p_beg);
  }
  __device__ __forceinline__ bool partial(int j) const { return j >= n_full; }
  // Position of partial step j in the partial list: where its sub-tile classes are.
  __device__ __forceinline__ int entry(int j) const { return p_beg + j - n_full; }
  // The tile (block index on the other side) of step j < total.
  __device__ __forceinline__ int tile(const int* full_indices, const int* partial_indices, int j) const {
    return j < n_full ? full_indices[f_beg + j] : partial_indices[p_beg + j - n_full];
  }
  // The same, 0 for steps past the end (prefetches that may run past it).
  __device__ __forceinline__ int tile_or_0(const int* full_indices, const int* partial_indices, int j) const {
    return j < n_full ? full_indices[f_beg + j] : (j < total ? partial_indices[p_beg + j - n_full] : 0);
  }
};

// ---------------------------------------------------------------- work order
// The (q_order position, head) a thread block computes. Blocks are dispatched in linear order, x
// fastest. q_order lists query blocks heaviest first, and its first TILEC_HEAVY_ROWS positions are
// blocks with far more work than the average (rows of global frames, which attend to every frame):
// those run first for every head, head after head, then the light ones, head after head. With the
// plain (x = position, y = head) order the heavy blocks of the last head would start in the grid's
// last wave and run alone at its end; head-major inside each phase keeps one head's K/V in L2.
// NQ rows (query blocks, or key blocks for a key-major pass) of which the first HEAVY are heavy; both
// constants of the generated source, so every division here is by a constant: a multiply-high, no
// registers held into the main loop. Every launcher takes grid.x from the launch description, which
// is this same NQ.
template <int NQ, int HEAVY>
__device__ __forceinline__ void tilec_work_item_of(int bx, int by, int& pos, int& h) {
  if constexpr (HEAVY <= 0) {
    pos = bx;
    h = by;
  } else {
    constexpr int LIGHT = NQ - HEAVY;
    static_assert(HEAVY < NQ, "heavy rows are a strict subset of the rows");
    const int lin = bx + by * NQ, heavy_items = HEAVY * (int)gridDim.y;
    if (lin < heavy_items) {
      h = lin / HEAVY;
      pos = lin - h * HEAVY;
    } else {
      const int r = lin - heavy_items;
      h = r / LIGHT;
      pos = HEAVY + (r - h * LIGHT);
    }
  }
}
#if defined(TILEC_NUM_Q_BLOCKS)
#ifndef TILEC_HEAVY_ROWS
#define TILEC_HEAVY_ROWS 0
#endif
// The forward's work item: its query blocks.
__device__ __forceinline__ void tilec_work_item(int bx, int by, int& pos, int& h) {
  tilec_work_item_of<TILEC_NUM_Q_BLOCKS, TILEC_HEAVY_ROWS>(bx, by, pos, h);
}
#endif

// Returns x unchanged, but the compiler must assume it changed: recomputing a
// cheap value inside a loop beats holding it in a register across the loop.
__device__ __forceinline__ int tilec_opaque(int x) {
  asm volatile("" : "+r"(x));
  return x;
}
#define TILEC_LN2 0.69314718055994530942f

// ---------------------------------------------------------------- addresses
// 32-bit shared-state-space address of a generic pointer into __shared__.
__device__ __forceinline__ u32 tilec_smem_u32(const void* p) {
  u32 r;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(r) : "l"(p));
  return r;
}

// ---------------------------------------------------------------- cp.async
// 16-byte global->shared copy that bypasses L1 (.cg). src_bytes is 16 or 0;
// with 0 nothing is read and the 16 destination bytes are zero-filled, which is
// how out-of-range rows (>= seq_len) become zeros without an out-of-bounds read.
__device__ __forceinline__ void tilec_cp_async16(u32 smem, const void* gmem, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem), "l"(gmem), "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void tilec_cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Wait until at most N committed groups are still in flight (this thread only).
template <int N>
__device__ __forceinline__ void tilec_cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// ---------------------------------------------------------------- ldmatrix
// Four 8x8 b16 matrices; lane l supplies the row address of matrix l/8, row l%8.
__device__ __forceinline__ void tilec_ldsm_x4(u32& r0, u32& r1, u32& r2, u32& r3, u32 addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}
// Transposed variant: used for V, which is stored [key][dim] but consumed as
// the k-major ("col") B operand of P.V.
__device__ __forceinline__ void tilec_ldsm_x4_t(u32& r0, u32& r1, u32& r2, u32& r3, u32 addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}

// ---------------------------------------------------------------- mma.sync
// D(16x8 f32) += A(16x16, row) * B(16x8, col). Fragment layout (g = lane/4, t = lane%4):
//   a0:(g, 2t..2t+1) a1:(g+8, 2t..) a2:(g, 2t+8..) a3:(g+8, 2t+8..)
//   b0:(k=2t..2t+1, n=g) b1:(k=2t+8.., n=g)
//   c0,c1:(g, 2t..2t+1)  c2,c3:(g+8, 2t..2t+1)
__device__ __forceinline__ void tilec_mma_bf16(float* c, const u32* a, u32 b0, u32 b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void tilec_mma_f16(float* c, const u32* a, u32 b0, u32 b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// ---------------------------------------------------------------- conversions
// Pack two floats, lo -> bits 0..15, hi -> bits 16..31 (PTX puts operand a in the
// upper half, hence the swapped order), round to nearest even.
__device__ __forceinline__ u32 tilec_pack_bf16(float lo, float hi) {
  u32 r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
__device__ __forceinline__ u32 tilec_pack_f16(float lo, float hi) {
  u32 r;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

// Two 16-bit floats (lo = bits 0..15) as two floats.
__device__ __forceinline__ void tilec_unpack_bf16(u32 w, float& lo, float& hi) {
  lo = __int_as_float((int)(w << 16));
  hi = __int_as_float((int)(w & 0xffff0000u));
}
__device__ __forceinline__ void tilec_unpack_f16(u32 w, float& lo, float& hi) {
  asm("{\n .reg .f16 l, h;\n mov.b32 {l, h}, %2;\n cvt.f32.f16 %0, l;\n cvt.f32.f16 %1, h;\n}\n"
      : "=f"(lo), "=f"(hi)
      : "r"(w));
}

// ---------------------------------------------------------------- reductions into global memory
// Fire-and-forget fp32 adds (no return value: RED, not ATOM). The order in which blocks add is not
// fixed, so sums built this way round differently run to run.
__device__ __forceinline__ void tilec_red_add(float* p, float a) {
  asm volatile("red.global.add.f32 [%0], %1;\n" ::"l"(p), "f"(a) : "memory");
}
// Two adjacent floats (8-byte aligned): one vector reduction on sm_90, two scalar ones before it.
__device__ __forceinline__ void tilec_red_add2(float* p, float a, float b) {
#if __CUDA_ARCH__ >= 900
  asm volatile("red.global.add.v2.f32 [%0], {%1, %2};\n" ::"l"(p), "f"(a), "f"(b) : "memory");
#else
  tilec_red_add(p, a);
  tilec_red_add(p + 1, b);
#endif
}

// ---------------------------------------------------------------- math
// 2^x (MUFU.EX2); ex2(-inf) = +0, which the online softmax relies on.
__device__ __forceinline__ float tilec_exp2(float x) {
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(r) : "f"(x));
  return r;
}
__device__ __forceinline__ float tilec_log2(float x) {
  float r;
  asm("lg2.approx.ftz.f32 %0, %1;\n" : "=f"(r) : "f"(x));
  return r;
}
// a*b rounded to nearest, never contracted into an FMA (so a value recomputed
// later rounds exactly the same way).
__device__ __forceinline__ float tilec_mul_rn(float a, float b) {
  float r;
  asm("mul.rn.f32 %0, %1, %2;\n" : "=f"(r) : "f"(a), "f"(b));
  return r;
}
__device__ __forceinline__ float tilec_fmax(float a, float b) {
  float r;
  asm("max.f32 %0, %1, %2;\n" : "=f"(r) : "f"(a), "f"(b));
  return r;
}
__device__ __forceinline__ float tilec_rcp(float x) {
  float r;
  asm("rcp.rn.f32 %0, %1;\n" : "=f"(r) : "f"(x));
  return r;
}

#endif  // TILEC_PTX_CUH
