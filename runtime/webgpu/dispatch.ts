/// <reference types="@webgpu/types" />
// Compute shaders with their own bind-group layouts (the matrix product, the DiT's elementwise
// kernels), compiled once per device, source and entry point; and dispatches prepared once — bind
// group and uniform parameters fixed — so a forward pass only records them into a pass.
import { WebGpuError, WgslCompileError, formatCompilationMessages, type WebGpuDevice } from "./device.ts";

export type BindingType = "uniform" | "read-only-storage" | "storage";

export interface ComputeKernel {
  readonly label: string;
  readonly pipeline: GPUComputePipeline;
  readonly layout: GPUBindGroupLayout;
  readonly bindings: readonly BindingType[];
  /** The compiler's non-error messages, `label:line:col: type: text`. */
  readonly warnings: readonly string[];
}

const kernels = new WeakMap<WebGpuDevice, Map<string, Promise<ComputeKernel>>>();

/** Compiles `entry` of `source` with bindings 0… of the given types (group 0); cached per device. */
export function computeKernel(
  dev: WebGpuDevice,
  source: string,
  entry: string,
  bindings: readonly BindingType[],
  label = entry,
): Promise<ComputeKernel> {
  let cache = kernels.get(dev);
  if (!cache) kernels.set(dev, (cache = new Map()));
  const key = `${bindings.join(",")}\n${entry}\n${source}`;
  let p = cache.get(key);
  if (!p) {
    p = compile(dev, source, entry, bindings, label);
    cache.set(key, p);
    const c = cache;
    p.catch(() => c.delete(key)); // a failure is reported, not cached
  }
  return p;
}

async function compile(
  dev: WebGpuDevice,
  source: string,
  entry: string,
  bindings: readonly BindingType[],
  label: string,
): Promise<ComputeKernel> {
  return dev.scoped(`compiling ${label}`, async () => {
    const d = dev.device;
    const module = d.createShaderModule({ label, code: source });
    const info = await module.getCompilationInfo();
    const errors = info.messages.filter((m) => m.type === "error");
    if (errors.length) throw new WgslCompileError(label, formatCompilationMessages(errors, source, label));
    const layout = d.createBindGroupLayout({
      label,
      entries: bindings.map((type, binding) => ({
        binding,
        visibility: GPUShaderStage.COMPUTE,
        buffer: { type },
      })),
    });
    const pipeline = await d.createComputePipelineAsync({
      label,
      layout: d.createPipelineLayout({ bindGroupLayouts: [layout] }),
      compute: { module, entryPoint: entry },
    });
    const warnings = formatCompilationMessages(
      info.messages.filter((m) => m.type !== "error"),
      source,
      label,
    );
    return { label, pipeline, layout, bindings, warnings };
  });
}

/** One dispatch with its bind group and uniform parameters fixed; record it any number of times. */
export class PreparedDispatch {
  constructor(
    readonly kernel: ComputeKernel,
    private readonly group: GPUBindGroup,
    readonly grid: readonly [number, number, number],
    private readonly params: GPUBuffer | undefined,
  ) {}

  encode(pass: GPUComputePassEncoder): void {
    pass.setPipeline(this.kernel.pipeline);
    pass.setBindGroup(0, this.group);
    pass.dispatchWorkgroups(this.grid[0], this.grid[1], this.grid[2]);
  }

  /** Releases the uniform buffer (the bound tensors belong to the caller). */
  destroy(): void {
    this.params?.destroy();
  }
}

/**
 * Binds `buffers` (after the uniform block made from `params`, when binding 0 is a uniform) and checks
 * the grid and buffer sizes against the device's limits, naming the limit a call would break.
 */
export function prepareDispatch(
  dev: WebGpuDevice,
  kernel: ComputeKernel,
  params: ArrayBuffer | undefined,
  buffers: readonly GPUBuffer[],
  grid: readonly [number, number, number],
): PreparedDispatch {
  dev.ensureAlive();
  const limits = dev.caps.limits;
  grid.forEach((g, i) => {
    if (g > limits.maxComputeWorkgroupsPerDimension)
      throw new WebGpuError(
        `${kernel.label}: ${g} workgroups along ${"xyz"[i]}, more than maxComputeWorkgroupsPerDimension (${limits.maxComputeWorkgroupsPerDimension}); split the call`,
      );
  });
  for (const b of buffers)
    if (b.size > limits.maxStorageBufferBindingSize)
      throw new WebGpuError(
        `${kernel.label}: a ${b.size}-byte buffer exceeds maxStorageBufferBindingSize (${limits.maxStorageBufferBindingSize})`,
      );
  const withUniform = kernel.bindings[0] === "uniform";
  if (withUniform !== (params !== undefined))
    throw new TypeError(
      `${kernel.label}: parameters given ${params ? "to a kernel without" : "without"} a uniform block`,
    );
  if (buffers.length + (withUniform ? 1 : 0) !== kernel.bindings.length)
    throw new TypeError(
      `${kernel.label} binds ${kernel.bindings.length} buffers, ${buffers.length + (withUniform ? 1 : 0)} given`,
    );
  let uniform: GPUBuffer | undefined;
  if (params) {
    uniform = dev.device.createBuffer({
      label: `${kernel.label} params`,
      size: Math.ceil(params.byteLength / 16) * 16,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
      mappedAtCreation: true,
    });
    new Uint8Array(uniform.getMappedRange()).set(new Uint8Array(params));
    uniform.unmap();
  }
  const all = uniform ? [uniform, ...buffers] : buffers;
  const group = dev.device.createBindGroup({
    label: kernel.label,
    layout: kernel.layout,
    entries: all.map((buffer, binding) => ({ binding, resource: { buffer } })),
  });
  return new PreparedDispatch(kernel, group, grid, uniform);
}

/** Records the dispatches into one compute pass and submits it (validation errors become exceptions). */
export async function submitDispatches(
  dev: WebGpuDevice,
  list: readonly PreparedDispatch[],
  what = "dispatching",
): Promise<void> {
  await dev.scoped(what, () => {
    const enc = dev.device.createCommandEncoder();
    const pass = enc.beginComputePass();
    for (const d of list) d.encode(pass);
    pass.end();
    dev.device.queue.submit([enc.finish()]);
  });
}
