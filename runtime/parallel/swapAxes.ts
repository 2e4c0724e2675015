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
import { DTYPE_BYTES, type DType } from "../cuda/dtype.ts";
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

const entry = (name: string, params: string, call: string) =>
  WIDTHS.map(
    (w) =>
      `extern "C" __global__ void tilec_${name}_${w}(const ${TYPES[w]}* in, ${TYPES[w]}* out, ${params}) {\n` +
      `  ${call};\n}`,
  ).join("\n");

export const SWAP_AXES_SOURCE = `// tilec sequence parallelism: device copies around the all-to-all.
// One thread block per row, grid-stride over rows; threads stride over the row's vectors.

// out[j][i][:] = in[i][j][:] for in = [outer, inner, unit].
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

// out[b][t][:] = in[b·inBatchStride + t·unit ...] for b < batch, t < rows: a run of rows of every
// batch (the input pointer arrives offset to the run's first row).
template <typename T>
__device__ __forceinline__ void copy_rows(const T* __restrict__ in, T* __restrict__ out, long long batch,
                                          long long rows, long long unit, long long inBatchStride) {
  for (long long row = blockIdx.x; row < batch * rows; row += gridDim.x) {
    const long long b = row / rows, t = row - b * rows;
    const T* src = in + b * inBatchStride + t * unit;
    T* dst = out + row * unit;
    for (long long c = threadIdx.x; c < unit; c += blockDim.x) dst[c] = src[c];
  }
}

// out[i] = in[i] for i < n (a plain device copy; pointers arrive offset).
template <typename T>
__device__ __forceinline__ void copy(const T* __restrict__ in, T* __restrict__ out, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    out[i] = in[i];
}

${entry("copy", "long long n", "copy(in, out, n)")}
${entry("swap_axes", "long long outer, long long inner, long long unit", "swap_axes(in, out, outer, inner, unit)")}
${entry(
  "copy_rows",
  "long long batch, long long rows, long long unit, long long inBatchStride",
  "copy_rows(in, out, batch, rows, unit, inBatchStride)",
)}
`;

const MAX_BLOCKS = 1 << 16;

/** The widest access dividing a row (buffers start 256-byte aligned; rows are whole multiples of it). */
function vectors(rowElems: number, dtype: DType): { width: Width; unit: number; threads: number } {
  const rowBytes = rowElems * DTYPE_BYTES[dtype];
  const width = WIDTHS.find((w) => rowBytes % w === 0)!;
  const unit = rowBytes / width;
  return { width, unit, threads: Math.min(256, Math.ceil(unit / 32) * 32) };
}

export class SwapAxesKernel {
  private readonly swap: Map<Width, CudaKernel>;
  private readonly copy: Map<Width, CudaKernel>;
  private readonly plain: Map<Width, CudaKernel>;

  private constructor(private readonly module: CudaModule) {
    this.swap = new Map(WIDTHS.map((w) => [w, module.getKernel(`tilec_swap_axes_${w}`)]));
    this.copy = new Map(WIDTHS.map((w) => [w, module.getKernel(`tilec_copy_rows_${w}`)]));
    this.plain = new Map(WIDTHS.map((w) => [w, module.getKernel(`tilec_copy_${w}`)]));
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
    const { width, unit, threads } = vectors(s.unit, input.dtype);
    const rows = s.outer * s.inner;
    this.swap
      .get(width)!
      .launch({ grid: Math.min(rows, MAX_BLOCKS), block: threads, stream }, [
        { ptr: input },
        { ptr: output },
        { i64: BigInt(s.outer) },
        { i64: BigInt(s.inner) },
        { i64: BigInt(unit) },
      ]);
  }

  /**
   * Tokens [start, start + count) of every batch of `input` = [batch, total, rowElems] into
   * `output` = [batch, count, rowElems]: a rank's slice of a tensor every rank holds whole.
   */
  sliceRows(
    input: DeviceBuffer,
    output: DeviceBuffer,
    s: { batch: number; total: number; start: number; count: number; rowElems: number },
    stream: Stream | null = null,
  ): void {
    if (input.dtype !== output.dtype)
      throw new TypeError(`slice rows: input is ${input.dtype} but output is ${output.dtype}`);
    if (s.start < 0 || s.count < 0 || s.start + s.count > s.total)
      throw new RangeError(`rows [${s.start}, ${s.start + s.count}) outside ${s.total}`);
    if (input.length < s.batch * s.total * s.rowElems || output.length < s.batch * s.count * s.rowElems)
      throw new RangeError(
        `slice rows: buffers smaller than [${s.batch}, ${s.total}|${s.count}, ${s.rowElems}]`,
      );
    if (s.batch * s.count === 0 || s.rowElems === 0) return;
    const { width, unit, threads } = vectors(s.rowElems, input.dtype);
    this.copy
      .get(width)!
      .launch({ grid: Math.min(s.batch * s.count, MAX_BLOCKS), block: threads, stream }, [
        { ptr: input.ptrAt(s.start * s.rowElems) },
        { ptr: output },
        { i64: BigInt(s.batch) },
        { i64: BigInt(s.count) },
        { i64: BigInt(unit) },
        { i64: BigInt(s.total * unit) },
      ]);
  }

  /** `count` elements from `src` at element `srcOffset` to `dst` at `dstOffset` (a device-to-device copy). */
  copyElements(
    src: DeviceBuffer,
    srcOffset: number,
    dst: DeviceBuffer,
    dstOffset: number,
    count: number,
    stream: Stream | null = null,
  ): void {
    if (src.dtype !== dst.dtype) throw new TypeError(`copy: ${src.dtype} into ${dst.dtype}`);
    if (srcOffset + count > src.length || dstOffset + count > dst.length)
      throw new RangeError(`copy of ${count} elements overruns a buffer`);
    if (count === 0) return;
    const bytes = DTYPE_BYTES[src.dtype];
    const width = WIDTHS.find(
      (w) => (count * bytes) % w === 0 && (srcOffset * bytes) % w === 0 && (dstOffset * bytes) % w === 0,
    )!;
    const n = (count * bytes) / width;
    this.plain
      .get(width)!
      .launch({ grid: Math.min(Math.ceil(n / 256), MAX_BLOCKS), block: 256, stream }, [
        { ptr: src.ptrAt(srcOffset) },
        { ptr: dst.ptrAt(dstOffset) },
        { i64: BigInt(n) },
      ]);
  }

  free(): void {
    this.module.unload();
  }
}
