// The DiT forward in float64 on the CPU: the reference the CUDA forward is tested against (tiny
// configs only — it is O(tokens² · hidden)). Self-attention goes through runtime/reference.ts with the
// layer's element mask; everything else follows OSP v1.2's OpenSoraT2V (ada_norm_single blocks).
import { referenceAttention } from "../reference.ts";
import { tokenGrid, type DitConfig } from "./config.ts";
import { applyRope, geluTanh, silu, timestepFeatures, tokenPosition, type Grid } from "./math.ts";
import type { WeightSource } from "./weights.ts";

export interface LatentDims {
  readonly batch: number;
  readonly channels: number;
  readonly frames: number;
  readonly height: number;
  readonly width: number;
}

/**
 * Patch vectors of a latent [B, C, T, H, W] as rows [(b, t, h/p, w/p), …]: "channel-first" orders a
 * row (c, i, j) like a Conv2d weight flattened (patch embedding); "channel-last" orders it (i, j, c)
 * like OSP's proj_out (unpatchify's einsum "nthwopqc->nctohpwq").
 */
export type PatchOrder = "channel-first" | "channel-last";

function patchIndex(order: PatchOrder, c: number, i: number, j: number, p: number, channels: number): number {
  return order === "channel-first" ? (c * p + i) * p + j : (i * p + j) * channels + c;
}

/** For each element of a latent [B, C, T, H, W], its place in the patch rows [(b, t, y/p, x/p), patch]. */
function patchPlaces(d: LatentDims, p: number, order: PatchOrder): Int32Array {
  const { batch: B, channels: C, frames: T, height: H, width: W } = d;
  const hp = H / p;
  const wp = W / p;
  const width = C * p * p;
  const places = new Int32Array(B * C * T * H * W);
  let e = 0;
  for (let b = 0; b < B; b++)
    for (let c = 0; c < C; c++)
      for (let t = 0; t < T; t++)
        for (let y = 0; y < H; y++)
          for (let x = 0; x < W; x++) {
            const row = ((b * T + t) * hp + Math.floor(y / p)) * wp + Math.floor(x / p);
            places[e++] = row * width + patchIndex(order, c, y % p, x % p, p, C);
          }
  return places;
}

export function patchify(latent: Float64Array, d: LatentDims, p: number, order: PatchOrder): Float64Array {
  const places = patchPlaces(d, p, order);
  const out = new Float64Array(places.length);
  for (let e = 0; e < places.length; e++) out[places[e]!] = latent[e]!;
  return out;
}

export function unpatchify(rows: Float64Array, d: LatentDims, p: number, order: PatchOrder): Float64Array {
  const places = patchPlaces(d, p, order);
  const out = new Float64Array(places.length);
  for (let e = 0; e < places.length; e++) out[e] = rows[places[e]!]!;
  return out;
}

/** y[r, o] = Σ_i x[r, i]·W[o, i] + bias[o]  (W stored [out, in] as in PyTorch). */
export function linear(
  x: Float64Array,
  rows: number,
  inF: number,
  w: Float64Array,
  bias: Float64Array | undefined,
  outF: number,
): Float64Array {
  const y = new Float64Array(rows * outF);
  for (let r = 0; r < rows; r++)
    for (let o = 0; o < outF; o++) {
      let s = bias ? bias[o]! : 0;
      const xo = r * inF;
      const wo = o * inF;
      for (let i = 0; i < inF; i++) s += x[xo + i]! * w[wo + i]!;
      y[r * outF + o] = s;
    }
  return y;
}

function mapInPlace(x: Float64Array, f: (v: number) => number): Float64Array {
  for (let i = 0; i < x.length; i++) x[i] = f(x[i]!);
  return x;
}

/** LayerNorm without affine parameters, then x·(1 + scale) + shift with per-sample shift/scale rows. */
function normModulate(
  x: Float64Array,
  rows: number,
  C: number,
  eps: number,
  perSample: number,
  shift: (b: number, c: number) => number,
  scale: (b: number, c: number) => number,
): Float64Array {
  const out = new Float64Array(rows * C);
  for (let r = 0; r < rows; r++) {
    const b = Math.floor(r / perSample);
    let mean = 0;
    for (let c = 0; c < C; c++) mean += x[r * C + c]!;
    mean /= C;
    let v = 0;
    for (let c = 0; c < C; c++) v += (x[r * C + c]! - mean) ** 2;
    const rstd = 1 / Math.sqrt(v / C + eps);
    for (let c = 0; c < C; c++)
      out[r * C + c] = (x[r * C + c]! - mean) * rstd * (1 + scale(b, c)) + shift(b, c);
  }
  return out;
}

/** Dense cross-attention: q [B, N, H, D] over k, v [B, L, H, D], the first `valid[b]` text tokens. */
function crossAttention(
  q: Float64Array,
  k: Float64Array,
  v: Float64Array,
  B: number,
  N: number,
  L: number,
  H: number,
  D: number,
  valid: readonly number[],
): Float64Array {
  const out = new Float64Array(B * N * H * D);
  const scale = 1 / Math.sqrt(D);
  const p = new Float64Array(L);
  for (let b = 0; b < B; b++)
    for (let n = 0; n < N; n++)
      for (let h = 0; h < H; h++) {
        const qo = ((b * N + n) * H + h) * D;
        let max = -Infinity;
        for (let j = 0; j < valid[b]!; j++) {
          let s = 0;
          const ko = ((b * L + j) * H + h) * D;
          for (let d = 0; d < D; d++) s += q[qo + d]! * k[ko + d]!;
          p[j] = s * scale;
          max = Math.max(max, p[j]!);
        }
        let sum = 0;
        for (let j = 0; j < valid[b]!; j++) sum += p[j] = Math.exp(p[j]! - max);
        for (let j = 0; j < valid[b]!; j++) {
          const vo = ((b * L + j) * H + h) * D;
          for (let d = 0; d < D; d++) out[qo + d]! += (p[j]! / sum) * v[vo + d]!;
        }
      }
  return out;
}

export interface DitInputs {
  /** [batch, inChannels, frames, height, width] */
  readonly latent: Float64Array;
  readonly dims: Omit<LatentDims, "channels">;
  /** Per sample, in the model's units (OSP: 0…1000). */
  readonly timesteps: readonly number[];
  /** [batch, textTokens, captionChannels] */
  readonly text: Float64Array;
  readonly textTokens: number;
  /** Valid (unpadded) text tokens per sample; all when omitted. */
  readonly textValid?: readonly number[];
}

/** Which query/key pairs layer `layer` attends (null: all). */
export type LayerMask = (layer: number) => ((q: number, k: number) => boolean) | null;

/** Tokens [start, start + count) of the patchified sequence (of every sample): one rank's slice. */
export interface TokenSlice {
  readonly start: number;
  readonly count: number;
}

/** A slice's inputs: its patch rows instead of the latent. */
export interface DitSliceInputs extends Omit<DitInputs, "latent"> {
  /** [batch, count, inChannels·p·p] patch rows of the slice's tokens, channel-first (patchify's order). */
  readonly patches: Float64Array;
}

/**
 * A self-attention the forward over a slice needs: q, k, v of the slice's tokens
 * [batch, count, heads, headDim] (RoPE applied at the tokens' global positions). The caller answers
 * with the attention output of the same tokens over the whole sequence (generator.next(out)).
 */
export interface CpuAttentionCall {
  readonly layer: number;
  readonly q: Float64Array;
  readonly k: Float64Array;
  readonly v: Float64Array;
  /** Which global (query, key) token pairs attend. */
  readonly allowed: (q: number, k: number) => boolean;
}

/** Output [batch, outChannels, frames, height, width]: the model's prediction (OSP: velocity / noise). */
export function forwardCpu(c: DitConfig, w: WeightSource, inp: DitInputs, mask: LayerMask): Float64Array {
  const { batch: B, frames, height, width } = inp.dims;
  const N = tokenGrid(c, { frames, height, width }).tokens;
  const patches = patchify(inp.latent, { ...inp.dims, channels: c.inChannels }, c.patchSize, "channel-first");
  const shape = { batch: B, seqLen: N, heads: c.numHeads, kvHeads: c.numHeads, headDim: c.headDim };
  const slice = forwardCpuSlice(c, w, { ...inp, patches }, mask, { start: 0, count: N });
  let r = slice.next();
  while (!r.done)
    r = slice.next(referenceAttention(r.value.q, r.value.k, r.value.v, shape, r.value.allowed).out);
  return unpatchify(r.value, { ...inp.dims, channels: c.outChannels }, c.patchSize, "channel-first");
}

/**
 * The forward over one slice of the tokens, as sequence parallelism runs it on a rank: every
 * per-token layer on the slice's rows only, self-attention handed to the caller (it needs every
 * rank's keys). Returns the slice's output rows [batch, count, outChannels·p·p] in patchify's
 * channel-first order (unpatchify(…, "channel-first") of all slices' rows is the latent output).
 */
export function* forwardCpuSlice(
  c: DitConfig,
  w: WeightSource,
  inp: DitSliceInputs,
  mask: LayerMask,
  slice: TokenSlice,
): Generator<CpuAttentionCall, Float64Array, Float64Array> {
  const { batch: B, frames, height, width } = inp.dims;
  const grid: Grid = tokenGrid(c, { frames, height, width });
  const total = grid.frames * grid.height * grid.width;
  const { start, count: N } = slice;
  if (!Number.isInteger(start) || !Number.isInteger(N) || start < 0 || N < 0 || start + N > total)
    throw new RangeError(`token slice [${start}, ${start + N}) outside the ${total} tokens`);
  const M = B * N;
  const C = c.hidden;
  const p = c.patchSize;
  if (inp.patches.length !== M * c.inChannels * p * p)
    throw new RangeError(
      `patches hold ${inp.patches.length} values, expected ${B}×${N}×${c.inChannels * p * p}`,
    );
  const L = inp.textTokens;
  const valid = inp.textValid ?? Array.from({ length: B }, () => L);
  const opt = (name: string) => (c.attentionBias ? w.read(name) : undefined);

  let x = linear(
    inp.patches,
    M,
    c.inChannels * p * p,
    w.read("pos_embed.proj.weight"),
    w.read("pos_embed.proj.bias"),
    C,
  );
  const tf = new Float64Array(B * c.timestepChannels);
  inp.timesteps.forEach((t, b) => tf.set(timestepFeatures(t, c.timestepChannels), b * c.timestepChannels));
  const te = "adaln_single.emb.timestep_embedder";
  const h1 = mapInPlace(
    linear(tf, B, c.timestepChannels, w.read(`${te}.linear_1.weight`), w.read(`${te}.linear_1.bias`), C),
    silu,
  );
  const embedded = linear(h1, B, C, w.read(`${te}.linear_2.weight`), w.read(`${te}.linear_2.bias`), C);
  const t6 = linear(
    mapInPlace(embedded.slice(), silu),
    B,
    C,
    w.read("adaln_single.linear.weight"),
    w.read("adaln_single.linear.bias"),
    6 * C,
  );

  const cp = "caption_projection";
  const y1 = mapInPlace(
    linear(
      inp.text,
      B * L,
      c.captionChannels,
      w.read(`${cp}.linear_1.weight`),
      w.read(`${cp}.linear_1.bias`),
      C,
    ),
    geluTanh,
  );
  const text = linear(y1, B * L, C, w.read(`${cp}.linear_2.weight`), w.read(`${cp}.linear_2.bias`), C);

  const H = c.numHeads;
  const D = c.headDim;
  const rope = { headDim: D, base: c.ropeBase, scales: [c.ropeScaleT, c.ropeScaleH, c.ropeScaleW] as const };
  for (let layer = 0; layer < c.numLayers; layer++) {
    const pre = `transformer_blocks.${layer}`;
    const table = w.read(`${pre}.scale_shift_table`);
    const mod = (i: number) => (b: number, ch: number) => table[i * C + ch]! + t6[b * 6 * C + i * C + ch]!;
    const gated = (y: Float64Array, gate: ((b: number, ch: number) => number) | null) => {
      for (let r = 0; r < M; r++)
        for (let ch = 0; ch < C; ch++)
          x[r * C + ch]! += (gate ? gate(Math.floor(r / N), ch) : 1) * y[r * C + ch]!;
    };

    // Self-attention with 3D RoPE on q and k.
    const xn = normModulate(x, M, C, c.normEps, N, mod(0), mod(1));
    const q = linear(xn, M, C, w.read(`${pre}.attn1.to_q.weight`), opt(`${pre}.attn1.to_q.bias`), C);
    const k = linear(xn, M, C, w.read(`${pre}.attn1.to_k.weight`), opt(`${pre}.attn1.to_k.bias`), C);
    const v = linear(xn, M, C, w.read(`${pre}.attn1.to_v.weight`), opt(`${pre}.attn1.to_v.bias`), C);
    for (let r = 0; r < M; r++) {
      const pos = tokenPosition(grid, start + (r % N));
      for (let h = 0; h < H; h++) {
        applyRope(q, r * C + h * D, pos, rope);
        applyRope(k, r * C + h * D, pos, rope);
      }
    }
    const allowed = mask(layer) ?? (() => true);
    const o = yield { layer, q, k, v, allowed };
    if (o.length !== M * C) throw new RangeError(`attention output of ${o.length} values, expected ${M * C}`);
    gated(
      linear(o, M, C, w.read(`${pre}.attn1.to_out.0.weight`), w.read(`${pre}.attn1.to_out.0.bias`), C),
      mod(2),
    );

    // Cross-attention (ada_norm_single: on the residual stream itself, no norm, no gate).
    const q2 = linear(x, M, C, w.read(`${pre}.attn2.to_q.weight`), opt(`${pre}.attn2.to_q.bias`), C);
    const k2 = linear(text, B * L, C, w.read(`${pre}.attn2.to_k.weight`), opt(`${pre}.attn2.to_k.bias`), C);
    const v2 = linear(text, B * L, C, w.read(`${pre}.attn2.to_v.weight`), opt(`${pre}.attn2.to_v.bias`), C);
    const o2 = crossAttention(q2, k2, v2, B, N, L, H, D, valid);
    gated(
      linear(o2, M, C, w.read(`${pre}.attn2.to_out.0.weight`), w.read(`${pre}.attn2.to_out.0.bias`), C),
      null,
    );

    // MLP (norm2 modulated by shift/scale_mlp; GELU-tanh).
    const xm = normModulate(x, M, C, c.normEps, N, mod(3), mod(4));
    const f = mapInPlace(
      linear(
        xm,
        M,
        C,
        w.read(`${pre}.ff.net.0.proj.weight`),
        w.read(`${pre}.ff.net.0.proj.bias`),
        c.ffInnerDim,
      ),
      geluTanh,
    );
    gated(
      linear(f, M, c.ffInnerDim, w.read(`${pre}.ff.net.2.weight`), w.read(`${pre}.ff.net.2.bias`), C),
      mod(5),
    );
  }

  const final = w.read("scale_shift_table");
  const xf = normModulate(
    x,
    M,
    C,
    c.normEps,
    N,
    (b, ch) => final[ch]! + embedded[b * C + ch]!,
    (b, ch) => final[C + ch]! + embedded[b * C + ch]!,
  );
  const outWidth = p * p * c.outChannels;
  const proj = linear(xf, M, C, w.read("proj_out.weight"), w.read("proj_out.bias"), outWidth);
  // proj_out's (i, j, c) order → patchify's (c, i, j): a permutation within each row.
  const out = new Float64Array(M * outWidth);
  for (let r = 0; r < M; r++)
    for (let ch = 0; ch < c.outChannels; ch++)
      for (let ij = 0; ij < p * p; ij++)
        out[r * outWidth + ch * p * p + ij] = proj[r * outWidth + ij * c.outChannels + ch]!;
  return out;
}
