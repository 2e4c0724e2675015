// Σ(a − b)² and Σb² over two device tensors, on the GPU: the search compares every candidate's attention
// output with dense attention's, and at Open-Sora-Plan shapes each output has 66 M elements — downloading
// them for a host-side sum would cost more than the attention itself. Sums are in double; a NaN anywhere
// makes the result NaN (an unwritten output never passes).
import type { Dtype } from "../compiler/layout.ts";
import { CudaDevice, type CudaKernel, type DeviceBuffer } from "../runtime/cuda/device.ts";
import { compileNvrtcCachedAsync } from "../runtime/cuda/nvrtcCache.ts";

const SOURCE = String.raw`
// Element loads as float: bf16 is the high half of a float; fp16 converts with PTX cvt (no headers).
__device__ __forceinline__ float load_bf16(const unsigned short* p, long long i) { return __uint_as_float(((unsigned)p[i]) << 16); }
__device__ __forceinline__ float load_fp16(const unsigned short* p, long long i) {
  float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(p[i])); return f;
}
__device__ __forceinline__ float load_fp32(const float* p, long long i) { return p[i]; }

template <typename T, float (*Load)(const T*, long long)>
__device__ void sq_diff(const T* a, const T* b, long long n, double* out) {
  double d = 0.0, r = 0.0;
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    const double x = Load(a, i), y = Load(b, i), e = x - y;
    d += e * e;
    r += y * y;
  }
  for (int o = 16; o > 0; o >>= 1) {
    d += __shfl_down_sync(0xffffffffu, d, o);
    r += __shfl_down_sync(0xffffffffu, r, o);
  }
  __shared__ double sd[32], sr[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) { sd[warp] = d; sr[warp] = r; }
  __syncthreads();
  if (warp == 0) {
    const int warps = (blockDim.x + 31) >> 5;
    d = lane < warps ? sd[lane] : 0.0;
    r = lane < warps ? sr[lane] : 0.0;
    for (int o = 16; o > 0; o >>= 1) {
      d += __shfl_down_sync(0xffffffffu, d, o);
      r += __shfl_down_sync(0xffffffffu, r, o);
    }
    if (lane == 0) { atomicAdd(out, d); atomicAdd(out + 1, r); }
  }
}

extern "C" __global__ void tilec_sq_diff_bf16(const unsigned short* a, const unsigned short* b, long long n, double* out) { sq_diff<unsigned short, load_bf16>(a, b, n, out); }
extern "C" __global__ void tilec_sq_diff_fp16(const unsigned short* a, const unsigned short* b, long long n, double* out) { sq_diff<unsigned short, load_fp16>(a, b, n, out); }
extern "C" __global__ void tilec_sq_diff_fp32(const float* a, const float* b, long long n, double* out) { sq_diff<float, load_fp32>(a, b, n, out); }
`;

export interface SquaredError {
  /** Σ (a − b)² */
  readonly sumSq: number;
  /** Σ b² (the reference's energy) */
  readonly refSq: number;
  readonly count: number;
}

/** The reduction kernels for one device, compiled once (NVRTC, disk-cached). */
export class CudaSquaredError {
  private constructor(
    private readonly kernels: Record<Dtype, CudaKernel>,
    private readonly sums: DeviceBuffer<"u32">,
  ) {}

  static async create(cacheDir?: string): Promise<CudaSquaredError> {
    const device = CudaDevice.open();
    const out = await compileNvrtcCachedAsync(SOURCE, {
      arch: device.arch,
      name: "tilec_sq_diff.cu",
      cacheDir,
      extraOptions: ["-std=c++17"],
    });
    const image = out.cubin ?? out.ptx;
    if (!image) throw new Error("NVRTC returned no code for the search's error kernel");
    const module = device.loadModule(image);
    const kernels = {
      bf16: module.getKernel("tilec_sq_diff_bf16"),
      fp16: module.getKernel("tilec_sq_diff_fp16"),
      fp32: module.getKernel("tilec_sq_diff_fp32"),
    };
    // Two doubles, held as four u32 words (the buffer API has no f64 element type).
    return new CudaSquaredError(kernels, device.allocElements("u32", 4));
  }

  /** Σ(a − b)² and Σb² over the first `count` elements of two buffers of the same dtype. */
  measure(a: DeviceBuffer, b: DeviceBuffer, count = b.length): SquaredError {
    if (a.dtype !== b.dtype) throw new TypeError(`dtype mismatch: ${a.dtype} vs ${b.dtype}`);
    if (a.length < count || b.length < count)
      throw new RangeError(`buffers hold fewer than ${count} elements`);
    const kernel = this.kernels[a.dtype as Dtype];
    if (!kernel) throw new TypeError(`no error kernel for ${a.dtype}`);
    this.sums.zero();
    const threads = 256;
    const blocks = Math.max(1, Math.min(1024, Math.ceil(count / threads)));
    kernel.launch({ grid: blocks, block: threads }, [
      { ptr: a },
      { ptr: b },
      { i64: BigInt(count) },
      { ptr: this.sums },
    ]);
    const words = this.sums.download();
    const doubles = new Float64Array(new Uint32Array(words).buffer);
    return { sumSq: doubles[0]!, refSq: doubles[1]!, count };
  }

  free(): void {
    this.sums.free();
  }
}
