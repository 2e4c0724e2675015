// The DiT forward on CUDA: matrix products on cuBLAS (bf16 operands, fp32 accumulation), self-attention
// through tilec's compiled block-sparse kernels (per layer and step the kernel the spec's model section
// assigns), the rest in kernels/dit.cu. The residual stream stays fp32; every matrix operand is bf16.
//
//   const dit = await CudaDit.create(config, { spec, model: "osp29_example", latent: { frames, height, width }, textTokens });
//   dit.loadWeights(safetensorsWeights(path));     // or dit.randomizeWeights(seed)
//   dit.encodeText(textEmbeddings, validTokens);   // once per prompt: caption projection + every block's K/V
//   dit.forward(latent, timesteps, out, { step, steps });
import { compile, type CudaAttention } from "../attention.ts";
import { kernelFor, type CheckedSpec, type ModelSpec } from "../../compiler/check.ts";
import { gemm } from "../cuda/cublas.ts";
import { CudaDevice, PhaseTimer, type DeviceBuffer, type Stream } from "../cuda/device.ts";
import { tokenGrid, type DitConfig } from "./config.ts";
import { ditKernels, layerKernel, modelKernels, modelStep } from "./specKernels.ts";
import { Act, DitKernels } from "./kernels.ts";
import type { TokenSlice } from "./cpu.ts";
import { timestepFeatures } from "./math.ts";
import { validateWeights, weightSpecs, type WeightSource } from "./weights.ts";
import {
  allocActivations,
  allocTextKv,
  allocWeights,
  placeWeights,
  type Activations,
  type DeviceWeights,
} from "./cudaBuffers.ts";

/** One self-attention call: the single place attention runs, so it can be wrapped (e.g. sequence parallelism). */
export interface SelfAttentionCall {
  readonly layer: number;
  /** The model-section step the kernel was chosen for (undefined outside a sampler). */
  readonly step?: number;
  readonly kernelName: string;
  readonly kernel: CudaAttention;
  /** [batch, tokens, heads, headDim] bf16 each. */
  readonly q: DeviceBuffer;
  readonly k: DeviceBuffer;
  readonly v: DeviceBuffer;
  readonly out: DeviceBuffer;
  readonly stream: Stream | null;
}
export type SelfAttention = (call: SelfAttentionCall) => void;

export const runSelfAttention: SelfAttention = (c) =>
  c.kernel.run(c.q, c.k, c.v, c.out, { stream: c.stream });

export interface CudaDitOptions {
  /** A .tile spec (text or checked) whose kernels share the DiT's token layout. */
  readonly spec: string | CheckedSpec;
  /** The model section assigning kernels per layer (and step range); omit to use `kernel` everywhere. */
  readonly model?: string;
  readonly kernel?: string;
  /** Latent size (before patchify). */
  readonly latent: { readonly frames: number; readonly height: number; readonly width: number };
  readonly textTokens: number;
  readonly cacheDir?: string;
  readonly attention?: SelfAttention;
  /** More kernels of the spec to compile, so `useModel` can switch to models that use them. */
  readonly extraKernels?: readonly string[];
  /**
   * Run on tokens [start, start + count) of the patchified sequence only (a sequence-parallel rank,
   * runtime/parallel/dit.ts): every per-token layer on count tokens, RoPE at the global positions,
   * self-attention through `attention` (which must see every rank's tokens). forward() then takes
   * and returns token rows fp32 [batch, count, channels·p·p] in patchify's (c, i, j) order
   * (DitKernels.latentRows converts) instead of whole latents.
   */
  readonly tokens?: TokenSlice;
}

export interface ForwardOptions {
  /** Sampler step and the sampler's step count: map to the model section's steps proportionally. */
  readonly step?: number;
  readonly steps?: number;
  /** Time the self-attention calls with device events (synchronizes at the end of the forward). */
  readonly timeAttention?: boolean;
  /**
   * Time every part of the forward with device events, summed over the layers (synchronizes at the
   * end): where a step goes, e.g. which parts stop scaling on a token slice.
   */
  readonly timeParts?: boolean;
}

/** The parts ForwardOptions.timeParts reports, in forward order. */
export const DIT_PARTS = [
  "embedding",
  "self-attention projections",
  "self-attention",
  "self-attention output",
  "cross-attention",
  "mlp",
  "final layer",
] as const;
export type DitPart = (typeof DIT_PARTS)[number];

export interface ForwardTimes {
  attentionMs?: number;
  partsMs?: Record<DitPart, number>;
}

export class CudaDit {
  readonly batch: number;
  /** Tokens of the whole patchified sequence (per sample). */
  readonly tokens: number;
  /** The tokens this instance runs on (all of them unless options.tokens). */
  readonly slice: TokenSlice;
  readonly grid: { frames: number; height: number; width: number };
  private weights: DeviceWeights;
  private acts: Activations;
  private textValid: number[] | undefined;
  private readonly kernels: DitKernels;
  attention: SelfAttention;

  private constructor(
    readonly config: DitConfig,
    readonly options: CudaDitOptions,
    private readonly spec: CheckedSpec,
    private model: ModelSpec | undefined,
    private readonly attn: ReadonlyMap<string, CudaAttention>,
    kernels: DitKernels,
    batch: number,
  ) {
    this.kernels = kernels;
    this.batch = batch;
    const g = tokenGrid(config, options.latent);
    this.grid = { frames: g.frames, height: g.height, width: g.width };
    this.tokens = g.tokens;
    this.slice = options.tokens ?? { start: 0, count: g.tokens };
    this.weights = allocWeights(config);
    this.acts = allocActivations(config, batch, this.slice.count, options.textTokens);
    this.attention = options.attention ?? runSelfAttention;
  }

  static async create(config: DitConfig, options: CudaDitOptions): Promise<CudaDit> {
    const { spec, model, names, batch } = ditKernels(config, options, "bf16");
    const g = tokenGrid(config, options.latent);
    const t = options.tokens;
    if (t && !(Number.isInteger(t.start) && Number.isInteger(t.count) && t.start >= 0 && t.count >= 1))
      throw new RangeError(`tokens {start: ${t.start}, count: ${t.count}} must be integers, count ≥ 1`);
    if (t && t.start + t.count > g.tokens)
      throw new RangeError(`tokens [${t.start}, ${t.start + t.count}) reach past the ${g.tokens} tokens`);
    const compiled = await Promise.all(
      names.map((n) => compile(spec, { target: "cuda", kernel: n, cacheDir: options.cacheDir })),
    );
    const kernels = await DitKernels.load({ cacheDir: options.cacheDir });
    return new CudaDit(
      config,
      options,
      spec,
      model,
      new Map(names.map((n, i) => [n, compiled[i]!])),
      kernels,
      batch,
    );
  }

  /** Switches to another model section of the spec (or one kernel everywhere); its kernels must be compiled. */
  useModel(name: string | undefined, kernel?: string): void {
    const model = name === undefined ? undefined : this.spec.models.get(name);
    if (name !== undefined && !model) throw new Error(`the spec has no model '${name}'`);
    if (model && model.layers !== this.config.numLayers)
      throw new Error(`model '${name}' has ${model.layers} layers, the DiT config ${this.config.numLayers}`);
    const needed = model ? modelKernels(model) : [kernel ?? this.attn.keys().next().value!];
    const missing = needed.filter((k) => !this.attn.has(k));
    if (missing.length)
      throw new Error(`kernels ${missing.join(", ")} were not compiled: pass them in extraKernels`);
    this.model = model;
    this.defaultKernel = model ? undefined : needed[0];
  }

  private defaultKernel: string | undefined;

  /** The kernel of layer `layer` at sampler step `step` of `steps`. */
  kernelName(layer: number, step?: number, steps?: number): string {
    return layerKernel(
      this.model,
      () => this.defaultKernel ?? this.attn.keys().next().value!,
      layer,
      step,
      steps,
    );
  }

  /** Uploads parameters (validated first: every problem reported at once). */
  loadWeights(source: WeightSource): void {
    validateWeights(this.config, source);
    for (const p of placeWeights(this.config, this.weights))
      p.buf.upload(Float32Array.from(source.read(p.name)), p.offset);
  }

  /** Random parameters on the device (benchmarks): uniform ±1/√fan_in, tables ±0.3, biases ±0.1. */
  randomizeWeights(seed: number): void {
    const fan = new Map(weightSpecs(this.config).map((s) => [s.name, s.fanIn]));
    let i = 0;
    for (const p of placeWeights(this.config, this.weights)) {
      const fanIn = fan.get(p.name)!;
      const scale = fanIn === 0 ? 0.3 : p.name.endsWith(".bias") ? 0.1 : 1 / Math.sqrt(fanIn);
      this.kernels.randomUniform(p.buf, seed * 100003 + i++, scale, p.offset, p.length);
    }
  }

  /** Caption projection and every block's cross-attention K/V, for text [batch, textTokens, captionChannels]. */
  encodeText(text: Float32Array, validTokens?: readonly number[]): void {
    const c = this.config;
    const L = this.options.textTokens;
    const rows = this.batch * L;
    if (text.length !== rows * c.captionChannels)
      throw new RangeError(
        `text holds ${text.length} values, expected ${this.batch}×${L}×${c.captionChannels}`,
      );
    const valid = validTokens ?? Array.from({ length: this.batch }, () => L);
    if (valid.length !== this.batch || valid.some((v) => !Number.isInteger(v) || v < 0 || v > L))
      throw new RangeError(`validTokens must give 0…${L} for each of ${this.batch} samples`);
    const { acts: a, weights: w, kernels: k } = this;
    allocTextKv(c, w, rows);
    a.textIn.upload(text);
    linear(a.textIn, rows, c.captionChannels, w.cap1, c.hidden, a.textF);
    k.biasActF32(a.textF, w.cap1Bias, null, a.textH, rows, c.hidden, Act.GeluTanh);
    linear(a.textH, rows, c.hidden, w.cap2, c.hidden, a.textF);
    k.biasActF32(a.textF, w.cap2Bias, null, a.textH, rows, c.hidden, Act.None);
    for (const b of w.blocks) {
      linear(a.textH, rows, c.hidden, b.k2, c.hidden, b.kv2, 0);
      linear(a.textH, rows, c.hidden, b.v2, c.hidden, b.kv2, rows * c.hidden);
      k.biasActBf16(b.kv2, b.k2Bias, rows, c.hidden, Act.None, 0);
      k.biasActBf16(b.kv2, b.v2Bias, rows, c.hidden, Act.None, rows * c.hidden);
    }
    this.textValid = [...valid];
  }

  /**
   * One model evaluation: latent fp32 [batch, inChannels, frames, height, width] at `timesteps` (per
   * sample, the model's units: OSP 0…1000) → out fp32 [batch, outChannels, frames, height, width].
   * With options.tokens, both are the slice's token rows ([batch, count, channels·p·p]).
   */
  forward(
    latent: DeviceBuffer,
    timesteps: readonly number[],
    out: DeviceBuffer,
    o: ForwardOptions = {},
  ): ForwardTimes {
    // The kernel alone would read past a slice's q, k, v: a slice needs every rank's keys.
    if (this.attention === runSelfAttention && this.slice.count !== this.tokens)
      throw new Error(
        "this DiT runs on a token slice: its self-attention must be sequence-parallel (SlicedDit in runtime/parallel/ditSliced.ts)",
      );
    const steps = this.forwardSteps(latent, timesteps, out, o);
    let r = steps.next();
    while (!r.done) {
      this.attention(r.value);
      r = steps.next();
    }
    return r.value;
  }

  /** Elements of forward()'s input (`channels` = inChannels) or output (outChannels). */
  latentLength(channels: number): number {
    const { frames, height, width } = this.options.latent;
    return this.options.tokens
      ? this.batch * this.slice.count * channels * this.config.patchSize ** 2
      : this.batch * channels * frames * height * width;
  }

  /**
   * forward() with each self-attention handed to the caller: every yielded call must have run (on the
   * stream) before the generator is resumed. Lets a caller interleave several instances, e.g. the
   * ranks of a sequence-parallel run simulated on one GPU.
   */
  *forwardSteps(
    latent: DeviceBuffer,
    timesteps: readonly number[],
    out: DeviceBuffer,
    o: ForwardOptions = {},
  ): Generator<SelfAttentionCall, ForwardTimes, void> {
    const c = this.config;
    if (!this.textValid) throw new Error("call encodeText() before forward()");
    if (timesteps.length !== this.batch)
      throw new RangeError(`${timesteps.length} timesteps for a batch of ${this.batch}`);
    const { frames: T, height: H, width: W } = this.options.latent;
    const B = this.batch;
    const { start, count: N } = this.slice;
    const M = B * N;
    const C = c.hidden;
    const p = c.patchSize;
    const sliced = this.options.tokens !== undefined;
    const shape = (ch: number) =>
      sliced ? `[${B}, ${N}, ${ch * p * p}]` : `[${B}, ${ch}, ${T}, ${H}, ${W}]`;
    if (latent.dtype !== "fp32" || latent.length !== this.latentLength(c.inChannels))
      throw new RangeError(`latent must be fp32 ${shape(c.inChannels)}`);
    if (out.dtype !== "fp32" || out.length !== this.latentLength(c.outChannels))
      throw new RangeError(`out must be fp32 ${shape(c.outChannels)}`);
    const { acts: a, weights: w, kernels: k } = this;
    const stream = k.stream;
    // One timer serves both options: self-attention is one of the parts.
    const timer = o.timeParts || o.timeAttention ? new PhaseTimer(stream) : undefined;
    const mark = (part: DitPart) => timer?.mark(part);

    // Timestep conditioning: embedded_timestep e [B, C] and adaLN's 6 rows t6 [B, 6C].
    const tf = new Float32Array(B * c.timestepChannels);
    timesteps.forEach((t, b) => tf.set(timestepFeatures(t, c.timestepChannels), b * c.timestepChannels));
    a.tfeat.upload(tf);
    linear(a.tfeat, B, c.timestepChannels, w.te1, C, a.condF);
    k.biasActF32(a.condF, w.te1Bias, null, a.condB, B, C, Act.Silu);
    linear(a.condB, B, C, w.te2, C, a.embedded);
    k.biasActF32(a.embedded, w.te2Bias, a.embedded, null, B, C, Act.None);
    k.biasActF32(a.embedded, null, null, a.condB, B, C, Act.Silu);
    linear(a.condB, B, C, w.ada, 6 * C, a.t6);
    k.biasActF32(a.t6, w.adaBias, a.t6, null, B, 6 * C, Act.None);

    // Patch embedding into the fp32 residual stream.
    const dims = { B, T, H, W, p };
    // A slice's token rows are patchify's rows already.
    if (sliced) k.castBf16(latent, a.patches, M * c.inChannels * p * p);
    else k.patchify(latent, a.patches, { ...dims, C: c.inChannels });
    linear(a.patches, M, c.inChannels * p * p, w.patch, C, a.x);
    k.biasActF32(a.x, w.patchBias, a.x, null, M, C, Act.None);
    mark("embedding");

    const mod = { rows: M, C, tokens: N, tembStride: 6 * C, chunkStride: C, eps: c.normEps };
    const step = modelStep(this.model, o.step, o.steps);
    const D = c.headDim;
    const heads = c.numHeads;
    const L = this.options.textTokens;
    for (const [layer, blk] of w.blocks.entries()) {
      // Self-attention.
      k.normModulate(a.x, a.xn, blk.table, a.t6, { ...mod, shiftIdx: 0, scaleIdx: 1 });
      linear(a.xn, M, C, blk.q, C, a.q);
      linear(a.xn, M, C, blk.k, C, a.k);
      linear(a.xn, M, C, blk.v, C, a.v);
      k.qkvBiasRope(a.q, a.k, a.v, blk.qkvBias, {
        M,
        tokens: N,
        start,
        heads,
        D,
        T: this.grid.frames,
        H: this.grid.height,
        W: this.grid.width,
        scales: [c.ropeScaleT, c.ropeScaleH, c.ropeScaleW],
        base: c.ropeBase,
      });
      const kernelName = this.model ? kernelFor(this.model, layer, step) : this.kernelName(layer);
      mark("self-attention projections");
      yield {
        layer,
        step,
        kernelName,
        kernel: this.attn.get(kernelName)!,
        q: a.q,
        k: a.k,
        v: a.v,
        out: a.o,
        stream,
      };
      mark("self-attention");
      linear(a.o, M, C, blk.out, C, a.y);
      k.gateResidual(a.x, a.y, blk.outBias, blk.table, a.t6, {
        rows: M,
        C,
        tokens: N,
        tembStride: 6 * C,
        gateIdx: 2,
      });
      mark("self-attention output");

      // Cross-attention on the residual stream (no norm, no gate), per sample: scores, softmax, P·V.
      k.castBf16(a.x, a.xn, M * C);
      linear(a.xn, M, C, blk.q2, C, a.q);
      k.biasActBf16(a.q, blk.q2Bias, M, C, Act.None);
      for (let b = 0; b < B; b++) {
        gemm({
          m: N,
          n: L,
          k: D,
          batch: heads,
          alpha: 1 / Math.sqrt(D),
          stream,
          a: { buf: a.q, offset: b * N * C, ld: C, stride: D },
          b: { buf: blk.kv2, offset: b * L * C, ld: C, stride: D },
          c: { buf: a.scores, ld: L, stride: N * L },
        });
        k.softmaxRows(a.scores, a.probs, heads * N, L, this.textValid![b]!);
        gemm({
          m: N,
          n: D,
          k: L,
          batch: heads,
          transB: false,
          stream,
          a: { buf: a.probs, ld: L, stride: N * L },
          b: { buf: blk.kv2, offset: (B + b) * L * C, ld: C, stride: D },
          c: { buf: a.o, offset: b * N * C, ld: C, stride: D },
        });
      }
      linear(a.o, M, C, blk.out2, C, a.y);
      k.gateResidual(a.x, a.y, blk.out2Bias, null, null, {
        rows: M,
        C,
        tokens: N,
        tembStride: 0,
        gateIdx: -1,
      });
      mark("cross-attention");

      // MLP.
      k.normModulate(a.x, a.xn, blk.table, a.t6, { ...mod, shiftIdx: 3, scaleIdx: 4 });
      linear(a.xn, M, C, blk.ff1, c.ffInnerDim, a.ffh);
      k.biasActBf16(a.ffh, blk.ff1Bias, M, c.ffInnerDim, Act.GeluTanh);
      linear(a.ffh, M, c.ffInnerDim, blk.ff2, C, a.y);
      k.gateResidual(a.x, a.y, blk.ff2Bias, blk.table, a.t6, {
        rows: M,
        C,
        tokens: N,
        tembStride: 6 * C,
        gateIdx: 5,
      });
      mark("mlp");
    }

    // Final layer: norm_out modulated by scale_shift_table + embedded_timestep, proj_out, unpatchify.
    k.normModulate(a.x, a.xn, w.finalTable, a.embedded, {
      ...mod,
      tembStride: C,
      chunkStride: 0,
      shiftIdx: 0,
      scaleIdx: 1,
    });
    linear(a.xn, M, C, w.proj, p * p * c.outChannels, a.projOut);
    if (sliced) k.projToRows(a.projOut, w.projBias, out, M, c.outChannels, p);
    else k.unpatchify(a.projOut, w.projBias, out, { ...dims, C: c.outChannels });
    mark("final layer");
    if (!timer) return {};
    const partsMs = timer.finish() as Record<DitPart, number>;
    return {
      ...(o.timeAttention ? { attentionMs: partsMs["self-attention"] } : {}),
      ...(o.timeParts ? { partsMs } : {}),
    };
  }

  /** Host convenience (tests): latent in, prediction out, both float32 host arrays. */
  forwardHost(latent: Float32Array, timesteps: readonly number[], o: ForwardOptions = {}): Float32Array {
    const n = this.latentLength(this.config.outChannels);
    const device = CudaDevice.open();
    const inBuf = device.fromHost(latent, "fp32");
    const outBuf = device.allocElements("fp32", n).poison();
    try {
      this.forward(inBuf, timesteps, outBuf, o);
      return outBuf.download();
    } finally {
      inBuf.free();
      outBuf.free();
    }
  }

  get elementKernels(): DitKernels {
    return this.kernels;
  }

  get checkedSpec(): CheckedSpec {
    return this.spec;
  }

  free(): void {
    for (const b of [...Object.values(this.acts), ...allBuffers(this.weights)]) b.free();
    for (const a of this.attn.values()) a.free();
    this.kernels.free();
  }
}

/** y[rows, outF] = x[rows, inF] · Wᵀ (W [outF, inF]); output dtype is y's (bf16 or fp32). */
function linear(
  x: DeviceBuffer,
  rows: number,
  inF: number,
  wt: DeviceBuffer,
  outF: number,
  y: DeviceBuffer,
  yOffset = 0,
): void {
  gemm({ m: rows, n: outF, k: inF, a: { buf: x }, b: { buf: wt }, c: { buf: y, offset: yOffset } });
}

function allBuffers(w: DeviceWeights): DeviceBuffer[] {
  const out: DeviceBuffer[] = [];
  for (const [key, v] of Object.entries(w)) if (key !== "blocks") out.push(v as DeviceBuffer);
  for (const b of w.blocks) for (const v of Object.values(b)) if (v) out.push(v);
  return out;
}
