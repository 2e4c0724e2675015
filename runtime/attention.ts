// The user-facing call: `const attn = await compile(spec, { target: "cuda" }); attn.run(q, k, v, out)`.
// Compiles a spec's kernel through the pipeline (plan → IR → CUDA source → NVRTC, disk-cached), uploads
// the plan's CSR lists once, and launches with strides for [batch, seq, heads, dim] or
// [batch, heads, seq, dim] tensors.
import { emitCuda, PARAMS_BYTES, planSections, type CudaKernelSource } from "../backends/cuda/emit.ts";
import { CUDA_ARCHS, type CudaArch } from "../backends/cuda/target.ts";
import {
  TENSOR_MAP_BYTES,
  TENSOR_MAPS_ALIGN,
  TENSOR_MAPS_BYTES,
  tensorMapArgs,
} from "../backends/cuda/tma.ts";
import type { CheckedSpec } from "../compiler/check.ts";
import type { KernelConfig, KernelIR } from "../compiler/lower.ts";
import { kernelIR } from "../compiler/pipeline.ts";
import { CudaDevice, DeviceBuffer, type CudaKernel, type CudaModule, type Stream } from "./cuda/device.ts";
import { compileNvrtcCachedAsync } from "./cuda/nvrtcCache.ts";
import { tunedCudaCompile } from "../tune/apply.ts";

export interface CompileOptions {
  readonly target: "cuda";
  /** Which kernel of the spec; required when the spec has more than one. */
  readonly kernel?: string;
  readonly config?: KernelConfig;
  readonly arch?: CudaArch;
  readonly file?: string;
  readonly cacheDir?: string;
  /**
   * Use `tilec tune`'s winner for this kernel on this device when the tuning cache has one (default
   * true; never when `config` is given; $TILEC_TUNED=0 turns it off).
   */
  readonly tuned?: boolean;
}

export type TensorLayout = "bshd" | "bhsd";

export interface RunOptions {
  /** float32 [batch, heads, seq]; written when given. */
  readonly lse?: DeviceBuffer<"fp32">;
  /** Memory order of q, k, v and out (default [batch, seq, heads, dim]). */
  readonly layout?: TensorLayout;
  readonly stream?: Stream | null;
}

// -default-device: the templates use constexpr helper functions without __device__ (fine for nvcc).
export const NVRTC_OPTIONS = ["-std=c++17", "-lineinfo", "-default-device"];

/** Nearest architecture tilec has limits for, at or below the device's. */
export function archFor(deviceArch: string): CudaArch {
  const cc = Number(deviceArch.replace("sm_", ""));
  const known = CUDA_ARCHS.filter((a) => Number(a.slice(3)) <= cc);
  if (!known.length) throw new Error(`tilec's CUDA kernels need sm_80 or newer; this GPU is ${deviceArch}`);
  return known[known.length - 1]!;
}

export class CudaAttention {
  private readonly planBuffers: DeviceBuffer<"i32">[];
  private readonly kernel: CudaKernel;
  /** The last call's TMA descriptors and what they were encoded for (pointers and layout). */
  private mapsCache?: { key: string; bytes: Uint8Array };

  constructor(
    readonly ir: KernelIR,
    readonly compiled: CudaKernelSource,
    private readonly module: CudaModule,
    private readonly device: CudaDevice,
  ) {
    this.kernel = module.getKernel(ir.entry);
    this.planBuffers = planSections(ir).map((s) => device.fromHost(s.data, "i32"));
  }

  /**
   * struct TilecTensorMaps for q, k, v (sm_90a kernels; backends/cuda/tma.ts), re-encoded only when
   * a pointer or the layout changes.
   */
  tensorMaps(q: DeviceBuffer, k: DeviceBuffer, v: DeviceBuffer, layout: TensorLayout): Uint8Array {
    const key = `${q.ptr}:${k.ptr}:${v.ptr}:${layout}`;
    if (this.mapsCache?.key === key) return this.mapsCache.bytes;
    const { batch, seqLen, heads, kvHeads, headDim } = this.ir;
    const bytes = new Uint8Array(TENSOR_MAPS_BYTES);
    const buffers = { q, k, v };
    this.compiled.tensorMaps.forEach((spec, i) => {
      const h = spec.tensor === "q" ? heads : kvHeads;
      const args = tensorMapArgs(spec, {
        batch,
        seqLen,
        heads: h,
        headDim,
        strides: this.strides(h, layout),
        elementBytes: 2,
      });
      bytes.set(this.device.encodeTensorMap(buffers[spec.tensor].ptr, args), i * TENSOR_MAP_BYTES);
    });
    this.mapsCache = { key, bytes };
    return bytes;
  }

  /** Element strides (batch, seq, head) of a tensor with `heads` heads in the given layout. */
  strides(heads: number, layout: TensorLayout): [number, number, number] {
    const { seqLen: s, headDim: d } = this.ir;
    return layout === "bshd" ? [s * heads * d, heads * d, d] : [heads * s * d, d, s * d];
  }

  /** Packs `struct TilecParams` (templates/ptx.cuh) into its PARAMS_BYTES bytes. */
  params(
    q: DeviceBuffer,
    k: DeviceBuffer,
    v: DeviceBuffer,
    out: DeviceBuffer,
    lse: DeviceBuffer | undefined,
    layout: TensorLayout,
  ): Uint8Array {
    const bytes = new Uint8Array(PARAMS_BYTES);
    const view = new DataView(bytes.buffer);
    let at = 0;
    const ptr = (p: bigint) => {
      view.setBigUint64(at, p, true);
      at += 8;
    };
    for (const b of [q, k, v, out]) ptr(b.ptr);
    ptr(lse ? lse.ptr : 0n);
    const { heads, kvHeads } = this.ir;
    for (const h of [heads, kvHeads, kvHeads, heads]) for (const s of this.strides(h, layout)) ptr(BigInt(s));
    view.setInt32(at, this.ir.seqLen, true);
    view.setInt32(at + 4, heads, true);
    view.setInt32(at + 8, kvHeads, true);
    view.setFloat32(at + 12, this.ir.scale * Math.LOG2E, true);
    at += 16;
    for (const b of this.planBuffers) ptr(b.length ? b.ptr : 0n);
    if (at !== PARAMS_BYTES)
      throw new Error(`TilecParams packing wrote ${at} bytes, expected ${PARAMS_BYTES}`);
    return bytes;
  }

  run(q: DeviceBuffer, k: DeviceBuffer, v: DeviceBuffer, out: DeviceBuffer, options: RunOptions = {}): void {
    const { batch, seqLen, heads, kvHeads, headDim, dtype } = this.ir;
    const want = (b: DeviceBuffer, h: number, name: string) => {
      const n = batch * seqLen * h * headDim;
      if (b.dtype !== dtype)
        throw new TypeError(`${name} is ${b.dtype}, but kernel '${this.ir.name}' takes ${dtype}`);
      if (b.length < n)
        throw new RangeError(
          `${name} holds ${b.length} elements, needs ${n} (${batch}×${seqLen}×${h}×${headDim})`,
        );
    };
    want(q, heads, "q");
    want(k, kvHeads, "k");
    want(v, kvHeads, "v");
    want(out, heads, "out");
    if (options.lse && options.lse.length < batch * heads * seqLen)
      throw new RangeError(`lse needs ${batch * heads * seqLen} floats`);
    const layout = options.layout ?? "bshd";
    const params = this.params(q, k, v, out, options.lse, layout);
    const { grid, block, sharedBytes } = this.compiled.launch;
    const maps = this.compiled.tensorMaps.length
      ? [{ bytes: this.tensorMaps(q, k, v, layout), align: TENSOR_MAPS_ALIGN }]
      : [];
    this.kernel.launch({ grid, block, sharedBytes, stream: options.stream ?? null }, [
      { bytes: params, align: 8 },
      ...maps,
    ]);
  }

  /** Releases the plan buffers and the module; idempotent. */
  free(): void {
    for (const b of this.planBuffers) b.free();
    this.module.unload();
  }
}

/** Compiles one kernel of a spec (text or checked) for the current CUDA device. */
export async function compile(spec: string | CheckedSpec, options: CompileOptions): Promise<CudaAttention> {
  const device = CudaDevice.open();
  if (!options.config && options.tuned !== false) {
    const t = tunedCudaCompile(spec, options, device);
    if (t)
      return compile(t.spec, {
        ...options,
        kernel: t.kernel,
        config: t.config,
        arch: t.arch as CudaArch,
        tuned: false,
      });
  }
  const arch = options.arch ?? archFor(device.arch);
  // The wgmma template's sm_90a code runs on sm_90 parts only: pick its default configuration
  // there and nowhere else (a later architecture gets the sm_80 template).
  const { ir } = kernelIR(spec, { ...options, arch: device.arch === "sm_90" ? arch : undefined });
  const src = emitCuda(ir, arch);
  const out = await compileNvrtcCachedAsync(src.source, {
    arch: src.template === "sm90" ? src.compileArch : device.arch,
    name: `${ir.entry}.cu`,
    cacheDir: options.cacheDir,
    extraOptions: NVRTC_OPTIONS,
  });
  const image = out.cubin ?? out.ptx;
  if (!image) throw new Error(`NVRTC returned no code for ${ir.entry}`);
  return new CudaAttention(ir, src, device.loadModule(image), device);
}
