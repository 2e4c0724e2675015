// The DiT's config parsing and weight validation (CPU only).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  checkWeights,
  OSP_V12,
  parseDitConfig,
  randomWeights,
  safetensorsWeights,
  tokenGrid,
  validateWeights,
  weightSpecs,
} from "../../runtime/dit/index.ts";
import { TINY } from "./dit-fixture.ts";
import { fromFloats, writeSafetensors, type Dtype, type RawTensor } from "../../runtime/io/safetensors.ts";

// A config.json in the shape of Open-Sora-Plan v1.2's transformer config (OpenSoraT2V's keys), with a
// 29-frame 720p training size: 8 latent frames of 90×160.
const OSP_CONFIG_JSON = {
  _class_name: "OpenSoraT2V",
  _diffusers_version: "0.28.0",
  activation_fn: "gelu-approximate",
  attention_bias: true,
  attention_head_dim: 96,
  attention_mode: "xformers",
  attention_type: "default",
  caption_channels: 4096,
  cross_attention_dim: 2304,
  double_self_attention: false,
  downsampler: null,
  dropout: 0.0,
  in_channels: 8,
  interpolation_scale_h: null,
  interpolation_scale_t: null,
  interpolation_scale_w: null,
  norm_elementwise_affine: false,
  norm_eps: 1e-6,
  norm_num_groups: 32,
  norm_type: "ada_norm_single",
  num_attention_heads: 24,
  num_embeds_ada_norm: 1000,
  num_layers: 32,
  num_vector_embeds: null,
  only_cross_attention: false,
  out_channels: 8,
  patch_size: 2,
  patch_size_t: 1,
  sample_size: [90, 160],
  sample_size_t: 8,
  upcast_attention: false,
  use_additional_conditions: null,
  use_linear_projection: false,
  use_rope: true,
};

describe("DiT config", () => {
  it("reads an OpenSoraT2V config.json: OSP v1.2's sizes, RoPE scales derived from the training size", () => {
    const c = parseDitConfig(JSON.stringify(OSP_CONFIG_JSON), "config.json");
    expect(c).toEqual({ ...OSP_V12, ropeScaleT: 0.5, ropeScaleH: 3, ropeScaleW: 4 });
    const explicit = {
      ...OSP_CONFIG_JSON,
      interpolation_scale_t: 1,
      interpolation_scale_h: 1,
      interpolation_scale_w: 1,
    };
    expect(parseDitConfig(explicit)).toEqual(OSP_V12);
  });

  it("derives hidden, MLP width and output channels from the given sizes", () => {
    expect(TINY.hidden).toBe(96);
    expect(TINY.ffInnerDim).toBe(384);
    expect(TINY.outChannels).toBe(4);
    expect(TINY.crossAttentionDim).toBe(96);
  });

  it("names every bad key at once", () => {
    const bad = () =>
      parseDitConfig(
        { num_layers: 0, attention_head_dim: 64, norm_type: "layer_norm", colour: "red" },
        "c.json",
      );
    expect(bad).toThrow(/c\.json/);
    expect(bad).toThrow(/num_layers must be a positive integer/);
    expect(bad).toThrow(/multiple of 6/);
    expect(bad).toThrow(/norm_type is "layer_norm"; this DiT implements "ada_norm_single"/);
    expect(bad).toThrow(/unknown key 'colour'/);
    expect(() => parseDitConfig("{not json")).toThrow(/not JSON/);
  });

  it("patchifies 29 frames at 720p to OSP's 28,800 tokens", () => {
    expect(tokenGrid(OSP_V12, { frames: 8, height: 90, width: 160 })).toEqual({
      frames: 8,
      height: 45,
      width: 80,
      tokens: 28800,
    });
    expect(() => tokenGrid(OSP_V12, { frames: 8, height: 91, width: 160 })).toThrow(/not divisible/);
  });
});

describe("DiT weights", () => {
  const dir = mkdtempSync(join(tmpdir(), "tilec-dit-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("has OSP v1.2's parameter names and count", () => {
    const specs = weightSpecs(OSP_V12);
    const names = specs.map((s) => s.name);
    expect(names).toContain("transformer_blocks.31.attn1.to_q.weight");
    expect(names).toContain("transformer_blocks.0.scale_shift_table");
    expect(names).toContain("adaln_single.emb.timestep_embedder.linear_1.weight");
    expect(names).toContain("caption_projection.linear_2.bias");
    expect(names).toContain("pos_embed.proj.weight");
    expect(specs.find((s) => s.name === "proj_out.weight")!.shape).toEqual([32, 2304]);
    expect(specs.find((s) => s.name === "transformer_blocks.0.ff.net.0.proj.weight")!.shape).toEqual([
      9216, 2304,
    ]);
    // OSP v1.2's transformer has about 2.7 B parameters.
    const params = specs.reduce((a, s) => a + s.shape.reduce((x, y) => x * y, 1), 0);
    expect(params).toBeGreaterThan(2.6e9);
    expect(params).toBeLessThan(2.8e9);
  });

  it("reports missing, extra, wrongly shaped and wrongly typed tensors together", () => {
    const meta = new Map(weightSpecs(TINY).map((s) => [s.name, { dtype: "BF16" as Dtype, shape: s.shape }]));
    expect(checkWeights(TINY, meta).ok).toBe(true);
    meta.delete("transformer_blocks.1.attn2.to_k.weight");
    meta.delete("transformer_blocks.0.attn2.to_k.weight");
    meta.set("transformer.extra.weight", { dtype: "F32", shape: [1] });
    meta.set("proj_out.bias", { dtype: "F32", shape: [15] });
    meta.set("scale_shift_table", { dtype: "I32", shape: [2, 96] });
    const r = checkWeights(TINY, meta);
    expect(r.ok).toBe(false);
    expect(r.missing).toEqual([
      "transformer_blocks.0.attn2.to_k.weight",
      "transformer_blocks.1.attn2.to_k.weight",
    ]);
    expect(r.extra).toEqual(["transformer.extra.weight"]);
    expect(r.wrongShape).toEqual([{ name: "proj_out.bias", expected: [16], found: [15] }]);
    expect(r.wrongDtype).toEqual([{ name: "scale_shift_table", dtype: "I32" }]);
  });

  it("validates a safetensors checkpoint and reads it back", () => {
    const { tensors, shapes } = randomWeights(TINY, 1);
    const file: Record<string, RawTensor> = {};
    for (const [name, values] of tensors) file[name] = fromFloats(values, shapes.get(name)!, "F32");
    const good = join(dir, "good.safetensors");
    writeSafetensors(good, file);
    const src = safetensorsWeights(good);
    try {
      validateWeights(TINY, src);
      const w = src.read("transformer_blocks.1.ff.net.2.weight");
      const want = tensors.get("transformer_blocks.1.ff.net.2.weight")!;
      expect(w.length).toBe(want.length);
      for (let i = 0; i < w.length; i += 97) expect(w[i]).toBeCloseTo(want[i]!, 6);
    } finally {
      src.close();
    }

    delete file["transformer_blocks.0.attn1.to_q.weight"];
    delete file["transformer_blocks.1.attn1.to_q.weight"];
    file["transformer_blocks.0.attn1.to_q.bias"] = fromFloats(new Float64Array(95), [95], "BF16");
    const bad = join(dir, "bad.safetensors");
    writeSafetensors(bad, file);
    const src2 = safetensorsWeights(bad);
    try {
      expect(() => validateWeights(TINY, src2)).toThrow(
        /missing \(2\): transformer_blocks\.\{0\.\.1\}\.attn1\.to_q\.weight/,
      );
      expect(() => validateWeights(TINY, src2)).toThrow(/to_q\.bias: shape \[95\], expected \[96\]/);
      expect(() => validateWeights(TINY, src2)).toThrow(/bad\.safetensors/);
    } finally {
      src2.close();
    }
  });
});
