// Hand-written stand-in for the prelude the TS compiler generates (test only).
// Tile configuration comes from -D flags (defaults below); the mask is the
// Efficient-vDiT "2:6" pattern with run-time knobs in __constant__ memory so one
// binary can test several sequence lengths and mask variants:
//   8 frames of frame_tokens tokens (frame(t) = t / frame_tokens), global frames {0, 4}
//   mode 0: dense (allow everything)
//   mode 1: 2:6   allowed(q,k) = frame(q)==frame(k) || frame(q) in G || frame(k) in G
//   mode 2: 2:6, but queries in frame 3 see nothing (fully masked rows)
// The generated prelude bakes frame_tokens in as a constant; here it is a
// run-time value (a multiply-shift per token instead of a constant division).
#ifndef TILEC_HEAD_DIM
#define TILEC_HEAD_DIM 96
#endif
#ifndef TILEC_BLOCK_Q
#define TILEC_BLOCK_Q 128
#endif
#ifndef TILEC_BLOCK_KV
#define TILEC_BLOCK_KV 64
#endif
#ifndef TILEC_NUM_WARPS
#define TILEC_NUM_WARPS 4
#endif
#ifndef TILEC_STAGES
#define TILEC_STAGES 2
#endif
#if !defined(TILEC_DTYPE_BF16) && !defined(TILEC_DTYPE_FP16) && !defined(TILEC_DTYPE_FP32)
#define TILEC_DTYPE_BF16 1
#endif
#define TILEC_KERNEL_NAME tilec_attn_test

__constant__ unsigned long long tilec_test_magic;  // ceil(2^40 / frame_tokens)
__constant__ unsigned tilec_test_rows[8];          // bit fk of row fq: frame fq may see frame fk

// frame(t) = t / frame_tokens via a 64-bit multiply by ceil(2^40 / frame_tokens):
// exact while t < 2^40 / frame_tokens (here t < 2^20, frame_tokens < 2^16).
__host__ __device__ __forceinline__ unsigned long long tilec_test_magic_for(int frame_tokens) {
  return ((1ull << 40) + (unsigned long long)frame_tokens - 1) / (unsigned long long)frame_tokens;
}
__host__ __device__ __forceinline__ unsigned tilec_test_frame(int t, unsigned long long magic) {
  return (unsigned)(((unsigned long long)t * magic) >> 40) & 7u;
}
// 8x8 frame-pair table for a mode (global frames {0, 4} = bit mask 0x11).
__host__ __device__ __forceinline__ unsigned tilec_test_row_bits(int mode, unsigned fq) {
  if (mode == 0) return 0xffu;
  if (mode == 2 && fq == 3) return 0u;
  return ((0x11u >> fq) & 1u) ? 0xffu : ((1u << fq) | 0x11u);
}

// Host side (planner and reference).
__host__ __device__ __forceinline__ bool tilec_test_allowed(int q, int k, int mode, unsigned long long magic) {
  return (tilec_test_row_bits(mode, tilec_test_frame(q, magic)) >> tilec_test_frame(k, magic)) & 1u;
}

// Device side: the same function as a table lookup per row and a shift per
// element, branch-free like a generated mask.
__device__ __forceinline__ bool tilec_mask(int q, int k) {
  return (tilec_test_rows[tilec_test_frame(q, tilec_test_magic)] >> tilec_test_frame(k, tilec_test_magic)) & 1u;
}
