// Synthetic calibration with a known answer, for tests and the GPU check when no model is at hand.
// q = noise + λ·E[head][frame(token)], k = noise + λ·E[head][frame(token)], v = noise, with E random ±1
// vectors per (head, frame) and noise uniform in [−1, 1): a same-frame score gains about λ²·√head_dim,
// so λ = 0 gives diffuse attention (only dense attention reproduces it) and a large λ makes attention
// frame-local (every Attention Tile mask keeps the diagonal tiles, so the sparsest passes).
import { tokenCoords, seqLen, type Layout } from "../compiler/layout.ts";
import { randomArray } from "../runtime/reference.ts";
import type { LayerQkv } from "./search.ts";

export function frameLocalQkv(
  layout: Layout,
  locality: number,
  seed: number,
  batch = layout.batch,
): LayerQkv {
  const n = seqLen(layout);
  const { heads, kvHeads, headDim: d } = layout;
  const frames = frameOfTokens(layout);
  const group = heads / kvHeads;
  // One embedding per kv head: the query heads of a group share their key head's.
  const embed = randomArray(kvHeads * Math.max(1, layout.frames) * d, seed ^ 0x5eed);
  const f = layout.frames;
  const q = withFrames(
    randomArray(batch * n * heads * d, seed),
    frames,
    embed,
    locality,
    batch,
    heads,
    group,
    d,
    f,
  );
  const k = withFrames(
    randomArray(batch * n * kvHeads * d, seed + 1),
    frames,
    embed,
    locality,
    batch,
    kvHeads,
    1,
    d,
    f,
  );
  const v = Float32Array.from(randomArray(batch * n * kvHeads * d, seed + 2));
  return { q, k, v, shape: { batch, seqLen: n, heads, kvHeads, headDim: d } };
}

function frameOfTokens(layout: Layout): Int32Array {
  const n = seqLen(layout);
  const out = new Int32Array(n);
  const c = { frame: 0, row: 0, col: 0, text: false };
  for (let t = 0; t < n; t++) {
    tokenCoords(layout, t, c);
    out[t] = c.text ? -1 : c.frame;
  }
  return out;
}

/** noise[b, t, h, :] + λ·sign(embed[h / headsPerEmbed, frame(t), :]); text tokens get no embedding. */
function withFrames(
  noise: Float64Array,
  frames: Int32Array,
  embed: Float64Array,
  locality: number,
  batch: number,
  heads: number,
  headsPerEmbed: number,
  d: number,
  frameCount: number,
): Float32Array {
  const out = new Float32Array(noise.length);
  const n = frames.length;
  for (let b = 0; b < batch; b++)
    for (let t = 0; t < n; t++) {
      const f = frames[t]!;
      for (let h = 0; h < heads; h++) {
        const o = ((b * n + t) * heads + h) * d;
        const e = (Math.floor(h / headsPerEmbed) * frameCount + Math.max(f, 0)) * d;
        const scale = f < 0 ? 0 : locality;
        for (let x = 0; x < d; x++) out[o + x] = noise[o + x]! + scale * (embed[e + x]! < 0 ? -1 : 1);
      }
    }
  return out;
}
