// A tiny DiT shared by the DiT tests: 2 layers, 2 heads of 48, a 3×10×14 latent (3×5×7 = 105 tokens
// after patchify, an odd length), batch 2, 9 text tokens, and a spec whose model section runs full
// attention in layer 0, Attention Tile 1:2 in layer 1, and full attention everywhere for steps 0–2.
import { compileSpec } from "../../compiler/pipeline.ts";
import { elementMask } from "../../compiler/elementMask.ts";
import { kernelFor, type CheckedSpec } from "../../compiler/check.ts";
import { parseDitConfig, type DitConfig } from "../../runtime/dit/config.ts";
import { randomArray } from "../../runtime/reference.ts";
import type { DitInputs, LayerMask } from "../../runtime/dit/cpu.ts";

/** The tiny DiT with `heads` heads of 48 (the sequence-parallel tests need heads divisible by 2, 3, 4). */
export function tinyDit(heads: number): DitConfig {
  return parseDitConfig({
    num_layers: 2,
    num_attention_heads: heads,
    attention_head_dim: 48,
    in_channels: 4,
    caption_channels: 32,
    timestep_channels: 32,
    interpolation_scale_t: 1,
    interpolation_scale_h: 0.5,
    interpolation_scale_w: 1,
  });
}

export const TINY: DitConfig = tinyDit(2);

export const TINY_LATENT = { frames: 3, height: 10, width: 14 } as const;
export const TINY_BATCH = 2;
export const TINY_TEXT = 9;

export const TINY_SPEC = `
layout tiny { video 3 x 5 x 7 batch 2 heads 2 head_dim 48 dtype bf16 }
kernel full  { layout tiny mask full              block 64 x 32 targets cuda, cpu }
kernel tile1 { layout tiny mask attention_tile(1) block 64 x 32 targets cuda, cpu }
model tiny_model {
  layers 2
  steps 10
  layer 0 .. 0 use full
  layer 1 .. 1 use tile1
  step 0 .. 2 layer all use full
}
`;

export function tinySpec(): CheckedSpec {
  const r = compileSpec(TINY_SPEC, "tiny.tile");
  if (!r.spec)
    throw new Error(r.diagnostics.map((d) => `${d.span.line}:${d.span.col} ${d.message}`).join("\n"));
  return r.spec;
}

/** The element masks the model section assigns at a model step (undefined: outside a sampler). */
export function tinyMasks(spec: CheckedSpec, step?: number): LayerMask {
  const model = spec.models.get("tiny_model")!;
  return (layer) => {
    const k = spec.kernels.get(kernelFor(model, layer, step))!;
    return elementMask(k.layout, k.mask);
  };
}

export function tinyInputs(seed: number, textValid = [TINY_TEXT, 5]): DitInputs {
  const { frames, height, width } = TINY_LATENT;
  const latent = randomArray(TINY_BATCH * TINY.inChannels * frames * height * width, seed);
  const text = randomArray(TINY_BATCH * TINY_TEXT * TINY.captionChannels, seed + 1);
  return {
    latent,
    dims: { batch: TINY_BATCH, frames, height, width },
    timesteps: [730, 120],
    text,
    textTokens: TINY_TEXT,
    textValid,
  };
}
