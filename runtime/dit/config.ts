// The DiT's configuration: an Open-Sora-Plan-v1.2-style video transformer (OpenSoraT2V with
// ada_norm_single, 3D RoPE, cross-attention to projected text embeddings, GELU-tanh MLP), read from
// JSON. Field names follow the diffusers config.json of the checkpoint (num_layers, attention_head_dim…)
// so a checkpoint's config reads as is; unknown fields are reported, not silently ignored.

export interface DitConfig {
  readonly numLayers: number;
  readonly numHeads: number;
  readonly headDim: number;
  /** heads × headDim */
  readonly hidden: number;
  /** VAE latent channels in and out. */
  readonly inChannels: number;
  readonly outChannels: number;
  /** Spatial patch size (p × p); the temporal patch is 1 (as in OSP v1.2's PatchEmbed2D). */
  readonly patchSize: number;
  readonly patchSizeT: number;
  /** Text encoder width (mT5-XXL: 4096), projected to `crossAttentionDim`. */
  readonly captionChannels: number;
  readonly crossAttentionDim: number;
  /** MLP width (diffusers FeedForward default: 4 × hidden). */
  readonly ffInnerDim: number;
  readonly normEps: number;
  readonly attentionBias: boolean;
  /** RoPE: positions divided by these before the rotation (OSP's interpolation_scale_t/h/w). */
  readonly ropeScaleT: number;
  readonly ropeScaleH: number;
  readonly ropeScaleW: number;
  readonly ropeBase: number;
  /** Width of the sinusoidal timestep features (diffusers Timesteps(256)). */
  readonly timestepChannels: number;
}

/** Open-Sora-Plan v1.2 (the 29×720p and 93×720p checkpoints share the transformer). */
export const OSP_V12: DitConfig = {
  numLayers: 32,
  numHeads: 24,
  headDim: 96,
  hidden: 2304,
  inChannels: 8,
  outChannels: 8,
  patchSize: 2,
  patchSizeT: 1,
  captionChannels: 4096,
  crossAttentionDim: 2304,
  ffInnerDim: 4 * 2304,
  normEps: 1e-6,
  attentionBias: true,
  ropeScaleT: 1,
  ropeScaleH: 1,
  ropeScaleW: 1,
  ropeBase: 10000,
  timestepChannels: 256,
};

export class DitConfigError extends Error {
  override readonly name = "DitConfigError";
}

// JSON key → [our field, kind]. Keys of the diffusers config we read; the listed ignorable keys carry
// no shape information for this forward (dropout, class names...).
const KEYS: Record<string, [keyof DitConfig, "int" | "num" | "bool"]> = {
  num_layers: ["numLayers", "int"],
  num_attention_heads: ["numHeads", "int"],
  attention_head_dim: ["headDim", "int"],
  in_channels: ["inChannels", "int"],
  out_channels: ["outChannels", "int"],
  patch_size: ["patchSize", "int"],
  patch_size_t: ["patchSizeT", "int"],
  caption_channels: ["captionChannels", "int"],
  cross_attention_dim: ["crossAttentionDim", "int"],
  ff_inner_dim: ["ffInnerDim", "int"],
  norm_eps: ["normEps", "num"],
  attention_bias: ["attentionBias", "bool"],
  interpolation_scale_t: ["ropeScaleT", "num"],
  interpolation_scale_h: ["ropeScaleH", "num"],
  interpolation_scale_w: ["ropeScaleW", "num"],
  rope_base: ["ropeBase", "num"],
  timestep_channels: ["timestepChannels", "int"],
};

// Keys of OSP v1.2's config.json that describe training or options this forward fixes (the ones it
// fixes are checked below).
const IGNORED = new Set([
  "_class_name",
  "_diffusers_version",
  "_name_or_path",
  "dropout",
  "norm_num_groups",
  "num_vector_embeds",
  "num_embeds_ada_norm",
  "use_linear_projection",
  "only_cross_attention",
  "double_self_attention",
  "upcast_attention",
  "attention_type",
  "attention_mode",
  "use_additional_conditions",
  "use_stable_fp32",
  "downsampler",
]);

// Options this forward implements one value of; anything else is an error, not a silent mismatch.
const FIXED: Record<string, unknown> = {
  norm_type: "ada_norm_single",
  activation_fn: "gelu-approximate",
  norm_elementwise_affine: false,
  use_rope: true,
};

/**
 * Reads a config from JSON text or an object. Missing keys take OSP v1.2's values; `hidden` is
 * heads × headDim. Throws a DitConfigError naming every bad key.
 */
export function parseDitConfig(json: string | Record<string, unknown>, file = "<config>"): DitConfig {
  let obj: Record<string, unknown>;
  if (typeof json === "string") {
    try {
      obj = JSON.parse(json) as Record<string, unknown>;
    } catch (e) {
      throw new DitConfigError(`${file}: not JSON (${e instanceof Error ? e.message : String(e)})`);
    }
  } else obj = json;
  if (obj === null || typeof obj !== "object" || Array.isArray(obj))
    throw new DitConfigError(`${file}: the config must be a JSON object`);
  const problems: string[] = [];
  const out: Record<string, unknown> = { ...OSP_V12 };
  const given = new Set<string>();
  for (const [key, value] of Object.entries(obj)) {
    if (IGNORED.has(key) || value === null || key === "sample_size" || key === "sample_size_t") continue;
    if (key in FIXED) {
      if (value !== FIXED[key])
        problems.push(
          `${key} is ${JSON.stringify(value)}; this DiT implements ${JSON.stringify(FIXED[key])}`,
        );
      continue;
    }
    const spec = KEYS[key];
    if (!spec) {
      problems.push(`unknown key '${key}'`);
      continue;
    }
    const [field, kind] = spec;
    const ok =
      kind === "bool"
        ? typeof value === "boolean"
        : typeof value === "number" &&
          Number.isFinite(value) &&
          value > 0 &&
          (kind === "num" || Number.isInteger(value));
    if (!ok) {
      problems.push(
        `${key} must be ${kind === "bool" ? "true or false" : `a positive ${kind === "int" ? "integer" : "number"}`}, got ${JSON.stringify(value)}`,
      );
      continue;
    }
    out[field] = value;
    given.add(field);
  }
  const c = out as unknown as { -readonly [K in keyof DitConfig]: DitConfig[K] };
  // OpenSoraT2V derives RoPE interpolation scales the config leaves null from the training size:
  // t: sample_size_t/16 (odd: (sample_size_t − 1)//16 + 1), h: sample_size[0]/30, w: sample_size[1]/40.
  const size = obj.sample_size;
  const sizeT = obj.sample_size_t;
  const hw = typeof size === "number" ? [size, size] : Array.isArray(size) ? size : undefined;
  if (!given.has("ropeScaleT") && typeof sizeT === "number" && sizeT > 0)
    c.ropeScaleT = sizeT % 2 === 1 ? Math.floor((sizeT - 1) / 16) + 1 : sizeT / 16;
  if (hw && typeof hw[0] === "number" && typeof hw[1] === "number") {
    if (!given.has("ropeScaleH")) c.ropeScaleH = hw[0] / 30;
    if (!given.has("ropeScaleW")) c.ropeScaleW = hw[1] / 40;
  }
  c.hidden = c.numHeads * c.headDim;
  if (!given.has("outChannels")) c.outChannels = c.inChannels;
  if (!given.has("ffInnerDim")) c.ffInnerDim = 4 * c.hidden;
  if (!given.has("crossAttentionDim")) c.crossAttentionDim = c.hidden;
  if (c.crossAttentionDim !== c.hidden)
    problems.push(
      `cross_attention_dim (${c.crossAttentionDim}) must equal heads × head_dim (${c.hidden}): the caption projection maps text to the hidden width`,
    );
  if (c.patchSizeT !== 1)
    problems.push(`patch_size_t must be 1 (OSP v1.2's 2D patch embedding), got ${c.patchSizeT}`);
  if (c.headDim % 6 !== 0)
    problems.push(`attention_head_dim (${c.headDim}) must be a multiple of 6: 3D RoPE rotates three halves`);
  if (c.timestepChannels % 2 !== 0) problems.push(`timestep_channels must be even`);
  if (problems.length) throw new DitConfigError(`${file}: ${problems.join("; ")}`);
  return c;
}

/** Token grid after patchify for a latent of frames × height × width. */
export function tokenGrid(
  config: DitConfig,
  latent: { frames: number; height: number; width: number },
): { frames: number; height: number; width: number; tokens: number } {
  const p = config.patchSize;
  if (latent.height % p || latent.width % p)
    throw new DitConfigError(
      `latent ${latent.height}×${latent.width} is not divisible by the patch size ${p}`,
    );
  const g = { frames: latent.frames, height: latent.height / p, width: latent.width / p };
  return { ...g, tokens: g.frames * g.height * g.width };
}
