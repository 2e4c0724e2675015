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
import { compileWgsl, type WgslAttention } from "../webgpu/attention.ts";
import type { GpuTensor, WebGpuDevice } from "../webgpu/device.ts";
import {
  computeKernel,
  submitDispatches,
  type ComputeKernel,
  type PreparedDispatch,
} from "../webgpu/dispatch.ts";
import { WgslMatmul } from "../webgpu/matmul.ts";
import type { MatmulActivation } from "../../backends/wgsl/matmul.ts";
import { tokenGrid, type DitConfig } from "./config.ts";
import { checkedSpec, modelKernels, onlyKernel } from "./cuda.ts";
import * as K from "./kernels/dit.wgsl.ts";
import { randomArray } from "../reference.ts";
import { timestepFeatures } from "./math.ts";
import { validateWeights, weightSpecs, type WeightSource } from "./weights.ts";
import {
  allocWebGpuActivations,
  allocWebGpuWeights,
  flatDispatch,
  rowDispatch,
  uniformBlock,
  type WebGpuActivations,
  type WebGpuWeights,
} from "./webgpuBuffers.ts";

export interface WebGpuDitOptions {
  readonly device: WebGpuDevice;
  /** A .tile spec (text or checked) whose kernels share the DiT's token layout (any dtype: run as f32). */
  readonly spec: string | CheckedSpec;
  /** The model section assigning kernels per layer (and step range); omit to use `kernel` everywhere. */
  readonly model?: string;
  readonly kernel?: string;
  readonly latent: { readonly frames: number; readonly height: number; readonly width: number };
  readonly textTokens: number;
}

export interface WebGpuForwardOptions {
  /** Sampler step and the sampler's step count: map to the model section's steps proportionally. */
  readonly step?: number;
  readonly steps?: number;
  /** Timestamps at the beginning and end of the forward's compute pass (benchmarks). */
  readonly timestampWrites?: GPUComputePassTimestampWrites;
}

/** The two matmul pipelines: B as a weight [N, K] (linear layers, scores) and B as [K, N] (P·V). */
type Matmuls = Record<"nt" | "nn", WgslMatmul>;

/** The dispatches of one block around its self-attention call. */
interface BlockDispatches {
  readonly pre: PreparedDispatch[];
  readonly post: PreparedDispatch[];
}

export class WebGpuDit {
  readonly batch: number;
  readonly tokens: number;
  readonly grid: { frames: number; height: number; width: number };
  private readonly weights: WebGpuWeights;
  private readonly acts: WebGpuActivations;
  private readonly kv: { k: GpuTensor; v: GpuTensor }[];
  private readonly valid: GPUBuffer;
  private readonly cond: PreparedDispatch[];
  private readonly text: PreparedDispatch[];
  private readonly blocks: BlockDispatches[];
  private readonly final: PreparedDispatch[];
  private readonly patchEmbed: PreparedDispatch;
  private textEncoded = false;

  private constructor(
    readonly config: DitConfig,
    readonly options: WebGpuDitOptions,
    private readonly model: ModelSpec | undefined,
    private readonly attn: ReadonlyMap<string, WgslAttention>,
    private readonly mm: Matmuls,
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
    this.cond = this.condDispatches();
    this.text = this.textDispatches();
    this.blocks = Array.from({ length: config.numLayers }, (_, l) => this.blockDispatches(l));
    this.final = this.finalDispatches();
    const a = this.acts;
    const w = (n: string) => this.weights.get(n)!;
    this.patchEmbed = this.linear(
      "none",
      a.patches,
      batch * g.tokens,
      config.inChannels * config.patchSize ** 2,
      w("pos_embed.proj.weight"),
      w("pos_embed.proj.bias"),
      config.hidden,
      a.x,
    );
  }

  static async create(config: DitConfig, options: WebGpuDitOptions): Promise<WebGpuDit> {
    const spec = typeof options.spec === "string" ? checkedSpec(options.spec) : options.spec;
    const model = options.model === undefined ? undefined : spec.models.get(options.model);
    if (options.model !== undefined && !model)
      throw new Error(
        `the spec has no model '${options.model}'; it has ${[...spec.models.keys()].join(", ") || "none"}`,
      );
    if (model && model.layers !== config.numLayers)
      throw new Error(`model '${model.name}' has ${model.layers} layers, the DiT config ${config.numLayers}`);
    const names = model ? modelKernels(model) : [options.kernel ?? onlyKernel(spec)];
    const g = tokenGrid(config, options.latent);
    let batch = 0;
    for (const name of names) {
      const k = spec.kernels.get(name);
      if (!k) throw new Error(`the spec has no kernel '${name}'`);
      const l = k.layout;
      const problems: string[] = [];
      if (l.textTokens)
        problems.push(`has ${l.textTokens} text tokens (OSP attends text by cross-attention)`);
      if (l.frames !== g.frames || l.height !== g.height || l.width !== g.width)
        problems.push(
          `video ${l.frames}×${l.height}×${l.width}, but the latent patchifies to ${g.frames}×${g.height}×${g.width}`,
        );
      if (l.heads !== config.numHeads || l.kvHeads !== config.numHeads || l.headDim !== config.headDim)
        problems.push(
          `heads ${l.heads}/${l.kvHeads}×${l.headDim}, the DiT has ${config.numHeads}×${config.headDim}`,
        );
      if (batch && l.batch !== batch) problems.push(`batch ${l.batch} differs from other kernels' ${batch}`);
      if (problems.length)
        throw new Error(`kernel '${name}' (layout '${l.name}') does not fit the DiT: ${problems.join("; ")}`);
      batch = l.batch;
    }
    const dev = options.device;
    // The residual stream and every operand are f32 here, so the attention kernels read f32 too.
    const compiled = await Promise.all(
      names.map((kernel) => compileWgsl(spec, { device: dev, kernel, storage: "f32" })),
    );
    const [nt, nn] = await Promise.all(
      [true, false].map((transB) => WgslMatmul.create(dev, { storage: "f32", transB })),
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
    if (!this.model) return this.attn.keys().next().value!;
    return kernelFor(this.model, layer, this.modelStep(step, steps));
  }

  private modelStep(step?: number, steps?: number): number | undefined {
    if (step === undefined || !this.model) return step;
    const ms = this.model.steps;
    if (!ms) return undefined;
    return Math.min(ms - 1, Math.floor((step * ms) / (steps ?? ms)));
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
    await submitDispatches(dev, this.text, "encoding the text");
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
    const step = this.modelStep(o.step, o.steps);
    const a = this.acts;
    try {
      await dev.scoped("the DiT forward", () => {
        const enc = dev.device.createCommandEncoder();
        const pass = enc.beginComputePass(o.timestampWrites ? { timestampWrites: o.timestampWrites } : {});
        for (const d of [...this.cond, patchify, this.patchEmbed]) d.encode(pass);
        this.blocks.forEach((blk, layer) => {
          for (const d of blk.pre) d.encode(pass);
          const name = this.model ? kernelFor(this.model, layer, step) : this.kernelName(layer);
          this.attn.get(name)!.encode(pass, a.q, a.k, a.v, a.o);
          for (const d of blk.post) d.encode(pass);
        });
        for (const d of [...this.final, unpatchify]) d.encode(pass);
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
    for (const d of [
      ...this.cond,
      ...this.text,
      ...this.final,
      this.patchEmbed,
      ...this.blocks.flatMap((b) => [...b.pre, ...b.post]),
    ])
      d.destroy();
    for (const t of [
      ...this.weights.values(),
      ...Object.values(this.acts),
      ...this.kv.flatMap((x) => [x.k, x.v]),
    ])
      t.buffer.destroy();
    this.valid.destroy();
    for (const a of this.attn.values()) a.free();
  }

  // ---- dispatch lists (prepared once) ----

  /** y[rows, outF] = act(x[rows, inF] · Wᵀ + bias) (+ y when `accumulate`). */
  private linear(
    activation: MatmulActivation,
    x: GpuTensor,
    rows: number,
    inF: number,
    w: GpuTensor,
    bias: GpuTensor | undefined,
    outF: number,
    y: GpuTensor,
    accumulate = false,
  ): PreparedDispatch {
    return this.mm.nt.prepare({
      m: rows,
      n: outF,
      k: inF,
      a: { tensor: x, ld: inF },
      b: { tensor: w, ld: inF },
      c: { tensor: y, ld: outF },
      bias,
      activation,
      beta: accumulate ? 1 : 0,
    });
  }

  private w(name: string): GpuTensor {
    return this.weights.get(name)!;
  }

  /** Optional q/k/v biases (attention_bias). */
  private wb(name: string): GpuTensor | undefined {
    return this.config.attentionBias ? this.w(name) : undefined;
  }

  private condDispatches(): PreparedDispatch[] {
    const c = this.config;
    const { batch: B } = this;
    const C = c.hidden;
    const a = this.acts;
    const te = "adaln_single.emb.timestep_embedder";
    const dev = this.options.device;
    return [
      this.linear(
        "silu",
        a.tfeat,
        B,
        c.timestepChannels,
        this.w(`${te}.linear_1.weight`),
        this.w(`${te}.linear_1.bias`),
        C,
        a.condH,
      ),
      this.linear(
        "none",
        a.condH,
        B,
        C,
        this.w(`${te}.linear_2.weight`),
        this.w(`${te}.linear_2.bias`),
        C,
        a.embedded,
      ),
      flatDispatch(dev, this.kernels[K.SILU.entry]!, uniformBlock(16, [B * C]), [a.embedded, a.condS], B * C),
      this.linear(
        "none",
        a.condS,
        B,
        C,
        this.w("adaln_single.linear.weight"),
        this.w("adaln_single.linear.bias"),
        6 * C,
        a.t6,
      ),
    ];
  }

  private textDispatches(): PreparedDispatch[] {
    const c = this.config;
    const rows = this.batch * this.options.textTokens;
    const C = c.hidden;
    const a = this.acts;
    const cp = "caption_projection";
    const list = [
      this.linear(
        "gelu_tanh",
        a.textIn,
        rows,
        c.captionChannels,
        this.w(`${cp}.linear_1.weight`),
        this.w(`${cp}.linear_1.bias`),
        C,
        a.textH,
      ),
      this.linear(
        "none",
        a.textH,
        rows,
        C,
        this.w(`${cp}.linear_2.weight`),
        this.w(`${cp}.linear_2.bias`),
        C,
        a.text,
      ),
    ];
    this.kv.forEach((kv, l) => {
      const pre = `transformer_blocks.${l}.attn2`;
      list.push(
        this.linear(
          "none",
          a.text,
          rows,
          C,
          this.w(`${pre}.to_k.weight`),
          this.wb(`${pre}.to_k.bias`),
          C,
          kv.k,
        ),
        this.linear(
          "none",
          a.text,
          rows,
          C,
          this.w(`${pre}.to_v.weight`),
          this.wb(`${pre}.to_v.bias`),
          C,
          kv.v,
        ),
      );
    });
    return list;
  }

  private normModulate(
    x: GpuTensor,
    out: GpuTensor,
    table: GpuTensor,
    temb: GpuTensor,
    tembStride: number,
    chunkStride: number,
    shiftIdx: number,
    scaleIdx: number,
  ): PreparedDispatch {
    const c = this.config;
    const M = this.batch * this.tokens;
    const params = uniformBlock(
      32,
      [M, c.hidden, this.tokens, tembStride, chunkStride, shiftIdx, scaleIdx, c.normEps],
      [7],
    );
    return rowDispatch(
      this.options.device,
      this.kernels[K.NORM_MODULATE.entry]!,
      params,
      [x, out, table, temb],
      M,
    );
  }

  private gateResidual(table: GpuTensor, gateIdx: number): PreparedDispatch {
    const C = this.config.hidden;
    const n = this.batch * this.tokens * C;
    const params = uniformBlock(32, [n, C, this.tokens, 6 * C, gateIdx]);
    return flatDispatch(
      this.options.device,
      this.kernels[K.GATE_RESIDUAL.entry]!,
      params,
      [this.acts.x, this.acts.y, table, this.acts.t6],
      n,
    );
  }

  private blockDispatches(layer: number): BlockDispatches {
    const c = this.config;
    const dev = this.options.device;
    const a = this.acts;
    const { batch: B, tokens: N } = this;
    const M = B * N;
    const C = c.hidden;
    const heads = c.numHeads;
    const D = c.headDim;
    const L = this.options.textTokens;
    const pre = `transformer_blocks.${layer}`;
    const table = this.w(`${pre}.scale_shift_table`);
    const half = D / 6;
    const g = this.grid;
    const ropeParams = uniformBlock(48, [
      M * heads * 3 * half,
      heads,
      D,
      N,
      g.height,
      g.width,
      g.frames,
      g.frames + g.height,
      (g.frames + g.height + g.width) * half,
    ]);
    const preList = [
      this.normModulate(a.x, a.xn, table, a.t6, 6 * C, C, 0, 1),
      this.linear(
        "none",
        a.xn,
        M,
        C,
        this.w(`${pre}.attn1.to_q.weight`),
        this.wb(`${pre}.attn1.to_q.bias`),
        C,
        a.q,
      ),
      this.linear(
        "none",
        a.xn,
        M,
        C,
        this.w(`${pre}.attn1.to_k.weight`),
        this.wb(`${pre}.attn1.to_k.bias`),
        C,
        a.k,
      ),
      this.linear(
        "none",
        a.xn,
        M,
        C,
        this.w(`${pre}.attn1.to_v.weight`),
        this.wb(`${pre}.attn1.to_v.bias`),
        C,
        a.v,
      ),
      flatDispatch(dev, this.kernels[K.ROPE.entry]!, ropeParams, [a.q, a.k, a.angles], M * heads * 3 * half),
    ];
    const kv = this.kv[layer]!;
    const post = [
      this.linear(
        "none",
        a.o,
        M,
        C,
        this.w(`${pre}.attn1.to_out.0.weight`),
        this.w(`${pre}.attn1.to_out.0.bias`),
        C,
        a.y,
      ),
      this.gateResidual(table, 2),
      // Cross-attention on the residual stream (no norm, no gate): scores, masked softmax, P·V.
      this.linear(
        "none",
        a.x,
        M,
        C,
        this.w(`${pre}.attn2.to_q.weight`),
        this.wb(`${pre}.attn2.to_q.bias`),
        C,
        a.q,
      ),
      this.mm.nt.prepare({
        m: N,
        n: L,
        k: D,
        batch: [B, heads],
        alpha: 1 / Math.sqrt(D),
        a: { tensor: a.q, ld: C, stride: [N * C, D] },
        b: { tensor: kv.k, ld: C, stride: [L * C, D] },
        c: { tensor: a.scores, ld: L, stride: [heads * N * L, N * L] },
      }),
      rowDispatch(
        dev,
        this.kernels[K.SOFTMAX_ROWS.entry]!,
        uniformBlock(16, [B * heads * N, L, heads * N]),
        [a.scores, this.valid],
        B * heads * N,
      ),
      this.mm.nn.prepare({
        m: N,
        n: D,
        k: L,
        batch: [B, heads],
        a: { tensor: a.scores, ld: L, stride: [heads * N * L, N * L] },
        b: { tensor: kv.v, ld: C, stride: [L * C, D] },
        c: { tensor: a.o, ld: C, stride: [N * C, D] },
      }),
      this.linear(
        "none",
        a.o,
        M,
        C,
        this.w(`${pre}.attn2.to_out.0.weight`),
        this.w(`${pre}.attn2.to_out.0.bias`),
        C,
        a.x,
        true,
      ),
      // MLP.
      this.normModulate(a.x, a.xn, table, a.t6, 6 * C, C, 3, 4),
      this.linear(
        "gelu_tanh",
        a.xn,
        M,
        C,
        this.w(`${pre}.ff.net.0.proj.weight`),
        this.w(`${pre}.ff.net.0.proj.bias`),
        c.ffInnerDim,
        a.ffh,
      ),
      this.linear(
        "none",
        a.ffh,
        M,
        c.ffInnerDim,
        this.w(`${pre}.ff.net.2.weight`),
        this.w(`${pre}.ff.net.2.bias`),
        C,
        a.y,
      ),
      this.gateResidual(table, 5),
    ];
    return { pre: preList, post };
  }

  private finalDispatches(): PreparedDispatch[] {
    const c = this.config;
    const a = this.acts;
    const M = this.batch * this.tokens;
    const C = c.hidden;
    return [
      // norm_out modulated by scale_shift_table [2, C] + embedded_timestep [B, C] (one chunk for both).
      this.normModulate(a.x, a.xn, this.w("scale_shift_table"), a.embedded, C, 0, 0, 1),
      this.linear(
        "none",
        a.xn,
        M,
        C,
        this.w("proj_out.weight"),
        this.w("proj_out.bias"),
        c.patchSize ** 2 * c.outChannels,
        a.projOut,
      ),
    ];
  }
}
