/// <reference types="@webgpu/types" />
// The WebGPU counterpart of runtime/attention.ts:
//   const attn = await compileWgsl(spec, { kernel: "tile_2_6", device });
//   await attn.run(q, k, v, out, { lse });
// Compiles a spec's kernel through the pipeline (plan → IR → WGSL → pipeline, cached per device),
// uploads the packed plan once, and dispatches with strides for [batch, seq, heads, dim] or
// [batch, heads, seq, dim] tensors. Bundles for a browser (the Node device comes from node.ts).
import {
  emitWgsl,
  packParams,
  packPlan,
  PARAMS_BYTES,
  type TensorLayout,
  type WgslEmitOptions,
  type WgslKernelSource,
} from "../../backends/wgsl/emit.ts";
import { bufferProblems } from "../../backends/wgsl/target.ts";
import type { CheckedSpec, KernelSpec } from "../../compiler/check.ts";
import type { KernelConfig, KernelIR } from "../../compiler/lower.ts";
import { kernelIR } from "../../compiler/pipeline.ts";
import { WebGpuDevice, WebGpuError, type CompiledShader, type GpuTensor } from "./device.ts";

export interface WgslCompileOptions extends WgslEmitOptions {
  /** Default: a device from navigator.gpu (browsers); in Node pass openNodeDevice() from node.ts. */
  readonly device?: WebGpuDevice;
  /** Which kernel of the spec; required when the spec has more than one. */
  readonly kernel?: string;
  readonly config?: KernelConfig;
  readonly file?: string;
}

export interface WgslRunOptions {
  /** float32 [batch, heads, seq], natural log, -inf for rows without any allowed key. */
  readonly lse?: GpuTensor;
  readonly layout?: TensorLayout;
}

export interface WgslTiming {
  /** GPU time of each timed dispatch, nanoseconds, from timestamp queries. */
  readonly ns: number[];
  readonly medianNs: number;
}

export class WgslAttention {
  private readonly plan: GPUBuffer;
  private readonly planBase: readonly number[];
  private readonly params: GPUBuffer;
  private readonly dummyLse: GPUBuffer;
  private lastParams = "";

  constructor(
    readonly kernel: KernelSpec,
    readonly ir: KernelIR,
    readonly compiled: WgslKernelSource,
    private readonly shader: CompiledShader,
    readonly device: WebGpuDevice,
  ) {
    const packed = packPlan(ir.plan);
    this.plan = device.storageBuffer(packed.data, `${ir.name} plan`);
    this.planBase = packed.base;
    this.params = device.device.createBuffer({
      label: `${ir.name} params`,
      size: PARAMS_BYTES,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    });
    this.dummyLse = device.storageBuffer(new Uint32Array(1), "no lse");
  }

  /** Checks the tensors and returns the bind group of one call (parameters written if changed). */
  private bind(q: GpuTensor, k: GpuTensor, v: GpuTensor, out: GpuTensor, o: WgslRunOptions): GPUBindGroup {
    const { batch, seqLen, heads, kvHeads, headDim, name } = this.ir;
    const want = (t: GpuTensor, h: number, what: string) => {
      const n = batch * seqLen * h * headDim;
      if (t.storage !== this.compiled.storage)
        throw new TypeError(
          `${what} holds ${t.storage}, but kernel '${name}' reads ${this.compiled.storage}`,
        );
      if (t.length < n)
        throw new RangeError(
          `${what} holds ${t.length} elements, needs ${n} (${batch}×${seqLen}×${h}×${headDim})`,
        );
    };
    want(q, heads, "q");
    want(k, kvHeads, "k");
    want(v, kvHeads, "v");
    want(out, heads, "out");
    if (o.lse && (o.lse.storage !== "f32" || o.lse.length < batch * heads * seqLen))
      throw new RangeError(`lse must be f32 with ${batch * heads * seqLen} elements`);
    const params = packParams(this.ir, { layout: o.layout, lse: !!o.lse, planBase: this.planBase });
    const key = Array.from(new Uint32Array(params)).join(",");
    if (key !== this.lastParams) {
      this.device.device.queue.writeBuffer(this.params, 0, params);
      this.lastParams = key;
    }
    const buffers = [
      this.params,
      q.buffer,
      k.buffer,
      v.buffer,
      out.buffer,
      o.lse?.buffer ?? this.dummyLse,
      this.plan,
    ];
    return this.device.device.createBindGroup({
      layout: this.device.bindGroupLayout,
      entries: buffers.map((buffer, binding) => ({ binding, resource: { buffer } })),
    });
  }

  private dispatch(pass: GPUComputePassEncoder, group: GPUBindGroup): void {
    pass.setPipeline(this.shader.pipeline);
    pass.setBindGroup(0, group);
    const [x, y, z] = this.compiled.dispatch;
    pass.dispatchWorkgroups(x, y, z);
  }

  /** Records one call into the caller's compute pass (e.g. between a model's other kernels). */
  encode(
    pass: GPUComputePassEncoder,
    q: GpuTensor,
    k: GpuTensor,
    v: GpuTensor,
    out: GpuTensor,
    options: WgslRunOptions = {},
  ): void {
    this.dispatch(pass, this.bind(q, k, v, out, options));
  }

  /** One attention call; resolves once it is submitted and validated (not when the GPU is done). */
  async run(
    q: GpuTensor,
    k: GpuTensor,
    v: GpuTensor,
    out: GpuTensor,
    options: WgslRunOptions = {},
  ): Promise<void> {
    const d = this.device;
    await d.scoped(`running ${this.ir.name}`, () => {
      const group = this.bind(q, k, v, out, options);
      const enc = d.device.createCommandEncoder();
      const pass = enc.beginComputePass();
      this.dispatch(pass, group);
      pass.end();
      d.device.queue.submit([enc.finish()]);
    });
  }

  /**
   * `warmup` untimed then `reps` timed calls in one submission, each in its own compute pass with
   * begin/end timestamps; needs the `timestamp-query` feature.
   */
  async time(
    q: GpuTensor,
    k: GpuTensor,
    v: GpuTensor,
    out: GpuTensor,
    options: WgslRunOptions & { reps?: number; warmup?: number } = {},
  ): Promise<WgslTiming> {
    const d = this.device;
    const group = await d.scoped(`binding ${this.ir.name}`, () => this.bind(q, k, v, out, options));
    return d.timePasses((pass) => this.dispatch(pass, group), {
      reps: options.reps ?? 10,
      warmup: options.warmup ?? 2,
      label: `timing ${this.ir.name}`,
    });
  }

  /** Waits until the GPU has finished everything submitted so far. */
  async finish(): Promise<void> {
    await this.device.device.queue.onSubmittedWorkDone();
    this.device.ensureAlive();
  }

  /** Releases the plan and parameter buffers; the pipeline stays cached on the device. */
  free(): void {
    this.plan.destroy();
    this.params.destroy();
    this.dummyLse.destroy();
  }
}

export { kernelIR };

let browserDevice: Promise<WebGpuDevice> | undefined;

/** The device of navigator.gpu's default adapter, requested once. */
export function defaultDevice(): Promise<WebGpuDevice> {
  const gpu = (globalThis as { navigator?: { gpu?: GPU } }).navigator?.gpu;
  if (!gpu)
    return Promise.reject(
      new WebGpuError(
        "no navigator.gpu here: pass { device } (in Node: openNodeDevice() from runtime/webgpu/node.ts)",
      ),
    );
  browserDevice ??= gpu.requestAdapter({ powerPreference: "high-performance" }).then((a) => {
    if (!a) throw new WebGpuError("navigator.gpu offers no adapter");
    return WebGpuDevice.fromAdapter(a);
  });
  return browserDevice;
}

/** Compiles one kernel of a spec (text or checked) for a WebGPU device. */
export async function compileWgsl(
  spec: string | CheckedSpec,
  options: WgslCompileOptions = {},
): Promise<WgslAttention> {
  const device = options.device ?? (await defaultDevice());
  const { kernel, ir } = kernelIR(spec, options);
  const src = emitWgsl(ir, device.caps, options);
  const problems = bufferProblems(ir, device.caps.limits, src.storage);
  if (problems.length) throw new WebGpuError(`kernel '${ir.name}': ${problems.join("; ")}`);
  const shader = await device.shader(src.source, src.entry, `${ir.entry}.wgsl`);
  return new WgslAttention(kernel, ir, src, shader, device);
}
