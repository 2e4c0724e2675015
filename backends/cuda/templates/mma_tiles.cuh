// tilec CUDA template: swizzled shared-memory tiles for mma.sync kernels (mma_tiles.cuh)
//
// Tiles of CPR 16-byte chunks per row, no padding, chunk index XOR-ed with a few row bits so that an
// 8x8 ldmatrix phase (one chunk column of 8 consecutive rows) hits 8 distinct bank groups:
//   CPR % 8 == 0 (d = 64, 128, ...): chunk ^ (row & 7)
//   CPR % 8 == 4 (d = 32, 96, ...):  rows alternate bank halves, chunk ^ ((row >> 1) & 3)
//   CPR % 4 == 2 (d = 16, 48, ...):  4 rows cover all 8 groups, chunk ^ ((row >> 2) & 1)
// The same layout as flash_fwd_sm80.cuh's (which predates this file); the backward templates read Q,
// dO, K, V and the dSᵀ tile through these helpers.
#ifndef TILEC_MMA_TILES_CUH
#define TILEC_MMA_TILES_CUH

namespace tilec_tiles {

template <int CPR>
__device__ __forceinline__ int swz_bits(int row) {
  return (CPR % 8 == 0) ? (row & 7) : (CPR % 4 == 0) ? ((row >> 1) & 3) : ((row >> 2) & 1);
}
// Byte offset of chunk `chunk` of row `row`.
template <int CPR>
__device__ __forceinline__ u32 swz(int row, int chunk) {
  return (u32)((row * CPR + (chunk ^ swz_bits<CPR>(row))) * 16);
}
// Width in chunks of the XOR's reach (it touches the low log2(SWW) bits of the chunk index).
template <int CPR>
__host__ __device__ constexpr int sww() {
  return (CPR % 8 == 0) ? 8 : (CPR % 4 == 0) ? 4 : 2;
}

// ldmatrix addressing with one register per operand: row `row`'s chunk 2*kk + cb sits at
// ((tile + lane_off(row, cb, xs)) ^ ((2*(kk % NPAT)) << 4)) + (kk / NPAT)*SWW*16 when rows start at
// multiples of 8 and tiles at multiples of SWW*16 bytes (xs = swz_bits(row), the same for rows ≡ mod 8).
template <int CPR>
__device__ __forceinline__ u32 lane_off(int row, int cb, int xs) {
  return (u32)(row * CPR * 16 + ((cb ^ xs) << 4));
}
template <int CPR>
__device__ __forceinline__ u32 kstep_addr(u32 base_plus_off, int kk) {
  constexpr int SWW = sww<CPR>(), NPAT = SWW / 2;
  return (base_plus_off ^ (u32)((2 * (kk % NPAT)) << 4)) + (u32)((kk / NPAT) * SWW * 16);
}

// Per-lane row/chunk selectors of the four x4 ldmatrix patterns (lane l addresses row l % 8 of 8x8
// matrix l / 8; rows are relative to the 16 rows / columns the operand covers):
//   A (row-major [m][k]):          matrices (m 0-7 | 8-15) x (k 0-7 | 8-15)   -> a0 a1 a2 a3
//   B ([n][k] rows, non-trans):    n 0-7 {k 0-7, 8-15}, n 8-15 {..}          -> b0 b1 of two n-tiles
//   B ([k][n] rows, .trans):       n 0-7 {k 0-7, 8-15}, n 8-15 {..}          -> b0 b1 of two n-tiles
//   A ([k][m] rows, .trans):       (m 0-7 | 8-15) x (k 0-7 | 8-15)           -> a0 a1 a2 a3
__device__ __forceinline__ int a_row(int lane) { return lane & 15; }
__device__ __forceinline__ int a_chunk(int lane) { return lane >> 4; }
__device__ __forceinline__ int b_row(int lane) { return (lane & 7) + ((lane >> 4) << 3); }
__device__ __forceinline__ int b_chunk(int lane) { return (lane >> 3) & 1; }
__device__ __forceinline__ int bt_row(int lane) { return (lane & 7) + (((lane >> 3) & 1) << 3); }
__device__ __forceinline__ int bt_chunk(int lane) { return lane >> 4; }
__device__ __forceinline__ int at_row(int lane) { return (lane & 7) + ((lane >> 4) << 3); }
__device__ __forceinline__ int at_chunk(int lane) { return (lane >> 3) & 1; }

// Copies a ROWS x (CPR*8) tile (row stride `stride` elements, `g` = row 0) into the swizzled layout
// with cp.async; rows >= rows_valid are zero-filled (nothing read). SWW threads cover SWW chunks of a
// row, so a pass loads NTHR/SWW rows, a multiple of 8: every row a thread touches has the same
// swizzle bits, and all its shared offsets are one register plus immediates.
template <int ROWS, int CPR, int NTHR>
__device__ __forceinline__ void load_tile(u32 sdst, const u16* g, long long stride, int rows_valid, int tid) {
  constexpr int SWW = sww<CPR>(), RPP = NTHR / SWW;
  static_assert(RPP % 8 == 0 && CPR % SWW == 0, "tile copy: need at least 2 warps");
  const int r0 = tid / SWW, c0 = tid % SWW;
  const u32 s0 = sdst + (u32)((r0 * CPR + (c0 ^ swz_bits<CPR>(r0))) * 16);
  const u16* g0 = g + r0 * stride + c0 * 8;
#pragma unroll
  for (int rp = 0; rp < (ROWS + RPP - 1) / RPP; ++rp) {
    const int r = r0 + rp * RPP;
    if (ROWS % RPP == 0 || r < ROWS) {
      const bool ok = r < rows_valid;
      const u16* src = ok ? g0 + rp * RPP * stride : g;
#pragma unroll
      for (int cp = 0; cp < CPR / SWW; ++cp)
        tilec_cp_async16(s0 + (u32)((rp * RPP * CPR + cp * SWW) * 16), src + cp * SWW * 8, ok ? 16 : 0);
    }
  }
}

}  // namespace tilec_tiles

#endif  // TILEC_MMA_TILES_CUH
