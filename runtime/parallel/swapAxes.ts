// The packing step around the all-to-all: a [outer, inner, unit] → [inner, outer, unit] copy on
// the device, compiled once with NVRTC (disk-cached like the attention kernels).
//
// Why a kernel and not cuMemcpy2DAsync: one launch packs all N peers' chunks of a tensor (a 2D
// copy would take one call per peer), the same kernel unpacks the way back, and it needs no new
// driver entry points in the addon. The copy moves whole rows of `unit` elements with the widest
// access (16, 8, 4 or 2 bytes) that divides a row, so a head group's row of bf16 (h·d·2 bytes,
// e.g. 6·96·2 = 1152) moves as 16-byte vectors; it runs at copy bandwidth, next to an attention
// kernel that takes ~10⁴× longer per token row.
import {
  CudaDevice,
  type CudaKernel,
  type CudaModule,
  type DeviceBuffer,
  type Stream,
} from "../cuda/device.ts";
import { DTYPE_BYTES } from "../cuda/dtype.ts";
import { compileNvrtcCachedAsync } from "../cuda/nvrtcCache.ts";
import type { SwapAxes } from "./partition.ts";

const WIDTHS = [16, 8, 4, 2, 1] as const;
type Width = (typeof WIDTHS)[number];
const TYPES: Record<Width, string> = {
  16: "uint4",
  8: "uint2",
  4: "unsigned int",
  2: "unsigned short",
  1: "unsigned char",
};

export const SWAP_AXES_SOURCE = `// tilec sequence parallelism: out[j][i][:] = in[i][j][:] for in = [outer, inner, unit].
// One thread block per input row, grid-stride over rows; threads stride over the row's vectors.
template <typename T>
__device__ __forceinline__ void swap_axes(const T* __restrict__ in, T* __restrict__ out, long long outer,
                                          long long inner, long long unit) {
  const long long rows = outer * inner;
  for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
    const long long i = row / inner, j = row - i * inner;
    const T* src = in + row * unit;
    T* dst = out + (j * outer + i) * unit;
    for (long long c = threadIdx.x; c < unit; c += blockDim.x) dst[c] = src[c];
  }
}
${WIDTHS.map(
  (
    w,
  ) => `extern "C" __global__ void tilec_swap_axes_${w}(const ${TYPES[w]}* in, ${TYPES[w]}* out, long long outer,
                                                long long inner, long long unit) {
  swap_axes(in, out, outer, inner, unit);
}`,
).join("\n")}
`;

const MAX_BLOCKS = 1 << 16;

export class SwapAxesKernel {
  private readonly kernels: Map<Width, CudaKernel>;

  private constructor(private readonly module: CudaModule) {
    this.kernels = new Map(WIDTHS.map((w) => [w, module.getKernel(`tilec_swap_axes_${w}`)]));
  }

  static async compile(cacheDir?: string): Promise<SwapAxesKernel> {
    const device = CudaDevice.open();
    const out = await compileNvrtcCachedAsync(SWAP_AXES_SOURCE, {
      arch: device.arch,
      name: "tilec_swap_axes.cu",
      cacheDir,
      extraOptions: ["-std=c++17"],
    });
    const image = out.cubin ?? out.ptx;
    if (!image) throw new Error("NVRTC returned no code for tilec_swap_axes");
    return new SwapAxesKernel(device.loadModule(image));
  }

  /** Writes `input` viewed as [outer, inner, unit] to `output` as [inner, outer, unit]. */
  run(input: DeviceBuffer, output: DeviceBuffer, s: SwapAxes, stream: Stream | null = null): void {
    if (input.dtype !== output.dtype)
      throw new TypeError(`swap axes: input is ${input.dtype} but output is ${output.dtype}`);
    const elems = s.outer * s.inner * s.unit;
    if (input.length < elems || output.length < elems)
      throw new RangeError(`swap axes of ${s.outer}×${s.inner}×${s.unit} needs ${elems} elements`);
    if (elems === 0) return;
    const rowBytes = s.unit * DTYPE_BYTES[input.dtype];
    // Buffers start 256-byte aligned (cuMemAlloc) and rows are whole multiples of `width`.
    const width = WIDTHS.find((w) => rowBytes % w === 0)!;
    const unit = rowBytes / width;
    const rows = s.outer * s.inner;
    const threads = Math.min(256, Math.ceil(unit / 32) * 32);
    this.kernels
      .get(width)!
      .launch({ grid: Math.min(rows, MAX_BLOCKS), block: threads, stream }, [
        { ptr: input },
        { ptr: output },
        { i64: BigInt(s.outer) },
        { i64: BigInt(s.inner) },
        { i64: BigInt(unit) },
      ]);
  }

  free(): void {
    this.module.unload();
  }
}
