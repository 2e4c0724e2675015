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
import { CUDA_ARCHS, type CudaArch } from "../backends/cuda/target.ts";
import type { CheckedSpec } from "../compiler/check.ts";
import type { KernelConfig, KernelIR } from "../compiler/lower.ts";
import { lowerBackward, type BackwardConfig, type BackwardIR } from "../compiler/lowerBackward.ts";
import { kernelIR } from "../compiler/pipeline.ts";
import { tunedCudaCompile } from "../tune/apply.ts";
import { CudaDevice, DeviceBuffer, type CudaModule, type Stream } from "./cuda/device.ts";
import { KernelOperations, type LoadedModule } from "./cuda/operations.ts";
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
  private readonly bwdPlan?: { buffers: DeviceBuffer<"i32">[]; ptrs: Record<string, bigint> };
  /** Validation, workspace and launches of every operation (shared with the packaged loader). */
  private readonly ops: KernelOperations;

  constructor(
    readonly ir: KernelIR,
    readonly compiled: CudaKernelSource,
    private readonly module: CudaModule,
    device: CudaDevice,
    readonly backwardCompiled?: CompiledBackward,
  ) {
    this.plan = uploadPlan(device, planSections(ir));
    if (backwardCompiled) this.bwdPlan = uploadPlan(device, backwardPlanSections(backwardCompiled.ir));
    const modules: Record<string, LoadedModule> = {
      forward: { module, plan: this.plan.ptrs },
      ...(backwardCompiled && this.bwdPlan
        ? { backward: { module: backwardCompiled.module, plan: this.bwdPlan.ptrs } }
        : {}),
    };
    this.ops = new KernelOperations(ir, device, (name) => {
      const m = modules[name];
      if (!m) throw new Error(`kernel '${ir.name}' has no ${name} module`);
      return m;
    });
  }

  /** The kernel's own batch and heads, and the call's layout and stream. */
  private call(options: { layout?: TensorLayout; stream?: Stream | null }) {
    const { batch, heads, kvHeads } = this.ir;
    return { batch, heads, kvHeads, layout: options.layout, stream: options.stream };
  }

  run(q: DeviceBuffer, k: DeviceBuffer, v: DeviceBuffer, out: DeviceBuffer, options: RunOptions = {}): void {
    const op = { launches: [this.compiled.launchDescription], workspace: [] };
    this.ops.forward(op, q, k, v, out, options.lse, this.call(options));
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
    if (!bwd)
      throw new Error(
        `kernel '${this.ir.name}' was compiled without its backward: compile(..., { backward: true })`,
      );
    const ops = bwd.source.operations;
    const op = options.deterministic ? ops.backwardDeterministic : ops.backward;
    this.ops.backward(op, q, k, v, out, lse, dOut, dq, dk, dv, this.call(options));
  }

  /** Releases the plan buffers, workspace and modules; idempotent. */
  free(): void {
    for (const b of this.plan.buffers) b.free();
    for (const b of this.bwdPlan?.buffers ?? []) b.free();
    this.ops.free();
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
