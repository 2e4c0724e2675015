// tilec CUDA template: Hopper (sm_90a) PTX helpers (ptx_sm90.cuh)
//
// Concatenated after ptx.cuh and before flash_fwd_sm90.cuh, with the generated wgmma wrappers
// (backends/cuda/wgmma.ts) in between. Like ptx.cuh: inline PTX only, no #include. wgmma and
// setmaxnreg need the architecture-specific target (nvcc -gencode=arch=compute_90a,code=sm_90a,
// NVRTC -arch=sm_90a).
#ifndef TILEC_PTX_SM90_CUH
#define TILEC_PTX_SM90_CUH

// ---------------------------------------------------------------- mbarrier
__device__ __forceinline__ void tilec_mbar_init(u32 bar, u32 count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
// Makes the initialised barriers visible to every thread (and to the async proxy) before use.
__device__ __forceinline__ void tilec_mbar_init_fence() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
// Blocks until the phase with parity `parity` has completed. A fresh barrier is in phase 0, so
// waiting on parity 1 returns at once (the "previous" phase counts as complete).
__device__ __forceinline__ void tilec_mbar_wait(u32 bar, u32 parity) {
  u32 done;
  do {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
}
__device__ __forceinline__ void tilec_mbar_arrive(u32 bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
// Barrier over `count` threads (a multiple of 32) on hardware barrier `id` (0 is __syncthreads).
__device__ __forceinline__ void tilec_named_barrier(u32 id, u32 count) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}

// Arrives on barrier `id` without waiting (the producer side of a bar.sync of `count` threads).
__device__ __forceinline__ void tilec_named_barrier_arrive(u32 id, u32 count) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}

// Adds `bytes` to the transaction count the barrier's current phase waits for and arrives once: the
// phase completes when every arrival is in and the copy engine has delivered all those bytes.
__device__ __forceinline__ void tilec_mbar_expect_tx(u32 bar, u32 bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}

// ---------------------------------------------------------------- TMA (tensor memory accelerator)
// A plain bulk copy of `bytes` (a multiple of 16, both addresses 16-byte aligned) from global to
// shared memory, completing as transaction bytes on `bar`.
__device__ __forceinline__ void tilec_bulk_load(u32 sdst, const void* src, u32 bytes, u32 bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(sdst),
               "l"(src), "r"(bytes), "r"(bar)
               : "memory");
}
// A CUtensorMap: the driver's opaque 128-byte tensor descriptor (cuda.h is not included), encoded on
// the host by cuTensorMapEncodeTiled (backends/cuda/tma.ts says with which arguments) and passed in a
// __grid_constant__ kernel parameter, so its address is a parameter-space address the copy engine reads.
struct alignas(64) TilecTensorMap {
  u64 opaque[16];
};
// Kernel ABI, second parameter of sm_90a kernels: a struct of such maps (TilecTensorMaps, rendered by
// backends/cuda/tma.ts from the kernel's map list, each 4-D over (head dim, sequence, heads, batch) of
// its tensor with the template's shared-memory swizzle; rows past the sequence are zero-filled).

__device__ __forceinline__ void tilec_prefetch_tensormap(const TilecTensorMap* map) {
  asm volatile("prefetch.tensormap [%0];\n" ::"l"((u64)map) : "memory");
}
// One box of `map` at coordinates (c0, c1, c2, c3) into shared memory at `sdst`; completes as
// transaction bytes on mbarrier `bar`.
__device__ __forceinline__ void tilec_tma_load_4d(u32 sdst, const TilecTensorMap* map, int c0, int c1, int c2, int c3,
                                                  u32 bar) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, %5}], [%6];\n" ::"r"(
          sdst),
      "l"((u64)map), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(bar)
      : "memory");
}

// ---------------------------------------------------------------- swizzled tiles
// wgmma's canonical swizzled layout, which is also what TMA writes with the matching swizzle mode: a
// tile of ROWS rows is stored as column blocks of SWB bytes a row (SWB = 32, 64 or 128), each block
// ROWS x SWB bytes with its 16-byte chunks XOR-ed by address bits 7.. (Swizzle<1|2|3, 4, 3>). Every
// sm_90a template addresses its tiles through these two helpers.
// Byte offset of 16-byte chunk c of row r.
template <int ROWS, int SWB>
__device__ __forceinline__ u32 tilec_swz_off(int r, int c) {
  constexpr int CPA = SWB / 16;  // chunks per column-block row
  return (u32)((c / CPA) * ROWS * SWB + r * SWB + (((c % CPA) ^ ((r * SWB >> 7) & (CPA - 1))) << 4));
}
// A ROWS x COLS tile by the copy engine: one box (SWB/2 elements, ROWS rows) per column block of head
// `head`, batch `batch`, from sequence row `row`; completes as transaction bytes on mbarrier `bar`.
template <int ROWS, int SWB, int COLS>
__device__ __forceinline__ void tilec_tma_tile(u32 sdst, const TilecTensorMap* map, int row, int head, int batch,
                                               u32 bar) {
#pragma unroll
  for (int cb = 0; cb < COLS / (SWB / 2); ++cb)
    tilec_tma_load_4d(sdst + cb * ROWS * SWB, map, cb * (SWB / 2), row, head, batch, bar);
}

// ---------------------------------------------------------------- registers
template <int N>
__device__ __forceinline__ void tilec_setmaxnreg_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
}
template <int N>
__device__ __forceinline__ void tilec_setmaxnreg_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
}
// Pins accumulator registers at this point of the program: the compiler may not move reads or
// writes of x across it, so nothing touches a wgmma accumulator between issue and wait.
template <int N>
__device__ __forceinline__ void tilec_reg_fence(float (&x)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(x[i])::"memory");
}

// ---------------------------------------------------------------- wgmma
__device__ __forceinline__ void tilec_wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void tilec_wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void tilec_wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Shared-memory matrix descriptor: start address, leading and stride byte offsets (>> 4), swizzle
// mode in bits 62-63 (1: 128-byte, 2: 64-byte). Every swizzle atom starts aligned (1024 / 512
// bytes), so the base offset field stays 0.
__device__ __forceinline__ u64 tilec_gmma_desc(u32 saddr, u32 lbo, u32 sbo, u32 mode) {
  return (u64)((saddr & 0x3FFFFu) >> 4) | ((u64)(lbo >> 4) << 16) | ((u64)(sbo >> 4) << 32) | ((u64)mode << 62);
}

#endif  // TILEC_PTX_SM90_CUH
