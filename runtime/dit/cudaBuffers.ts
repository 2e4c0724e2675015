// Device storage of the DiT: parameters (matrices bf16, biases and modulation tables fp32) and the
// activations of one forward, plus where each checkpoint tensor lands (`placeWeights`), so uploading a
// checkpoint and filling random parameters walk the same table.
import { DeviceBuffer } from "../cuda/device.ts";
import type { DitConfig } from "./config.ts";

export interface BlockWeights {
  table: DeviceBuffer<"fp32">;
  q: DeviceBuffer<"bf16">;
  k: DeviceBuffer<"bf16">;
  v: DeviceBuffer<"bf16">;
  /** q, k, v biases back to back [3·hidden] (zeros without attention_bias). */
  qkvBias: DeviceBuffer<"fp32">;
  out: DeviceBuffer<"bf16">;
  outBias: DeviceBuffer<"fp32">;
  q2: DeviceBuffer<"bf16">;
  q2Bias: DeviceBuffer<"fp32">;
  k2: DeviceBuffer<"bf16">;
  k2Bias: DeviceBuffer<"fp32">;
  v2: DeviceBuffer<"bf16">;
  v2Bias: DeviceBuffer<"fp32">;
  out2: DeviceBuffer<"bf16">;
  out2Bias: DeviceBuffer<"fp32">;
  ff1: DeviceBuffer<"bf16">;
  ff1Bias: DeviceBuffer<"fp32">;
  ff2: DeviceBuffer<"bf16">;
  ff2Bias: DeviceBuffer<"fp32">;
  /** Cross-attention K then V of the encoded text, [2, batch·textTokens, hidden] bf16 (set by encodeText). */
  kv2: DeviceBuffer<"bf16">;
}

export interface DeviceWeights {
  patch: DeviceBuffer<"bf16">;
  patchBias: DeviceBuffer<"fp32">;
  cap1: DeviceBuffer<"bf16">;
  cap1Bias: DeviceBuffer<"fp32">;
  cap2: DeviceBuffer<"bf16">;
  cap2Bias: DeviceBuffer<"fp32">;
  te1: DeviceBuffer<"bf16">;
  te1Bias: DeviceBuffer<"fp32">;
  te2: DeviceBuffer<"bf16">;
  te2Bias: DeviceBuffer<"fp32">;
  ada: DeviceBuffer<"bf16">;
  adaBias: DeviceBuffer<"fp32">;
  finalTable: DeviceBuffer<"fp32">;
  proj: DeviceBuffer<"bf16">;
  projBias: DeviceBuffer<"fp32">;
  blocks: BlockWeights[];
}

const bf16 = (n: number) => DeviceBuffer.alloc(n * 2, "bf16");
const fp32 = (n: number) => DeviceBuffer.alloc(n * 4, "fp32");

export function allocWeights(c: DitConfig): DeviceWeights {
  const C = c.hidden;
  const p = c.patchSize;
  const blocks: BlockWeights[] = [];
  for (let i = 0; i < c.numLayers; i++)
    blocks.push({
      table: fp32(6 * C),
      q: bf16(C * C),
      k: bf16(C * C),
      v: bf16(C * C),
      qkvBias: fp32(3 * C).zero(),
      out: bf16(C * C),
      outBias: fp32(C),
      q2: bf16(C * C),
      q2Bias: fp32(C).zero(),
      k2: bf16(C * c.crossAttentionDim),
      k2Bias: fp32(C).zero(),
      v2: bf16(C * c.crossAttentionDim),
      v2Bias: fp32(C).zero(),
      out2: bf16(C * C),
      out2Bias: fp32(C),
      ff1: bf16(c.ffInnerDim * C),
      ff1Bias: fp32(c.ffInnerDim),
      ff2: bf16(C * c.ffInnerDim),
      ff2Bias: fp32(C),
      kv2: DeviceBuffer.alloc(0, "bf16"),
    });
  return {
    patch: bf16(C * c.inChannels * p * p),
    patchBias: fp32(C),
    cap1: bf16(C * c.captionChannels),
    cap1Bias: fp32(C),
    cap2: bf16(C * C),
    cap2Bias: fp32(C),
    te1: bf16(C * c.timestepChannels),
    te1Bias: fp32(C),
    te2: bf16(C * C),
    te2Bias: fp32(C),
    ada: bf16(6 * C * C),
    adaBias: fp32(6 * C),
    finalTable: fp32(2 * C),
    proj: bf16(p * p * c.outChannels * C),
    projBias: fp32(p * p * c.outChannels),
    blocks,
  };
}

export interface Placement {
  readonly name: string;
  readonly buf: DeviceBuffer;
  readonly offset: number;
  readonly length: number;
}

/** Where every checkpoint tensor (weightSpecs' names) lives on the device. */
export function placeWeights(c: DitConfig, w: DeviceWeights): Placement[] {
  const out: Placement[] = [];
  const put = (name: string, buf: DeviceBuffer, offset = 0, length = buf.length - offset) =>
    out.push({ name, buf, offset, length });
  const C = c.hidden;
  put("pos_embed.proj.weight", w.patch);
  put("pos_embed.proj.bias", w.patchBias);
  put("caption_projection.linear_1.weight", w.cap1);
  put("caption_projection.linear_1.bias", w.cap1Bias);
  put("caption_projection.linear_2.weight", w.cap2);
  put("caption_projection.linear_2.bias", w.cap2Bias);
  put("adaln_single.emb.timestep_embedder.linear_1.weight", w.te1);
  put("adaln_single.emb.timestep_embedder.linear_1.bias", w.te1Bias);
  put("adaln_single.emb.timestep_embedder.linear_2.weight", w.te2);
  put("adaln_single.emb.timestep_embedder.linear_2.bias", w.te2Bias);
  put("adaln_single.linear.weight", w.ada);
  put("adaln_single.linear.bias", w.adaBias);
  w.blocks.forEach((b, i) => {
    const pre = `transformer_blocks.${i}`;
    put(`${pre}.scale_shift_table`, b.table);
    put(`${pre}.attn1.to_q.weight`, b.q);
    put(`${pre}.attn1.to_k.weight`, b.k);
    put(`${pre}.attn1.to_v.weight`, b.v);
    if (c.attentionBias) {
      put(`${pre}.attn1.to_q.bias`, b.qkvBias, 0, C);
      put(`${pre}.attn1.to_k.bias`, b.qkvBias, C, C);
      put(`${pre}.attn1.to_v.bias`, b.qkvBias, 2 * C, C);
      put(`${pre}.attn2.to_q.bias`, b.q2Bias);
      put(`${pre}.attn2.to_k.bias`, b.k2Bias);
      put(`${pre}.attn2.to_v.bias`, b.v2Bias);
    }
    put(`${pre}.attn1.to_out.0.weight`, b.out);
    put(`${pre}.attn1.to_out.0.bias`, b.outBias);
    put(`${pre}.attn2.to_q.weight`, b.q2);
    put(`${pre}.attn2.to_k.weight`, b.k2);
    put(`${pre}.attn2.to_v.weight`, b.v2);
    put(`${pre}.attn2.to_out.0.weight`, b.out2);
    put(`${pre}.attn2.to_out.0.bias`, b.out2Bias);
    put(`${pre}.ff.net.0.proj.weight`, b.ff1);
    put(`${pre}.ff.net.0.proj.bias`, b.ff1Bias);
    put(`${pre}.ff.net.2.weight`, b.ff2);
    put(`${pre}.ff.net.2.bias`, b.ff2Bias);
  });
  put("scale_shift_table", w.finalTable);
  put("proj_out.weight", w.proj);
  put("proj_out.bias", w.projBias);
  return out;
}

export interface Activations {
  x: DeviceBuffer<"fp32">;
  xn: DeviceBuffer<"bf16">;
  q: DeviceBuffer<"bf16">;
  k: DeviceBuffer<"bf16">;
  v: DeviceBuffer<"bf16">;
  o: DeviceBuffer<"bf16">;
  y: DeviceBuffer<"bf16">;
  ffh: DeviceBuffer<"bf16">;
  scores: DeviceBuffer<"fp32">;
  probs: DeviceBuffer<"bf16">;
  patches: DeviceBuffer<"bf16">;
  projOut: DeviceBuffer<"fp32">;
  tfeat: DeviceBuffer<"bf16">;
  condF: DeviceBuffer<"fp32">;
  condB: DeviceBuffer<"bf16">;
  embedded: DeviceBuffer<"fp32">;
  t6: DeviceBuffer<"fp32">;
  textIn: DeviceBuffer<"bf16">;
  textF: DeviceBuffer<"fp32">;
  textH: DeviceBuffer<"bf16">;
}

export function allocActivations(
  c: DitConfig,
  batch: number,
  tokens: number,
  textTokens: number,
): Activations {
  const C = c.hidden;
  const M = batch * tokens;
  const p = c.patchSize;
  const T = batch * textTokens;
  return {
    x: fp32(M * C),
    xn: bf16(M * C),
    q: bf16(M * C),
    k: bf16(M * C),
    v: bf16(M * C),
    o: bf16(M * C),
    y: bf16(M * C),
    ffh: bf16(M * c.ffInnerDim),
    scores: fp32(c.numHeads * tokens * textTokens),
    probs: bf16(c.numHeads * tokens * textTokens),
    patches: bf16(M * c.inChannels * p * p),
    projOut: fp32(M * p * p * c.outChannels),
    tfeat: bf16(batch * c.timestepChannels),
    condF: fp32(batch * C),
    condB: bf16(batch * C),
    embedded: fp32(batch * C),
    t6: fp32(batch * 6 * C),
    textIn: bf16(T * c.captionChannels),
    textF: fp32(T * C),
    textH: bf16(T * C),
  };
}

/** Allocates each block's K/V buffer for `rows` = batch · textTokens encoded text rows. */
export function allocTextKv(c: DitConfig, w: DeviceWeights, rows: number): void {
  for (const b of w.blocks) {
    if (b.kv2.length === 2 * rows * c.hidden) continue;
    b.kv2.free();
    b.kv2 = bf16(2 * rows * c.hidden);
  }
}
