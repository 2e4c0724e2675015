// tilec package loader, CUDA (copied verbatim into every `tilec build` output as tilec-cuda.ts).
// Loads a packaged kernel's cubin (or PTX, or its source through NVRTC) with tilec's CUDA runtime
// (runtime/cuda: the native addon, device buffers, streams), uploads its plan, and launches it.
// It needs nothing of tilec's compiler: the manifest carries the launch geometry, the plan and
// the parameter struct's layout.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

/** The part of tilec's runtime/cuda/index.ts this loader uses (passed in by the generated index.ts). */
export interface CudaRuntime {
  readonly CudaDevice: { open(ordinal?: number): RuntimeDevice };
  compileNvrtc?(
    source: string,
    opts: { arch?: string; name?: string; extraOptions?: readonly string[] },
  ): { cubin?: Uint8Array; ptx?: Uint8Array };
}
export interface RuntimeDevice {
  readonly arch: string;
  fromHost(data: Int32Array, dtype: "i32"): RuntimeBuffer;
  loadModule(image: Uint8Array): RuntimeModule;
  /** cuTensorMapEncodeTiled (tilec's CudaDevice.encodeTensorMap), for kernels that take tensor maps. */
  encodeTensorMap(address: bigint, args: TensorMapArgs): Uint8Array;
}
export interface TensorMapArgs {
  readonly elementBytes: number;
  readonly dims: readonly number[];
  readonly stridesBytes: readonly number[];
  readonly box: readonly number[];
  readonly swizzleBytes: number;
}
export interface RuntimeBuffer {
  readonly ptr: bigint;
  readonly dtype: string;
  readonly length: number;
  free(): void;
}
interface RuntimeModule {
  getKernel(name: string): {
    // Loose types: the runtime's LaunchConfig / KernelArg are wider (method parameters are bivariant).
    launch(
      config: { grid: unknown; block: unknown; sharedBytes?: number; stream?: unknown },
      args: readonly unknown[],
    ): void;
  };
  unload(): void;
}

export type ParamType = "ptr" | "i64" | "i32" | "f32";
export interface ParamField {
  readonly name: string;
  readonly type: ParamType;
  readonly offset: number;
}

/** A kernel's CUDA section of manifest.json. */
export interface CudaManifest {
  readonly entry: string;
  readonly compileArch: string;
  readonly files: { source: string; plan: string; ptx?: string; cubin?: string };
  readonly nvrtcOptions: readonly string[];
  readonly launch: {
    grid: [number, number, number];
    block: [number, number, number];
    sharedBytes: number;
  };
  readonly params: { bytes: number; fields: readonly ParamField[] };
  /**
   * sm_90a kernels: the second parameter, one TMA descriptor per map (q, k, v), each over its tensor's
   * (head dim, seq, heads, batch) with box (boxCols, boxRows, 1, 1); see the manifest's note.
   */
  readonly tensorMaps?: {
    bytes: number;
    align: number;
    maps: readonly { tensor: "q" | "k" | "v"; boxCols: number; boxRows: number; swizzleBytes: number }[];
  };
  /** The plan file's int32 sections, in order: full/partial offsets and indices, q_order, partial_classes. */
  readonly plan: { sections: readonly { name: string; length: number }[] };
}

export interface KernelShape {
  readonly batch: number;
  readonly seqLen: number;
  readonly heads: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly dtype: "bf16" | "fp16" | "fp32";
  readonly scale: number;
}

export interface PackageManifest {
  readonly kernels: Record<string, { shape: KernelShape; cuda?: CudaManifest }>;
}

export type Layout = "bshd" | "bhsd";

export interface CudaRunOptions {
  /** float32 [batch, heads, seq]; written when given. */
  readonly lse?: RuntimeBuffer;
  /** Memory order of q, k, v and out (default [batch, seq, heads, dim]). */
  readonly layout?: Layout;
  readonly stream?: unknown;
  /** Batch and heads of this call (default: the spec's); sequence length and head dim are fixed. */
  readonly batch?: number;
  readonly heads?: number;
  readonly kvHeads?: number;
}

/** Writes `values` (by field name; missing pointers are null) into a struct of `bytes` bytes. */
export function packParams(
  fields: readonly ParamField[],
  bytes: number,
  values: Record<string, bigint | number>,
): Uint8Array {
  const out = new Uint8Array(bytes);
  const view = new DataView(out.buffer);
  for (const f of fields) {
    const v = values[f.name] ?? 0;
    if (f.type === "ptr" || f.type === "i64") view.setBigInt64(f.offset, BigInt(v), true);
    else if (f.type === "i32") view.setInt32(f.offset, Number(v), true);
    else view.setFloat32(f.offset, Number(v), true);
  }
  return out;
}

/** Element strides (batch, seq, head) of a contiguous tensor in `layout`. */
export function strides(
  seqLen: number,
  heads: number,
  headDim: number,
  layout: Layout,
): [number, number, number] {
  return layout === "bshd"
    ? [seqLen * heads * headDim, heads * headDim, headDim]
    : [heads * seqLen * headDim, headDim, seqLen * headDim];
}

export class PackagedCudaKernel {
  private readonly module: RuntimeModule;
  private readonly planBuffers: RuntimeBuffer[];
  private readonly device: RuntimeDevice;

  constructor(
    runtime: CudaRuntime,
    readonly dir: string,
    readonly name: string,
    readonly shape: KernelShape,
    readonly cuda: CudaManifest,
    ordinal = 0,
  ) {
    const device = runtime.CudaDevice.open(ordinal);
    this.device = device;
    this.module = device.loadModule(loadImage(runtime, dir, cuda, device.arch));
    const plan = readFileSync(`${dir}/${cuda.files.plan}`);
    const ints = new Int32Array(plan.buffer.slice(plan.byteOffset, plan.byteOffset + plan.byteLength));
    let at = 0;
    this.planBuffers = cuda.plan.sections.map((s) => {
      const b = device.fromHost(ints.slice(at, at + s.length), "i32");
      at += s.length;
      return b;
    });
  }

  run(
    q: RuntimeBuffer,
    k: RuntimeBuffer,
    v: RuntimeBuffer,
    out: RuntimeBuffer,
    options: CudaRunOptions = {},
  ): void {
    const s = this.shape;
    const batch = options.batch ?? s.batch;
    const heads = options.heads ?? s.heads;
    const kvHeads = options.kvHeads ?? (options.heads ? heads / (s.heads / s.kvHeads) : s.kvHeads);
    if (!Number.isInteger(kvHeads) || heads % kvHeads !== 0)
      throw new RangeError(`kv heads ${kvHeads} must divide heads ${heads}`);
    const layout = options.layout ?? "bshd";
    const need = (b: RuntimeBuffer, h: number, what: string) => {
      if (b.dtype !== s.dtype)
        throw new TypeError(`${what} is ${b.dtype}, kernel '${this.name}' takes ${s.dtype}`);
      if (b.length < batch * s.seqLen * h * s.headDim)
        throw new RangeError(
          `${what} holds ${b.length} elements, needs ${batch}×${s.seqLen}×${h}×${s.headDim}`,
        );
    };
    need(q, heads, "q");
    need(k, kvHeads, "k");
    need(v, kvHeads, "v");
    need(out, heads, "out");
    if (options.lse && options.lse.length < batch * heads * s.seqLen)
      throw new RangeError(`lse needs ${batch * heads * s.seqLen} floats`);
    const values: Record<string, bigint | number> = {
      q: q.ptr,
      k: k.ptr,
      v: v.ptr,
      o: out.ptr,
      lse: options.lse?.ptr ?? 0n,
      seq_len: s.seqLen,
      num_heads: heads,
      num_kv_heads: kvHeads,
      scale_log2: s.scale * Math.LOG2E,
    };
    const headsOf = { q: heads, k: kvHeads, v: kvHeads, o: heads };
    for (const [t, h] of Object.entries(headsOf)) {
      const [sb, ss, sh] = strides(s.seqLen, h, s.headDim, layout);
      Object.assign(values, { [`${t}_batch_stride`]: sb, [`${t}_seq_stride`]: ss, [`${t}_head_stride`]: sh });
    }
    const args: { bytes: Uint8Array; align: number }[] = [];
    const tm = this.cuda.tensorMaps;
    if (tm) {
      // TMA descriptors: 4-D over (dim, seq, heads, batch), byte strides of seq, heads, batch.
      const maps = new Uint8Array(tm.bytes);
      const buffers = { q, k, v };
      tm.maps.forEach((m, i) => {
        const h = headsOf[m.tensor];
        const [sb, ss, sh] = strides(s.seqLen, h, s.headDim, layout);
        const encoded = this.device.encodeTensorMap(buffers[m.tensor].ptr, {
          elementBytes: 2,
          dims: [s.headDim, s.seqLen, h, batch],
          stridesBytes: [ss * 2, sh * 2, sb * 2],
          box: [m.boxCols, m.boxRows, 1, 1],
          swizzleBytes: m.swizzleBytes,
        });
        maps.set(encoded, i * encoded.length);
      });
      args.push({ bytes: maps, align: tm.align });
    }
    this.cuda.plan.sections.forEach((sec, i) => {
      const b = this.planBuffers[i]!;
      values[sec.name] = b.length ? b.ptr : 0n;
    });
    const bytes = packParams(this.cuda.params.fields, this.cuda.params.bytes, values);
    const [gx] = this.cuda.launch.grid;
    this.module.getKernel(this.cuda.entry).launch(
      {
        grid: [gx, heads, batch],
        block: this.cuda.launch.block,
        sharedBytes: this.cuda.launch.sharedBytes,
        stream: options.stream ?? null,
      },
      [{ bytes, align: 8 }, ...args],
    );
  }

  free(): void {
    for (const b of this.planBuffers) b.free();
    this.module.unload();
  }
}

/** The cubin when it was built for this GPU, else the PTX (JIT-compiled by the driver), else NVRTC. */
function loadImage(runtime: CudaRuntime, dir: string, cuda: CudaManifest, deviceArch: string): Uint8Array {
  const sameGpu = cuda.compileArch.replace(/a$/, "") === deviceArch;
  if (cuda.files.cubin && sameGpu) return readFileSync(`${dir}/${cuda.files.cubin}`);
  const ptxOk = cuda.files.ptx && (sameGpu || !cuda.compileArch.endsWith("a"));
  if (ptxOk) return readFileSync(`${dir}/${cuda.files.ptx!}`); // the runtime NUL-terminates PTX
  if (!runtime.compileNvrtc)
    throw new Error(`no binary of ${cuda.entry} runs on ${deviceArch}, and the runtime offers no NVRTC`);
  const out = runtime.compileNvrtc(readFileSync(`${dir}/${cuda.files.source}`, "utf8"), {
    arch: cuda.compileArch.endsWith("a") ? cuda.compileArch : deviceArch,
    name: cuda.files.source,
    extraOptions: cuda.nvrtcOptions,
  });
  const image = out.cubin ?? out.ptx;
  if (!image) throw new Error(`NVRTC returned no code for ${cuda.entry}`);
  return image;
}

/** A package's kernels, each loaded on first use. */
export class CudaPackage<Name extends string> {
  readonly dir: string;
  readonly manifest: PackageManifest;
  private readonly loaded = new Map<Name, PackagedCudaKernel>();

  constructor(
    private readonly runtime: CudaRuntime,
    dir: URL,
  ) {
    this.dir = fileURLToPath(dir);
    this.manifest = JSON.parse(readFileSync(`${this.dir}/manifest.json`, "utf8")) as PackageManifest;
  }

  kernel(name: Name): PackagedCudaKernel {
    let k = this.loaded.get(name);
    if (!k) {
      const m = this.manifest.kernels[name];
      if (!m?.cuda) throw new Error(`this package has no CUDA kernel '${name}'`);
      k = new PackagedCudaKernel(this.runtime, this.dir, name, m.shape, m.cuda);
      this.loaded.set(name, k);
    }
    return k;
  }
}
