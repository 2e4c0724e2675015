// The user-facing call: `const attn = await compile(spec, { target: "cuda" }); attn.run(q, k, v, out)`,
// and for training `attn.backward(q, k, v, out, lse, dOut, dq, dk, dv)` (compile with backward: true).
// Compiles a spec's kernel through the pipeline (plan → IR → CUDA source → NVRTC, disk-cached), uploads
// the plans' lists once, and launches every kernel from its launch description (backends/cuda/launch.ts)
// with strides for [batch, seq, heads, dim] or [batch, heads, seq, dim] tensors.
import { emitCuda, planSections, type CudaKernelSource } from "../backends/cuda/emit.ts";
import {
  backwardPlanSections,
  emitCudaBackward,
  type CudaBackwardSource,
} from "../backends/cuda/emitBackward.ts";
import type { LaunchDescription, Operation } from "../backends/cuda/launch.ts";
import type { TensorRole } from "../backends/cuda/params.ts";
import { CUDA_ARCHS, type CudaArch } from "../backends/cuda/target.ts";
import type { CheckedSpec } from "../compiler/check.ts";
import type { KernelConfig, KernelIR } from "../compiler/lower.ts";
import { lowerBackward, type BackwardConfig, type BackwardIR } from "../compiler/lowerBackward.ts";
import { kernelIR } from "../compiler/pipeline.ts";
import { tunedCudaCompile } from "../tune/apply.ts";
import { CudaDevice, DeviceBuffer, type CudaKernel, type CudaModule, type Stream } from "./cuda/device.ts";
import { contiguousStrides, packLaunch, type BoundTensor, type EncodeTensorMap } from "./cuda/launch.ts";
import { compileNvrtcCachedAsync } from "./cuda/nvrtcCache.ts";

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
  /** Also compile the backward kernels (attn.backward). */
  readonly backward?: boolean;
  /** The backward's configuration (default: defaultBackwardConfig for the device). */
  readonly backwardConfig?: BackwardConfig;
}

export type TensorLayout = "bshd" | "bhsd";

export interface RunOptions {
  /** float32 [batch, heads, seq]; written when given (the backward needs it). */
  readonly lse?: DeviceBuffer<"fp32">;
  /** Memory order of q, k, v and out (default [batch, seq, heads, dim]). */
  readonly layout?: TensorLayout;
  readonly stream?: Stream | null;
}

export interface BackwardOptions {
  /** Memory order of every [batch, seq, heads, dim] tensor of the call (default "bshd"). */
  readonly layout?: TensorLayout;
  readonly stream?: Stream | null;
  /**
   * Bit-identical gradients run to run: dQ by its own query-major pass instead of fp32 atomics in
   * the dK/dV pass (about 1.4× the tensor work of the default).
   */
  readonly deterministic?: boolean;
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

/** A compiled backward: its IR, source, module and plan sections on the device. */
export interface CompiledBackward {
  readonly ir: BackwardIR;
  readonly source: CudaBackwardSource;
  readonly module: CudaModule;
}

/** Device addresses of plan sections, uploaded once per kernel. */
function uploadPlan(device: CudaDevice, sections: { name: string; data: Int32Array }[]) {
  const buffers = sections.map((s) => device.fromHost(s.data, "i32"));
  const ptrs: Record<string, bigint> = {};
  sections.forEach((s, i) => (ptrs[s.name] = buffers[i]!.length ? buffers[i]!.ptr : 0n));
  return { buffers, ptrs };
}

export class CudaAttention {
  private readonly plan: { buffers: DeviceBuffer<"i32">[]; ptrs: Record<string, bigint> };
  private readonly kernels = new Map<string, CudaKernel>();
  private readonly bwdPlan?: { buffers: DeviceBuffer<"i32">[]; ptrs: Record<string, bigint> };
  /** Backward workspace (fp32), kept between calls while batch and heads stay the same. */
  private workspace?: { key: string; buffers: Map<TensorRole, DeviceBuffer<"fp32">> };
  /** TMA descriptors already encoded, by address and arguments (a driver call each otherwise). */
  private readonly maps = new Map<string, Uint8Array>();

  constructor(
    readonly ir: KernelIR,
    readonly compiled: CudaKernelSource,
    private readonly module: CudaModule,
    private readonly device: CudaDevice,
    readonly backwardCompiled?: CompiledBackward,
  ) {
    this.plan = uploadPlan(device, planSections(ir));
    if (backwardCompiled) this.bwdPlan = uploadPlan(device, backwardPlanSections(backwardCompiled.ir));
  }

  /** Checks a [batch, seq, heads, dim] tensor of the call against the kernel; throws naming it. */
  private check(b: DeviceBuffer, heads: number, name: string): void {
    const { batch, seqLen, headDim, dtype } = this.ir;
    const n = batch * seqLen * heads * headDim;
    if (!(b instanceof DeviceBuffer)) throw new TypeError(`${name} must be a DeviceBuffer`);
    if (b.dtype !== dtype)
      throw new TypeError(`${name} is ${b.dtype}, but kernel '${this.ir.name}' takes ${dtype}`);
    if (b.length < n)
      throw new RangeError(
        `${name} holds ${b.length} elements, needs ${n} ([${batch}, ${seqLen}, ${heads}, ${headDim}] or its bhsd order)`,
      );
    if (b.ptr % 16n !== 0n) throw new RangeError(`${name} is not 16-byte aligned`);
  }

  /** Outputs must not share memory with each other or with the inputs. */
  private static checkDisjoint(outputs: [string, DeviceBuffer][], all: [string, DeviceBuffer][]): void {
    for (const [on, o] of outputs)
      for (const [an, a] of all) {
        if (on === an) continue;
        const overlap = o.ptr < a.ptr + BigInt(a.bytes) && a.ptr < o.ptr + BigInt(o.bytes);
        if (overlap) throw new RangeError(`${on} overlaps ${an}: outputs need memory of their own`);
      }
  }

  private bound(b: DeviceBuffer, heads: number, layout: TensorLayout): BoundTensor {
    return { ptr: b.ptr, heads, strides: contiguousStrides(this.ir.seqLen, heads, this.ir.headDim, layout) };
  }

  private encode: EncodeTensorMap = (address, args) => {
    const key = `${address}:${JSON.stringify(args)}`;
    let bytes = this.maps.get(key);
    if (!bytes) {
      if (this.maps.size > 256) this.maps.clear();
      bytes = this.device.encodeTensorMap(address, args);
      this.maps.set(key, bytes);
    }
    return bytes;
  };

  private launch(
    module: CudaModule,
    d: LaunchDescription,
    tensors: Partial<Record<TensorRole, BoundTensor>>,
    plan: Record<string, bigint>,
    stream: Stream | null,
  ): void {
    const { batch, heads, kvHeads, seqLen, headDim } = this.ir;
    const packed = packLaunch(d, { tensors, plan, batch, heads, kvHeads, seqLen, headDim }, this.encode);
    let k = this.kernels.get(d.entry);
    if (!k) {
      k = module.getKernel(d.entry);
      this.kernels.set(d.entry, k);
    }
    k.launch(
      { grid: packed.grid, block: packed.block, sharedBytes: packed.sharedBytes, stream },
      packed.args,
    );
  }

  run(q: DeviceBuffer, k: DeviceBuffer, v: DeviceBuffer, out: DeviceBuffer, options: RunOptions = {}): void {
    const { batch, seqLen, heads, kvHeads } = this.ir;
    this.check(q, heads, "q");
    this.check(k, kvHeads, "k");
    this.check(v, kvHeads, "v");
    this.check(out, heads, "out");
    const lse = options.lse;
    if (lse && (lse.dtype !== "fp32" || lse.length < batch * heads * seqLen))
      throw new RangeError(
        `lse must be fp32 [${batch}, ${heads}, ${seqLen}] (${batch * heads * seqLen} floats)`,
      );
    const named: [string, DeviceBuffer][] = [
      ["q", q],
      ["k", k],
      ["v", v],
      ["out", out],
    ];
    CudaAttention.checkDisjoint(
      lse
        ? [
            ["out", out],
            ["lse", lse],
          ]
        : [["out", out]],
      lse ? [...named, ["lse", lse]] : named,
    );
    const layout = options.layout ?? "bshd";
    const tensors: Partial<Record<TensorRole, BoundTensor>> = {
      q: this.bound(q, heads, layout),
      k: this.bound(k, kvHeads, layout),
      v: this.bound(v, kvHeads, layout),
      o: this.bound(out, heads, layout),
      ...(lse ? { lse: { ptr: lse.ptr } } : {}),
    };
    this.launch(
      this.module,
      this.compiled.launchDescription,
      tensors,
      this.plan.ptrs,
      options.stream ?? null,
    );
  }

  /**
   * Gradients of the attention: given the forward's q, k, v, out and lse (run's options.lse) and the
   * loss gradient dOut, writes dq (like q), dk and dv (like k, v: summed over each kv head's query
   * heads). Rows without an allowed key get zero gradients.
   */
  backward(
    q: DeviceBuffer,
    k: DeviceBuffer,
    v: DeviceBuffer,
    out: DeviceBuffer,
    lse: DeviceBuffer<"fp32">,
    dOut: DeviceBuffer,
    dq: DeviceBuffer,
    dk: DeviceBuffer,
    dv: DeviceBuffer,
    options: BackwardOptions = {},
  ): void {
    const bwd = this.backwardCompiled;
    if (!bwd || !this.bwdPlan)
      throw new Error(
        `kernel '${this.ir.name}' was compiled without its backward: compile(..., { backward: true })`,
      );
    const { batch, seqLen, heads, kvHeads } = this.ir;
    const named: [string, DeviceBuffer, number][] = [
      ["q", q, heads],
      ["k", k, kvHeads],
      ["v", v, kvHeads],
      ["out", out, heads],
      ["dOut", dOut, heads],
      ["dq", dq, heads],
      ["dk", dk, kvHeads],
      ["dv", dv, kvHeads],
    ];
    for (const [name, b, h] of named) this.check(b, h, name);
    if (!(lse instanceof DeviceBuffer) || lse.dtype !== "fp32" || lse.length < batch * heads * seqLen)
      throw new RangeError(
        `lse must be the forward's fp32 [${batch}, ${heads}, ${seqLen}] log-sum-exp (${batch * heads * seqLen} floats)`,
      );
    const all: [string, DeviceBuffer][] = [
      ...named.map(([n, b]) => [n, b] as [string, DeviceBuffer]),
      ["lse", lse],
    ];
    CudaAttention.checkDisjoint(
      [
        ["dq", dq],
        ["dk", dk],
        ["dv", dv],
      ],
      all,
    );
    const layout = options.layout ?? "bshd";
    const op: Operation = options.deterministic
      ? bwd.source.operations.backwardDeterministic
      : bwd.source.operations.backward;
    const tensors: Partial<Record<TensorRole, BoundTensor>> = {
      q: this.bound(q, heads, layout),
      k: this.bound(k, kvHeads, layout),
      v: this.bound(v, kvHeads, layout),
      o: this.bound(out, heads, layout),
      do: this.bound(dOut, heads, layout),
      dq: this.bound(dq, heads, layout),
      dk: this.bound(dk, kvHeads, layout),
      dv: this.bound(dv, kvHeads, layout),
      lse: { ptr: lse.ptr },
    };
    for (const w of op.workspace)
      tensors[w.tensor] = { ptr: this.workspaceBuffer(w.tensor, w.elementsPerHead).ptr };
    for (const d of op.launches)
      this.launch(bwd.module, d, tensors, this.bwdPlan.ptrs, options.stream ?? null);
  }

  private workspaceBuffer(tensor: TensorRole, elementsPerHead: number): DeviceBuffer<"fp32"> {
    const key = `${this.ir.batch}x${this.ir.heads}`;
    if (this.workspace?.key !== key) {
      for (const b of this.workspace?.buffers.values() ?? []) b.free();
      this.workspace = { key, buffers: new Map() };
    }
    let b = this.workspace.buffers.get(tensor);
    const n = this.ir.batch * this.ir.heads * elementsPerHead;
    if (!b || b.length < n) {
      b?.free();
      b = this.device.allocElements("fp32", n);
      this.workspace.buffers.set(tensor, b);
    }
    return b;
  }

  /** Releases the plan buffers, workspace and modules; idempotent. */
  free(): void {
    for (const b of this.plan.buffers) b.free();
    for (const b of this.bwdPlan?.buffers ?? []) b.free();
    for (const b of this.workspace?.buffers.values() ?? []) b.free();
    this.workspace = undefined;
    this.module.unload();
    this.backwardCompiled?.module.unload();
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
  const nvrtc = (source: string, compileArch: string, name: string) =>
    compileNvrtcCachedAsync(source, {
      arch: compileArch.endsWith("a") ? compileArch : device.arch,
      name,
      cacheDir: options.cacheDir,
      extraOptions: NVRTC_OPTIONS,
    }).then((out) => {
      const image = out.cubin ?? out.ptx;
      if (!image) throw new Error(`NVRTC returned no code for ${name}`);
      return device.loadModule(image);
    });
  let backward: CompiledBackward | undefined;
  if (options.backward) {
    const bir = lowerBackward(ir, device.arch === "sm_90" ? arch : undefined, options.backwardConfig);
    const bsrc = emitCudaBackward(bir, arch);
    backward = {
      ir: bir,
      source: bsrc,
      module: await nvrtc(bsrc.source, bsrc.compileArch, `${bir.entry}.cu`),
    };
  }
  const module = await nvrtc(
    src.source,
    src.template === "sm90" ? src.compileArch : device.arch,
    `${ir.entry}.cu`,
  );
  return new CudaAttention(ir, src, module, device, backward);
}
