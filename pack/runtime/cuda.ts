// tilec package loader, CUDA (copied verbatim into every `tilec build` output as tilec-cuda.ts).
// Loads a packaged kernel's modules (cubin, or PTX, or the source through NVRTC) with tilec's CUDA
// runtime (runtime/cuda: the native addon, device buffers, streams), uploads its plans, and runs its
// operations — the forward and, where the package has it, the backward — launch by launch from the
// manifest's launch descriptions through the runtime's generic packLaunch. It needs nothing of tilec's
// compiler and knows no kernel's parameter struct: the manifest carries every field's source.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

/** The part of tilec's runtime/cuda/index.ts this loader uses (passed in by the generated index.ts). */
export interface CudaRuntime {
  readonly CudaDevice: { open(ordinal?: number): RuntimeDevice };
  /** runtime/cuda/launch.ts: a launch's struct bytes, TMA descriptors and grid from its description. */
  packLaunch(description: LaunchDescription, bindings: LaunchBindings, encode: EncodeTensorMap): PackedLaunch;
  /**
   * runtime/cuda/operations.ts: checks a call's tensors and runs an operation's launches (workspace,
   * packLaunch, launch); the runtime's own CudaAttention runs through it too.
   */
  readonly KernelOperations: new (
    kernel: { name: string; seqLen: number; headDim: number; dtype: string },
    device: RuntimeDevice,
    module: (name: string) => { module: RuntimeModule; plan: Record<string, bigint> },
  ) => RuntimeOperations;
  compileNvrtc?(
    source: string,
    opts: { arch?: string; name?: string; extraOptions?: readonly string[] },
  ): { cubin?: Uint8Array; ptx?: Uint8Array };
}
export interface RuntimeDevice {
  readonly arch: string;
  fromHost(data: Int32Array, dtype: "i32"): RuntimeBuffer;
  /** Uninitialized device memory (the backward's fp32 workspace). */
  allocElements(dtype: "fp32", length: number): RuntimeBuffer;
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
/** The runtime's KernelOperations as this loader uses it. */
export interface RuntimeOperations {
  forward(
    op: Operation,
    q: RuntimeBuffer,
    k: RuntimeBuffer,
    v: RuntimeBuffer,
    out: RuntimeBuffer,
    lse: RuntimeBuffer | undefined,
    call: RuntimeCall,
  ): void;
  backward(
    op: Operation,
    q: RuntimeBuffer,
    k: RuntimeBuffer,
    v: RuntimeBuffer,
    out: RuntimeBuffer,
    lse: RuntimeBuffer,
    dOut: RuntimeBuffer,
    dq: RuntimeBuffer,
    dk: RuntimeBuffer,
    dv: RuntimeBuffer,
    call: RuntimeCall,
  ): void;
  free(): void;
}
interface RuntimeCall {
  readonly batch: number;
  readonly heads: number;
  readonly kvHeads: number;
  readonly layout?: Layout;
  readonly stream?: unknown;
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

// ---- the manifest (format 2) ------------------------------------------------------------------

export type ParamType = "ptr" | "i64" | "i32" | "f32";
export type TensorRole =
  "q" | "k" | "v" | "o" | "lse" | "do" | "dq" | "dk" | "dv" | "dq_accum" | "lse_log2" | "delta";
type StridedRole = "q" | "k" | "v" | "o" | "do" | "dq" | "dk" | "dv";
/** Where a launcher takes a struct field's value from (backends/cuda/params.ts ParamSource). */
export type ParamSource =
  | { readonly tensor: TensorRole }
  | { readonly stride: StridedRole; readonly dim: "batch" | "seq" | "head" }
  | { readonly plan: string }
  | { readonly shape: "heads" | "kvHeads" }
  | { readonly value: number };
export interface ParamField {
  readonly name: string;
  readonly type: ParamType;
  readonly ctype: string;
  readonly offset: number;
  readonly source: ParamSource;
}
export type GridDim = number | "heads" | "kvHeads" | "batch";
/** One kernel launch (backends/cuda/launch.ts LaunchDescription). */
export interface LaunchDescription {
  readonly module: string;
  readonly entry: string;
  readonly grid: readonly [GridDim, GridDim, GridDim];
  readonly block: readonly [number, number, number];
  readonly sharedBytes: number;
  readonly params: {
    readonly struct: string;
    readonly bytes: number;
    readonly fields: readonly ParamField[];
  };
  readonly tensorMaps?: {
    readonly bytes: number;
    readonly align: number;
    readonly maps: readonly {
      readonly name: string;
      readonly tensor: "q" | "k" | "v" | "do";
      readonly boxCols: number;
      readonly boxRows: number;
      readonly swizzleBytes: 32 | 64 | 128;
    }[];
  };
}
/** Launches in order, and the fp32 workspace (batch·heads·elementsPerHead each) they share. */
export interface Operation {
  readonly launches: readonly LaunchDescription[];
  readonly workspace: readonly { readonly tensor: TensorRole; readonly elementsPerHead: number }[];
}
export interface BoundTensor {
  readonly ptr: bigint;
  readonly strides?: readonly [number, number, number];
  readonly heads?: number;
}
export interface LaunchBindings {
  readonly tensors: Partial<Record<TensorRole, BoundTensor>>;
  readonly plan: Readonly<Record<string, bigint>>;
  readonly batch: number;
  readonly heads: number;
  readonly kvHeads: number;
  readonly seqLen: number;
  readonly headDim: number;
}
export interface PackedLaunch {
  readonly grid: readonly [number, number, number];
  readonly block: readonly [number, number, number];
  readonly sharedBytes: number;
  readonly args: readonly { bytes: Uint8Array; align: number }[];
}
export type EncodeTensorMap = (address: bigint, args: TensorMapArgs) => Uint8Array;

/** A CUDA module of a kernel: its files and what they were compiled for. */
export interface CudaModuleManifest {
  readonly files: { source: string; ptx?: string; cubin?: string };
  readonly compileArch: string;
  readonly nvrtcOptions: readonly string[];
}

/** A kernel's CUDA section of manifest.json. */
export interface CudaManifest {
  readonly modules: { readonly forward: CudaModuleManifest; readonly backward?: CudaModuleManifest };
  readonly operations: {
    readonly forward: Operation;
    readonly backward?: Operation;
    readonly backwardDeterministic?: Operation;
  };
  /** Per module, the plan file its launches read: int32 sections in order (names = struct fields). */
  readonly plans: Record<string, { file: string; sections: readonly { name: string; length: number }[] }>;
  /** Why the package has no backward for this kernel (fp32, head dim, shared memory). */
  readonly backwardWhy?: string;
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

export interface ModelManifest {
  readonly layers: number;
  readonly steps: number | null;
  readonly layerKernels: readonly string[];
  readonly stepOverrides: readonly { steps: [number, number]; layers: [number, number]; kernel: string }[];
}

export interface PackageManifest {
  readonly format: number;
  readonly kernels: Record<string, { shape: KernelShape; cuda?: CudaManifest }>;
  readonly models?: Record<string, ModelManifest>;
}

export type Layout = "bshd" | "bhsd";

interface CallShape {
  /** Batch and heads of this call (default: the spec's); sequence length and head dim are fixed. */
  readonly batch?: number;
  readonly heads?: number;
  readonly kvHeads?: number;
}

export interface CudaRunOptions extends CallShape {
  /** float32 [batch, heads, seq]; written when given (the backward needs it). */
  readonly lse?: RuntimeBuffer;
  /** Memory order of q, k, v and out (default [batch, seq, heads, dim]). */
  readonly layout?: Layout;
  readonly stream?: unknown;
}

export interface CudaBackwardOptions extends CallShape {
  /** Memory order of every [batch, seq, heads, dim] tensor of the call (default "bshd"). */
  readonly layout?: Layout;
  readonly stream?: unknown;
  /** Bit-identical gradients run to run: dQ by its own pass instead of fp32 atomics. */
  readonly deterministic?: boolean;
}

/** The kernel of `layer` (at `step` of the model section's steps) under a packaged model section. */
export function kernelFor(model: ModelManifest, layer: number, step?: number): string {
  if (step !== undefined)
    for (const o of model.stepOverrides)
      if (step >= o.steps[0] && step <= o.steps[1] && layer >= o.layers[0] && layer <= o.layers[1])
        return o.kernel;
  const k = model.layerKernels[layer];
  if (k === undefined) throw new RangeError(`the model has layers 0..${model.layers - 1}, not ${layer}`);
  return k;
}

interface LoadedModule {
  readonly module: RuntimeModule;
  readonly plan: { buffers: RuntimeBuffer[]; ptrs: Record<string, bigint> };
}

export class PackagedCudaKernel {
  private readonly device: RuntimeDevice;
  private readonly modules = new Map<string, LoadedModule>();
  /** The runtime's validation, workspace and launches of the kernel's operations. */
  private readonly ops: RuntimeOperations;

  constructor(
    private readonly runtime: CudaRuntime,
    readonly dir: string,
    readonly name: string,
    readonly shape: KernelShape,
    readonly cuda: CudaManifest,
    ordinal = 0,
  ) {
    this.device = runtime.CudaDevice.open(ordinal);
    this.module("forward");
    const { seqLen, headDim, dtype } = shape;
    this.ops = new runtime.KernelOperations({ name, seqLen, headDim, dtype }, this.device, (m) => {
      const loaded = this.module(m);
      return { module: loaded.module, plan: loaded.plan.ptrs };
    });
  }

  /** Whether the package has this kernel's backward; `backwardWhy` says why not. */
  get hasBackward(): boolean {
    return !!(this.cuda.modules.backward && this.cuda.operations.backward);
  }

  /** A module, loaded with its plan uploaded on first use. */
  private module(name: string): LoadedModule {
    let m = this.modules.get(name);
    if (!m) {
      const spec = this.cuda.modules[name as "forward"];
      if (!spec) throw new Error(`kernel '${this.name}' has no ${name} module in this package`);
      const module = this.device.loadModule(loadImage(this.runtime, this.dir, spec, this.device.arch));
      const p = this.cuda.plans[name];
      const buffers: RuntimeBuffer[] = [];
      const ptrs: Record<string, bigint> = {};
      if (p) {
        const bytes = readFileSync(`${this.dir}/${p.file}`);
        const ints = new Int32Array(
          bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength),
        );
        let at = 0;
        for (const s of p.sections) {
          const b = this.device.fromHost(ints.slice(at, at + s.length), "i32");
          buffers.push(b);
          ptrs[s.name] = b.length ? b.ptr : 0n;
          at += s.length;
        }
      }
      m = { module, plan: { buffers, ptrs } };
      this.modules.set(name, m);
    }
    return m;
  }

  /** Batch, heads and kv heads of a call. */
  private callShape(o: CallShape): { batch: number; heads: number; kvHeads: number } {
    const s = this.shape;
    const batch = o.batch ?? s.batch;
    const heads = o.heads ?? s.heads;
    // The runtime checks them (positive integers, kv heads dividing heads).
    const kvHeads = o.kvHeads ?? (o.heads ? heads / (s.heads / s.kvHeads) : s.kvHeads);
    return { batch, heads, kvHeads };
  }

  run(
    q: RuntimeBuffer,
    k: RuntimeBuffer,
    v: RuntimeBuffer,
    out: RuntimeBuffer,
    options: CudaRunOptions = {},
  ): void {
    const call = { ...this.callShape(options), layout: options.layout, stream: options.stream };
    this.ops.forward(this.cuda.operations.forward, q, k, v, out, options.lse, call);
  }

  /**
   * Gradients of the attention: given the forward's q, k, v, out and lse (run's options.lse) and the
   * loss gradient dOut, writes dq (like q), dk and dv (like k, v: summed over each kv head's query
   * heads). Rows without an allowed key get zero gradients.
   */
  backward(
    q: RuntimeBuffer,
    k: RuntimeBuffer,
    v: RuntimeBuffer,
    out: RuntimeBuffer,
    lse: RuntimeBuffer,
    dOut: RuntimeBuffer,
    dq: RuntimeBuffer,
    dk: RuntimeBuffer,
    dv: RuntimeBuffer,
    options: CudaBackwardOptions = {},
  ): void {
    const op = options.deterministic
      ? this.cuda.operations.backwardDeterministic
      : this.cuda.operations.backward;
    if (!op || !this.cuda.modules.backward)
      throw new Error(
        `kernel '${this.name}' has no backward in this package: ${this.cuda.backwardWhy ?? "rebuild it with tilec build"}`,
      );
    const call = { ...this.callShape(options), layout: options.layout, stream: options.stream };
    this.ops.backward(op, q, k, v, out, lse, dOut, dq, dk, dv, call);
  }

  /** Releases plans, workspace and modules. */
  free(): void {
    for (const m of this.modules.values()) {
      for (const b of m.plan.buffers) b.free();
      m.module.unload();
    }
    this.modules.clear();
    this.ops.free();
  }
}

/** The cubin when it was built for this GPU, else the PTX (JIT-compiled by the driver), else NVRTC. */
function loadImage(runtime: CudaRuntime, dir: string, m: CudaModuleManifest, deviceArch: string): Uint8Array {
  const sameGpu = m.compileArch.replace(/a$/, "") === deviceArch;
  if (m.files.cubin && sameGpu) return readFileSync(`${dir}/${m.files.cubin}`);
  const ptxOk = m.files.ptx && (sameGpu || !m.compileArch.endsWith("a"));
  if (ptxOk) return readFileSync(`${dir}/${m.files.ptx!}`); // the runtime NUL-terminates PTX
  if (m.compileArch.endsWith("a") && !sameGpu)
    throw new Error(
      `${m.files.source} is ${m.compileArch} code (runs on ${m.compileArch.slice(0, -1)} only); this GPU is ${deviceArch}: rebuild with --arch`,
    );
  if (!runtime.compileNvrtc)
    throw new Error(`no binary of ${m.files.source} runs on ${deviceArch}, and the runtime offers no NVRTC`);
  const out = runtime.compileNvrtc(readFileSync(`${dir}/${m.files.source}`, "utf8"), {
    arch: m.compileArch.endsWith("a") ? m.compileArch : deviceArch,
    name: m.files.source,
    extraOptions: m.nvrtcOptions,
  });
  const image = out.cubin ?? out.ptx;
  if (!image) throw new Error(`NVRTC returned no code for ${m.files.source}`);
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
    if (this.manifest.format !== 2)
      throw new Error(`${this.dir}: package format ${this.manifest.format}, this loader reads 2: rebuild it`);
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

  /** The kernel a model section of the spec assigns to `layer` (at the model's step `step`). */
  kernelFor(layer: number, step?: number, model?: string): Name {
    const models = this.manifest.models ?? {};
    const m = model === undefined ? Object.values(models)[0] : models[model];
    if (!m) throw new Error(model === undefined ? "the spec has no model section" : `no model '${model}'`);
    return kernelFor(m, layer, step) as Name;
  }
}
