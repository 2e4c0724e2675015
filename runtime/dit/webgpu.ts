/// <reference types="@webgpu/types" />
// The DiT forward on WebGPU — the same model as cuda.ts, f32 throughout: matrix products on the WGSL
// tiled matmul (bias, SiLU/GELU-tanh and the ungated residual add in its epilogue), self-attention
// through tilec's WGSL attention kernel per layer (and step) from the spec's model section,
// cross-attention as batched matmul + masked softmax + matmul, the rest in kernels/dit.wgsl.ts.
// Every dispatch but the two that bind the caller's latent and output is prepared once (bind group
// and uniform block fixed); a forward records them all into one compute pass and submits once.
//
//   const dit = await WebGpuDit.create(config, { device, spec, model: "osp29_example", latent, textTokens });
//   dit.loadWeights(safetensorsWeights(path));
//   await dit.encodeText(textEmbeddings, validTokens);   // caption projection + every block's K/V
//   await dit.forward(latent, timesteps, out, { step, steps });
import { kernelFor, type CheckedSpec, type ModelSpec } from "../../compiler/check.ts";
import type { MatmulTiling } from "../../backends/wgsl/matmul.ts";
import { randomArray } from "../reference.ts";
import { compileWgsl, type WgslAttention } from "../webgpu/attention.ts";
import type { GpuTensor, WebGpuDevice } from "../webgpu/device.ts";
import { computeKernel, submitDispatches, type ComputeKernel } from "../webgpu/dispatch.ts";
import { WgslMatmul } from "../webgpu/matmul.ts";
import { tokenGrid, type DitConfig } from "./config.ts";
import { ditKernels, layerKernel, modelStep } from "./specKernels.ts";
import * as K from "./kernels/dit.wgsl.ts";
import { timestepFeatures } from "./math.ts";
import { validateWeights, weightSpecs, type WeightSource } from "./weights.ts";
import {
  allocWebGpuActivations,
  allocWebGpuWeights,
  flatDispatch,
  uniformBlock,
  type WebGpuActivations,
  type WebGpuWeights,
} from "./webgpuBuffers.ts";
import { ForwardPlan, type Matmuls } from "./webgpuPlan.ts";

export interface WebGpuDitOptions {
  readonly device: WebGpuDevice;
  /** A .tile spec (text or checked) whose kernels share the DiT's token layout (any dtype: run as f32). */
  readonly spec: string | CheckedSpec;
  /** The model section assigning kernels per layer (and step range); omit to use `kernel` everywhere. */
  readonly model?: string;
  readonly kernel?: string;
  readonly latent: { readonly frames: number; readonly height: number; readonly width: number };
  readonly textTokens: number;
  /** The matmul's tiling (default: the best the adapter's limits allow). */
  readonly matmulTiling?: MatmulTiling;
}

export interface WebGpuForwardOptions {
  /** Sampler step and the sampler's step count: map to the model section's steps proportionally. */
  readonly step?: number;
  readonly steps?: number;
  /** Timestamps at the beginning and end of the forward's compute pass (benchmarks). */
  readonly timestampWrites?: GPUComputePassTimestampWrites;
}

export class WebGpuDit {
  readonly batch: number;
  readonly tokens: number;
  readonly grid: { frames: number; height: number; width: number };
  private readonly weights: WebGpuWeights;
  private readonly acts: WebGpuActivations;
  private readonly kv: { k: GpuTensor; v: GpuTensor }[];
  private readonly valid: GPUBuffer;
  private readonly plan: ForwardPlan;
  private textEncoded = false;

  private constructor(
    readonly config: DitConfig,
    readonly options: WebGpuDitOptions,
    private readonly model: ModelSpec | undefined,
    private readonly attn: ReadonlyMap<string, WgslAttention>,
    mm: Matmuls,
    private readonly kernels: Record<string, ComputeKernel>,
    batch: number,
  ) {
    const dev = options.device;
    const g = tokenGrid(config, options.latent);
    this.grid = { frames: g.frames, height: g.height, width: g.width };
    this.tokens = g.tokens;
    this.batch = batch;
    this.weights = allocWebGpuWeights(dev, config);
    this.acts = allocWebGpuActivations(dev, config, batch, g.tokens, options.textTokens, this.grid);
    const kvLen = batch * options.textTokens * config.hidden;
    this.kv = Array.from({ length: config.numLayers }, () => ({
      k: dev.empty(kvLen, "f32"),
      v: dev.empty(kvLen, "f32"),
    }));
    this.valid = dev.storageBuffer(new Uint32Array(batch), "dit text valid tokens");
    this.plan = new ForwardPlan({
      dev,
      config,
      batch,
      grid: this.grid,
      tokens: g.tokens,
      textTokens: options.textTokens,
      weights: this.weights,
      acts: this.acts,
      kv: this.kv,
      valid: this.valid,
      mm,
      kernels,
    });
  }

  static async create(config: DitConfig, options: WebGpuDitOptions): Promise<WebGpuDit> {
    const { spec, model, names, batch } = ditKernels(config, options);
    const dev = options.device;
    // The residual stream and every operand are f32 here, so the attention kernels read f32 too.
    const compiled = await Promise.all(
      names.map((kernel) => compileWgsl(spec, { device: dev, kernel, storage: "f32" })),
    );
    const [nt, nn] = await Promise.all(
      [true, false].map((transB) => WgslMatmul.create(dev, { storage: "f32", transB }, options.matmulTiling)),
    );
    const kernels = Object.fromEntries(
      await Promise.all(
        K.DIT_WGSL_KERNELS.map(
          async (k) =>
            [k.entry, await computeKernel(dev, k.source, k.entry, k.bindings, `${k.entry}.wgsl`)] as const,
        ),
      ),
    );
    return new WebGpuDit(
      config,
      options,
      model,
      new Map(names.map((n, i) => [n, compiled[i]!])),
      { nt: nt!, nn: nn! },
      kernels,
      batch,
    );
  }

  /** The kernel of layer `layer` at sampler step `step` of `steps` (as CudaDit.kernelName). */
  kernelName(layer: number, step?: number, steps?: number): string {
    return layerKernel(this.model, () => this.attn.keys().next().value!, layer, step, steps);
  }

  /** Uploads parameters (validated first: every problem reported at once). */
  loadWeights(source: WeightSource): void {
    validateWeights(this.config, source);
    for (const s of weightSpecs(this.config))
      this.options.device.write(this.weights.get(s.name)!, source.read(s.name));
  }

  /**
   * Random parameters (benchmarks), as randomWeights and CudaDit.randomizeWeights scale them: uniform
   * ±1/√fan_in, tables ±0.3, biases ±0.1; generated tensor by tensor, never all on the host at once.
   */
  randomizeWeights(seed: number): void {
    weightSpecs(this.config).forEach((s, i) => {
      const values = randomArray(
        s.shape.reduce((a, b) => a * b, 1),
        seed * 100003 + i,
      );
      const scale = s.fanIn === 0 ? 0.3 : s.name.endsWith(".bias") ? 0.1 : 1 / Math.sqrt(s.fanIn);
      for (let j = 0; j < values.length; j++) values[j]! *= scale;
      this.options.device.write(this.weights.get(s.name)!, values);
    });
  }

  /** Caption projection and every block's cross-attention K/V, for text [batch, textTokens, captionChannels]. */
  async encodeText(text: Float32Array, validTokens?: readonly number[]): Promise<void> {
    const c = this.config;
    const L = this.options.textTokens;
    if (text.length !== this.batch * L * c.captionChannels)
      throw new RangeError(
        `text holds ${text.length} values, expected ${this.batch}×${L}×${c.captionChannels}`,
      );
    const valid = validTokens ?? Array.from({ length: this.batch }, () => L);
    if (valid.length !== this.batch || valid.some((v) => !Number.isInteger(v) || v < 0 || v > L))
      throw new RangeError(`validTokens must give 0…${L} for each of ${this.batch} samples`);
    const dev = this.options.device;
    dev.write(this.acts.textIn, text);
    dev.device.queue.writeBuffer(this.valid, 0, new Uint32Array(valid));
    await submitDispatches(dev, this.plan.text, "encoding the text");
    this.textEncoded = true;
  }

  /**
   * One model evaluation: latent f32 [batch, inChannels, frames, height, width] at `timesteps` (per
   * sample, the model's units: OSP 0…1000) → out f32 [batch, outChannels, frames, height, width].
   * Resolves once submitted and validated (download `out` to wait for the GPU).
   */
  async forward(
    latent: GpuTensor,
    timesteps: readonly number[],
    out: GpuTensor,
    o: WebGpuForwardOptions = {},
  ): Promise<void> {
    const c = this.config;
    if (!this.textEncoded) throw new Error("call encodeText() before forward()");
    if (timesteps.length !== this.batch)
      throw new RangeError(`${timesteps.length} timesteps for a batch of ${this.batch}`);
    const { frames: T, height: H, width: W } = this.options.latent;
    const B = this.batch;
    const want = (t: GpuTensor, ch: number, what: string) => {
      if (t.storage !== "f32" || t.length !== B * ch * T * H * W)
        throw new RangeError(`${what} must be f32 [${B}, ${ch}, ${T}, ${H}, ${W}]`);
    };
    want(latent, c.inChannels, "latent");
    want(out, c.outChannels, "out");
    const dev = this.options.device;
    const tf = new Float32Array(B * c.timestepChannels);
    timesteps.forEach((t, b) => tf.set(timestepFeatures(t, c.timestepChannels), b * c.timestepChannels));
    dev.write(this.acts.tfeat, tf);
    const shape = [B * c.inChannels * T * H * W, c.inChannels, T, H, W, c.patchSize];
    const patchify = flatDispatch(
      dev,
      this.kernels[K.PATCHIFY.entry]!,
      uniformBlock(32, shape),
      [latent, this.acts.patches],
      shape[0]!,
    );
    const outShape = [B * c.outChannels * T * H * W, c.outChannels, T, H, W, c.patchSize];
    const unpatchify = flatDispatch(
      dev,
      this.kernels[K.UNPATCHIFY.entry]!,
      uniformBlock(32, outShape),
      [this.acts.projOut, out],
      outShape[0]!,
    );
    const step = modelStep(this.model, o.step, o.steps);
    const a = this.acts;
    try {
      await dev.scoped("the DiT forward", () => {
        const enc = dev.device.createCommandEncoder();
        const pass = enc.beginComputePass(o.timestampWrites ? { timestampWrites: o.timestampWrites } : {});
        for (const d of [...this.plan.cond, patchify, this.plan.patchEmbed]) d.encode(pass);
        this.plan.blocks.forEach((blk, layer) => {
          for (const d of blk.pre) d.encode(pass);
          const name = this.model ? kernelFor(this.model, layer, step) : this.kernelName(layer);
          this.attn.get(name)!.encode(pass, a.q, a.k, a.v, a.o);
          for (const d of blk.post) d.encode(pass);
        });
        for (const d of [...this.plan.final, unpatchify]) d.encode(pass);
        pass.end();
        dev.device.queue.submit([enc.finish()]);
      });
    } finally {
      patchify.destroy();
      unpatchify.destroy();
    }
  }

  /** Host convenience (tests): latent in, prediction out, both float32 host arrays. */
  async forwardHost(
    latent: ArrayLike<number>,
    timesteps: readonly number[],
    o: WebGpuForwardOptions = {},
  ): Promise<Float32Array> {
    const dev = this.options.device;
    const { frames, height, width } = this.options.latent;
    const inT = dev.upload(latent, "f32");
    const outT = dev.empty(this.batch * this.config.outChannels * frames * height * width, "f32");
    try {
      await this.forward(inT, timesteps, outT, o);
      return await dev.download(outT);
    } finally {
      inT.buffer.destroy();
      outT.buffer.destroy();
    }
  }

  destroy(): void {
    for (const d of this.plan.all()) d.destroy();
    for (const t of [
      ...this.weights.values(),
      ...Object.values(this.acts),
      ...this.kv.flatMap((x) => [x.k, x.v]),
    ])
      t.buffer.destroy();
    this.valid.destroy();
    for (const a of this.attn.values()) a.free();
  }
}
