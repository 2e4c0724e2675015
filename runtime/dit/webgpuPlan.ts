/// <reference types="@webgpu/types" />
// Every dispatch of the WebGPU DiT's forward and text encoding, prepared once over fixed buffers
// (weights, activations, per-block text K/V): the forward then only records them. Mirrors cuda.ts's
// forward step by step; the self-attention call sits between a block's `pre` and `post` lists.
import type { MatmulActivation } from "../../backends/wgsl/matmul.ts";
import type { GpuTensor, WebGpuDevice } from "../webgpu/device.ts";
import type { ComputeKernel, PreparedDispatch } from "../webgpu/dispatch.ts";
import type { WgslMatmul } from "../webgpu/matmul.ts";
import type { DitConfig } from "./config.ts";
import * as K from "./kernels/dit.wgsl.ts";
import { weightSpecs } from "./weights.ts";
import {
  flatDispatch,
  rowDispatch,
  uniformBlock,
  type WebGpuActivations,
  type WebGpuWeights,
} from "./webgpuBuffers.ts";

/** The two matmul pipelines: B as a weight [N, K] (linear layers, scores) and B as [K, N] (P·V). */
export type Matmuls = Record<"nt" | "nn", WgslMatmul>;

export interface PlanContext {
  readonly dev: WebGpuDevice;
  readonly config: DitConfig;
  readonly batch: number;
  readonly grid: { readonly frames: number; readonly height: number; readonly width: number };
  readonly tokens: number;
  readonly textTokens: number;
  readonly weights: WebGpuWeights;
  readonly acts: WebGpuActivations;
  /** Per block: cross-attention K and V of the encoded text, [batch · textTokens, hidden] each. */
  readonly kv: readonly { readonly k: GpuTensor; readonly v: GpuTensor }[];
  /** u32 per sample: valid text tokens. */
  readonly valid: GPUBuffer;
  readonly mm: Matmuls;
  readonly kernels: Readonly<Record<string, ComputeKernel>>;
}

export interface BlockDispatches {
  readonly pre: PreparedDispatch[];
  readonly post: PreparedDispatch[];
}

export class ForwardPlan {
  /** Timestep embedding → embedded [B, C] and adaLN's six rows t6 [B, 6C]. */
  readonly cond: PreparedDispatch[];
  /** Caption projection and every block's K/V. */
  readonly text: PreparedDispatch[];
  readonly patchEmbed: PreparedDispatch;
  readonly blocks: BlockDispatches[];
  readonly final: PreparedDispatch[];
  private readonly shapes: Map<string, readonly number[]>;

  constructor(private readonly x: PlanContext) {
    this.shapes = new Map(weightSpecs(x.config).map((s) => [s.name, s.shape]));
    const { config: c, acts: a, batch: B } = x;
    const C = c.hidden;
    const te = "adaln_single.emb.timestep_embedder";
    this.cond = [
      this.linear("silu", a.tfeat, B, `${te}.linear_1`, a.condH),
      this.linear("none", a.condH, B, `${te}.linear_2`, a.embedded),
      flatDispatch(x.dev, this.kernel(K.SILU), uniformBlock(16, [B * C]), [a.embedded, a.condS], B * C),
      this.linear("none", a.condS, B, "adaln_single.linear", a.t6),
    ];
    const rows = B * x.textTokens;
    this.text = [
      this.linear("gelu_tanh", a.textIn, rows, "caption_projection.linear_1", a.textH),
      this.linear("none", a.textH, rows, "caption_projection.linear_2", a.text),
      ...x.kv.flatMap((kv, l) => [
        this.linear("none", a.text, rows, `transformer_blocks.${l}.attn2.to_k`, kv.k, { qkv: true }),
        this.linear("none", a.text, rows, `transformer_blocks.${l}.attn2.to_v`, kv.v, { qkv: true }),
      ]),
    ];
    this.patchEmbed = this.linear("none", a.patches, B * x.tokens, "pos_embed.proj", a.x);
    this.blocks = Array.from({ length: c.numLayers }, (_, l) => this.block(l));
    this.final = [
      // norm_out modulated by scale_shift_table [2, C] + embedded_timestep [B, C] (one chunk for both).
      this.normModulate(this.x.weights.get("scale_shift_table")!, a.embedded, C, 0, 0, 1),
      this.linear("none", a.xn, B * x.tokens, "proj_out", a.projOut),
    ];
  }

  all(): PreparedDispatch[] {
    return [
      ...this.cond,
      ...this.text,
      this.patchEmbed,
      ...this.blocks.flatMap((b) => [...b.pre, ...b.post]),
      ...this.final,
    ];
  }

  private kernel(k: K.DitWgslKernel): ComputeKernel {
    return this.x.kernels[k.entry]!;
  }

  /**
   * y = act(x · Wᵀ + bias) (+ y when `accumulate`) for the linear layer `name` (W [out, in]: the sizes
   * come from its weight's shape); `qkv` biases exist only with attention_bias.
   */
  private linear(
    activation: MatmulActivation,
    x: GpuTensor,
    rows: number,
    name: string,
    y: GpuTensor,
    o: { qkv?: boolean; accumulate?: boolean } = {},
  ): PreparedDispatch {
    const [outF, ...rest] = this.shapes.get(`${name}.weight`)!;
    const inF = rest.reduce((p, q) => p * q, 1); // the patch embedding's [C, Cin, p, p] is a [C, Cin·p²] matrix
    const withBias = !o.qkv || this.x.config.attentionBias;
    return this.x.mm.nt.prepare({
      m: rows,
      n: outF!,
      k: inF,
      a: { tensor: x, ld: inF },
      b: { tensor: this.x.weights.get(`${name}.weight`)!, ld: inF },
      c: { tensor: y, ld: outF! },
      bias: withBias ? this.x.weights.get(`${name}.bias`) : undefined,
      activation,
      beta: o.accumulate ? 1 : 0,
    });
  }

  /** xn = LayerNorm(x) · (1 + scale) + shift (kernels/dit.wgsl.ts NORM_MODULATE). */
  private normModulate(
    table: GpuTensor,
    temb: GpuTensor,
    tembStride: number,
    chunkStride: number,
    shiftIdx: number,
    scaleIdx: number,
  ): PreparedDispatch {
    const { config: c, acts: a } = this.x;
    const M = this.x.batch * this.x.tokens;
    const params = uniformBlock(
      32,
      [M, c.hidden, this.x.tokens, tembStride, chunkStride, shiftIdx, scaleIdx, c.normEps],
      [7],
    );
    return rowDispatch(this.x.dev, this.kernel(K.NORM_MODULATE), params, [a.x, a.xn, table, temb], M);
  }

  /** x += gate · y with adaLN row `gateIdx`. */
  private gateResidual(table: GpuTensor, gateIdx: number): PreparedDispatch {
    const C = this.x.config.hidden;
    const n = this.x.batch * this.x.tokens * C;
    const params = uniformBlock(32, [n, C, this.x.tokens, 6 * C, gateIdx]);
    const { acts: a } = this.x;
    return flatDispatch(this.x.dev, this.kernel(K.GATE_RESIDUAL), params, [a.x, a.y, table, a.t6], n);
  }

  private block(layer: number): BlockDispatches {
    const { config: c, acts: a, dev, batch: B, tokens: N, textTokens: L, grid: g } = this.x;
    const M = B * N;
    const C = c.hidden;
    const heads = c.numHeads;
    const D = c.headDim;
    const pre = `transformer_blocks.${layer}`;
    const table = this.x.weights.get(`${pre}.scale_shift_table`)!;
    const half = D / 6;
    const pairs = M * heads * 3 * half;
    const rope = uniformBlock(48, [
      pairs,
      heads,
      D,
      N,
      g.height,
      g.width,
      g.frames, // angle rows: t axis first, then h, then w
      g.frames + g.height,
      (g.frames + g.height + g.width) * half,
    ]);
    const kv = this.x.kv[layer]!;
    const softmax = uniformBlock(16, [B * heads * N, L, heads * N]);
    return {
      pre: [
        this.normModulate(table, a.t6, 6 * C, C, 0, 1),
        this.linear("none", a.xn, M, `${pre}.attn1.to_q`, a.q, { qkv: true }),
        this.linear("none", a.xn, M, `${pre}.attn1.to_k`, a.k, { qkv: true }),
        this.linear("none", a.xn, M, `${pre}.attn1.to_v`, a.v, { qkv: true }),
        flatDispatch(dev, this.kernel(K.ROPE), rope, [a.q, a.k, a.angles], pairs),
      ],
      post: [
        this.linear("none", a.o, M, `${pre}.attn1.to_out.0`, a.y),
        this.gateResidual(table, 2),
        // Cross-attention on the residual stream (no norm, no gate), per (sample, head): scores,
        // masked softmax, P·V, then the output projection added to x in the matmul's epilogue.
        this.linear("none", a.x, M, `${pre}.attn2.to_q`, a.q, { qkv: true }),
        this.x.mm.nt.prepare({
          m: N,
          n: L,
          k: D,
          batch: [B, heads],
          alpha: 1 / Math.sqrt(D),
          a: { tensor: a.q, ld: C, stride: [N * C, D] },
          b: { tensor: kv.k, ld: C, stride: [L * C, D] },
          c: { tensor: a.scores, ld: L, stride: [heads * N * L, N * L] },
        }),
        rowDispatch(dev, this.kernel(K.SOFTMAX_ROWS), softmax, [a.scores, this.x.valid], B * heads * N),
        this.x.mm.nn.prepare({
          m: N,
          n: D,
          k: L,
          batch: [B, heads],
          a: { tensor: a.scores, ld: L, stride: [heads * N * L, N * L] },
          b: { tensor: kv.v, ld: C, stride: [L * C, D] },
          c: { tensor: a.o, ld: C, stride: [N * C, D] },
        }),
        this.linear("none", a.o, M, `${pre}.attn2.to_out.0`, a.x, { accumulate: true }),
        // MLP.
        this.normModulate(table, a.t6, 6 * C, C, 3, 4),
        this.linear("gelu_tanh", a.xn, M, `${pre}.ff.net.0.proj`, a.ffh),
        this.linear("none", a.ffh, M, `${pre}.ff.net.2`, a.y),
        this.gateResidual(table, 5),
      ],
    };
  }
}
