// Sequence parallelism of the whole DiT in float64 on simulated ranks (runtime/parallel/ditHost.ts):
// each rank runs every per-token layer on its token slice, RoPE at the slice's global positions,
// self-attention through the Ulysses exchange plans; the assembled output must equal the unsliced
// forward (runtime/dit/cpu.ts). Slices cut frames and rows in the middle; token counts are not
// divisible by every world size. A sampler updating each rank's slice equals the whole-latent one.
import { describe, expect, it } from "vitest";
import { elementMask } from "../../compiler/elementMask.ts";
import { compileSpec } from "../../compiler/pipeline.ts";
import { parseDitConfig, tokenGrid } from "../../runtime/dit/config.ts";
import {
  forwardCpu,
  forwardCpuSlice,
  patchify,
  unpatchify,
  type CpuAttentionCall,
  type DitInputs,
  type LayerMask,
} from "../../runtime/dit/cpu.ts";
import { memoryWeights, randomWeights } from "../../runtime/dit/weights.ts";
import {
  forwardCpuSequenceParallel,
  forwardCpuSlices,
  gatherRowsHost,
} from "../../runtime/parallel/ditHost.ts";
import { partitionSequence, sliceSequence } from "../../runtime/parallel/partition.ts";
import { randomArray } from "../../runtime/reference.ts";
import { consistencySample, eulerSample, hostOps, type VectorOps } from "../../runtime/sampler/index.ts";

// 12 heads of 6 (divisible by 1, 2, 3 and 4): the smallest head RoPE's three thirds allow.
const CONFIG = parseDitConfig({
  num_layers: 2,
  num_attention_heads: 12,
  attention_head_dim: 6,
  in_channels: 4,
  caption_channels: 16,
  timestep_channels: 16,
  interpolation_scale_t: 1,
  interpolation_scale_h: 0.5,
  interpolation_scale_w: 1,
});
const TEXT = 5;

/** Layer 0 full attention, layer 1 Attention Tile 1 (a sparse mask over global token indices). */
function masks(frames: number, height: number, width: number): LayerMask {
  const text = `layout l { video ${frames} x ${height} x ${width} heads 12 head_dim 6 dtype bf16 }
kernel tile1 { layout l mask attention_tile(1) block 16 x 16 targets cpu }`;
  const k = compileSpec(text, "sp.tile").spec!.kernels.get("tile1")!;
  const tile = elementMask(k.layout, k.mask);
  return (layer) => (layer === 0 ? null : tile);
}

function inputs(latent: { frames: number; height: number; width: number }, seed: number): DitInputs {
  const B = 2;
  return {
    latent: randomArray(B * CONFIG.inChannels * latent.frames * latent.height * latent.width, seed),
    dims: { batch: B, ...latent },
    timesteps: [640, 90],
    text: randomArray(B * TEXT * CONFIG.captionChannels, seed + 1),
    textTokens: TEXT,
    textValid: [TEXT, 3],
  };
}

const maxRel = (a: Float64Array, b: Float64Array) => {
  let err = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    err = Math.max(err, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(b[i]!));
  }
  return err / scale;
};

const { tensors, shapes } = randomWeights(CONFIG, 21);
const weights = memoryWeights(tensors, shapes);

describe("the DiT on N simulated ranks, each on its token slice", () => {
  // 3×5×7 = 105 tokens (frames of 35, rows of 7): 2 ranks 53 + 52, 3 ranks 35 each, 4 ranks 27 + 26·3.
  // 2×5×7 = 70 tokens: 3 ranks 24 + 23 + 23, 4 ranks 18 + 18 + 17 + 17.
  const cases = [
    { latent: { frames: 3, height: 10, width: 14 }, sizes: [1, 2, 3, 4] },
    { latent: { frames: 2, height: 10, width: 14 }, sizes: [3, 4] },
  ];
  for (const { latent, sizes } of cases) {
    const grid = tokenGrid(CONFIG, latent);
    const inp = inputs(latent, 7);
    const mask = masks(grid.frames, grid.height, grid.width);
    const whole = forwardCpu(CONFIG, weights, inp, mask);
    it.each(sizes)(`${grid.tokens} tokens on %i rank(s) equal the unsliced forward`, (n) => {
      const seq = partitionSequence(grid.tokens, n);
      const perFrame = grid.height * grid.width;
      if (n === 4) {
        // The slices really do cut frames and rows in the middle.
        expect(seq.starts.slice(1).some((s) => s % perFrame !== 0 && s % grid.width !== 0)).toBe(true);
      }
      const sp = forwardCpuSequenceParallel(CONFIG, weights, inp, mask, n);
      expect(sp.output.every(Number.isFinite)).toBe(true);
      expect(maxRel(sp.output, whole)).toBeLessThan(1e-12);
      // Each rank's rows are its tokens' rows of the whole output, nothing more.
      const p = CONFIG.patchSize;
      const wholeRows = patchify(whole, { ...inp.dims, channels: CONFIG.outChannels }, p, "channel-first");
      sp.slices.forEach((rows, r) => {
        expect(rows.length).toBe(2 * seq.counts[r]! * CONFIG.outChannels * p * p);
        expect(maxRel(rows, sliceSequence(wholeRows, 2, seq, CONFIG.outChannels * p * p, r))).toBeLessThan(
          1e-12,
        );
      });
    });
  }

  it("a slice's q and k carry RoPE at the tokens' global positions (the start matters)", () => {
    const latent = { frames: 3, height: 10, width: 14 };
    const inp = inputs(latent, 7);
    const p = CONFIG.patchSize;
    const width = CONFIG.inChannels * p * p;
    const rows = patchify(inp.latent, { ...inp.dims, channels: CONFIG.inChannels }, p, "channel-first");
    const firstQ = (start: number, count: number, at = start) =>
      (
        forwardCpuSlice(
          CONFIG,
          weights,
          { ...inp, patches: sliceRange(rows, 2, 105, width, at, count) },
          () => null,
          {
            start,
            count,
          },
        ).next().value as CpuAttentionCall
      ).q;
    const whole = firstQ(0, 105);
    const C = CONFIG.hidden;
    const want = sliceRange(whole, 2, 105, C, 40, 27); // starts in frame 1, row 0, column 5
    expect(maxRel(firstQ(40, 27), want)).toBe(0);
    // The same rows numbered from 0 (what a forward ignorant of its slice would do) differ.
    expect(maxRel(firstQ(0, 27, 40), want)).toBeGreaterThan(1e-3);
  });
});

/** Rows [start, start + count) of every batch of [batch, total, width]. */
function sliceRange(
  x: Float64Array,
  batch: number,
  total: number,
  width: number,
  start: number,
  count: number,
) {
  const out = new Float64Array(batch * count * width);
  for (let b = 0; b < batch; b++)
    out.set(x.subarray((b * total + start) * width, (b * total + start + count) * width), b * count * width);
  return out;
}

/** A sampler state held as one slice per simulated rank; every operation is per slice. */
const slicedOps: VectorOps<Float64Array[]> = {
  combine: (out, terms) =>
    out.forEach((o, r) =>
      hostOps.combine(
        o,
        terms.map(([c, v]) => [c, v[r]!] as const),
      ),
    ),
  normal: () => {
    throw new Error("not used: Euler and consistency sampling draw no noise");
  },
  alloc: (like) => like.map((x) => new Float64Array(x.length)),
  free: () => {},
};

describe("sampling with each rank updating its own slice", () => {
  const latent = { frames: 2, height: 10, width: 14 };
  const grid = tokenGrid(CONFIG, latent);
  const mask = masks(grid.frames, grid.height, grid.width);
  const inp = inputs(latent, 11);
  const p = CONFIG.patchSize;
  const width = CONFIG.inChannels * p * p;
  const dims = { ...inp.dims, channels: CONFIG.inChannels };

  it.each([
    ["Euler, 3 steps", 3],
    ["consistency, 2 segments of 6 teacher steps", 4],
  ] as const)("%s on 4 ranks gathers to the whole-latent result", (_, ranks) => {
    const sample = <T>(model: (x: T, t: number) => T, ops: VectorOps<T>, x: T) =>
      ranks === 3
        ? eulerSample((y, t) => model(y, t), ops, x, { steps: 3 })
        : consistencySample((y, t) => model(y, t), ops, x, { teacherSteps: 6, segments: 2 });
    const wholeX = inp.latent.slice();
    sample(
      (x: Float64Array, t) =>
        forwardCpu(CONFIG, weights, { ...inp, latent: x, timesteps: [t * 1000, t * 1000] }, mask),
      hostOps,
      wholeX,
    );
    const seq = partitionSequence(grid.tokens, ranks);
    const rows = patchify(inp.latent, dims, p, "channel-first");
    const slices = seq.counts.map((_, r) => sliceSequence(rows, 2, seq, width, r));
    sample(
      (x: Float64Array[], t) =>
        forwardCpuSlices(CONFIG, weights, { ...inp, timesteps: [t * 1000, t * 1000] }, x, mask),
      slicedOps,
      slices,
    );
    const gathered = unpatchify(gatherRowsHost(slices, 2, seq, width), dims, p, "channel-first");
    expect(maxRel(gathered, wholeX)).toBeLessThan(1e-12);
    expect(maxRel(gathered, inp.latent)).toBeGreaterThan(1e-3);
  });
});
