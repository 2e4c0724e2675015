/// <reference types="@webgpu/types" />
// The WGSL tiled matrix product on a WebGPU device:
//   const mm = await WgslMatmul.create(device, { storage: "f32", transB: true });
//   await mm.run({ m, n, k, a: { tensor: x, ld: k }, b: { tensor: w, ld: k }, c: { tensor: y, ld: n }, bias, activation: "silu" });
// One pipeline per shape class (storage, B orientation, tiling; cached on the device), every size,
// stride and epilogue switch in a uniform block; `prepare` fixes one call's bind group for recording
// many times.
import {
  emitMatmul,
  matmulGrid,
  MATMUL_BINDINGS,
  packMatmulParams,
  type MatmulCall,
  type MatmulKernelSource,
  type MatmulOperand,
  type MatmulShapeClass,
  type MatmulTiling,
} from "../../backends/wgsl/matmul.ts";
import {
  computeKernel,
  prepareDispatch,
  submitDispatches,
  type ComputeKernel,
  type PreparedDispatch,
} from "./dispatch.ts";
import type { GpuTensor, WebGpuDevice } from "./device.ts";

export interface TensorOperand extends MatmulOperand {
  readonly tensor: GpuTensor;
}

export interface MatmulRun extends Omit<MatmulCall, "a" | "b" | "c" | "hasBias"> {
  readonly a: TensorOperand;
  readonly b: TensorOperand;
  readonly c: TensorOperand;
  readonly bias?: GpuTensor;
}

export class WgslMatmul {
  private constructor(
    readonly device: WebGpuDevice,
    readonly shape: MatmulShapeClass,
    readonly source: MatmulKernelSource,
    readonly kernel: ComputeKernel,
  ) {}

  static async create(
    dev: WebGpuDevice,
    shape: MatmulShapeClass,
    tiling?: MatmulTiling,
  ): Promise<WgslMatmul> {
    const src = emitMatmul(shape, dev.caps, tiling);
    const kernel = await computeKernel(dev, src.source, src.entry, MATMUL_BINDINGS, `${src.entry}.wgsl`);
    return new WgslMatmul(dev, shape, src, kernel);
  }

  /** Checks the call against its tensors and fixes its bind group and parameters. */
  prepare(call: MatmulRun): PreparedDispatch {
    const { m, n, k } = call;
    for (const [v, name] of [
      [m, "m"],
      [n, "n"],
      [k, "k"],
    ] as const)
      if (!Number.isInteger(v) || v < 1)
        throw new RangeError(`matmul ${name} must be a positive integer, got ${v}`);
    const [outer, inner] = call.batch ?? [1, 1];
    const storage = this.shape.storage;
    const check = (o: TensorOperand, name: string, rows: number, cols: number) => {
      if (o.tensor.storage !== storage)
        throw new TypeError(`matmul ${name} holds ${o.tensor.storage}, the kernel reads ${storage}`);
      if (o.ld < cols) throw new RangeError(`matmul ${name}: leading dimension ${o.ld} < ${cols} columns`);
      const [so, si] = o.stride ?? [0, 0];
      const last = (o.offset ?? 0) + (outer - 1) * so + (inner - 1) * si + (rows - 1) * o.ld + cols;
      if (last > o.tensor.length)
        throw new RangeError(
          `matmul ${name} [${rows}, ${cols}] (ld ${o.ld}, offset ${o.offset ?? 0}, batch ${outer}×${inner}) reaches element ${last}, the tensor holds ${o.tensor.length}`,
        );
    };
    check(call.a, "A", m, k);
    if (this.shape.transB) check(call.b, "B", n, k);
    else check(call.b, "B", k, n);
    check(call.c, "C", m, n);
    if (call.bias) {
      if (call.bias.storage !== storage)
        throw new TypeError(`matmul bias holds ${call.bias.storage}, the kernel reads ${storage}`);
      if ((call.biasOffset ?? 0) + n > call.bias.length)
        throw new RangeError(
          `matmul bias holds ${call.bias.length} values, needs ${(call.biasOffset ?? 0) + n}`,
        );
    }
    for (const [o, name] of [
      [call.a, "A"],
      [call.b, "B"],
    ] as const)
      if (o.tensor.buffer === call.c.tensor.buffer)
        throw new RangeError(
          `matmul ${name} and C share a buffer: WebGPU cannot bind it read-only and writable at once`,
        );
    const params = packMatmulParams({ ...call, hasBias: !!call.bias });
    // Without a bias, A's buffer fills the binding (never read: has_bias = 0).
    const buffers = [
      call.a.tensor.buffer,
      call.b.tensor.buffer,
      (call.bias ?? call.a.tensor).buffer,
      call.c.tensor.buffer,
    ];
    return prepareDispatch(this.device, this.kernel, params, buffers, matmulGrid(call, this.source));
  }

  /** One product, submitted (resolves when validated, not when the GPU is done). */
  async run(call: MatmulRun): Promise<void> {
    const d = this.prepare(call);
    try {
      await submitDispatches(this.device, [d], `running ${this.source.entry}`);
    } finally {
      d.destroy();
    }
  }
}
