// The layer-wise search on the CPU reference: known answers on synthetic Q/K/V (frame-local attention →
// the sparsest Attention Tile mask; diffuse attention → dense), the selection rule itself, the .tile it
// writes (compiles, keeps the base model's steps), the calibration file format's errors, and the CLI.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it, vi } from "vitest";
import { main, mainAsync } from "../../cli/main.ts";
import { compileSpec } from "../../compiler/pipeline.ts";
import type { CheckedSpec } from "../../compiler/check.ts";
import { fromFloats, writeSafetensors } from "../../runtime/io/safetensors.ts";
import { openCalibration, saveCalibration } from "../../search/calibration.ts";
import { freshModelName, modelSection, specWithoutModels } from "../../search/modelTile.ts";
import { candidatesOf, choose, searchLayers, searchRows, SearchError } from "../../search/search.ts";
import { frameLocalQkv } from "../../search/synthetic.ts";

// Frames of 16 tokens and 16-token blocks: plan density equals the masks' element density.
export const TINY = `# tiny video: 4 frames of 4x4 tokens
layout tiny { video 4 x 4 x 4  heads 2  head_dim 16  dtype fp32 }
kernel full     { layout tiny  mask full               block 16 x 16  targets cuda, cpu }
kernel tile_1_3 { layout tiny  mask attention_tile(1)  block 16 x 16  targets cuda, cpu }
kernel tile_2_2 { layout tiny  mask attention_tile(2)  block 16 x 16  targets cuda, cpu }

# an example the search replaces
model tiny_example {
  layers 4
  steps 10
  layer 0 .. 3 use full
  step 0 .. 1 layer all use full
}
`;

const dir = mkdtempSync(join(tmpdir(), "tilec-search-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function tinySpec(text = TINY): CheckedSpec {
  const r = compileSpec(text, "tiny.tile");
  if (!r.spec) throw new Error(r.diagnostics.map((d) => d.message).join("\n"));
  return r.spec;
}

// λ per layer: 0 = diffuse attention, 3 = frame-local (off-frame weights ~e^-36).
const LOCALITY = [0, 3, 3, 0];
const spec = tinySpec();
const layout = spec.layouts.get("tiny")!;
const layer = (i: number) => frameLocalQkv(layout, LOCALITY[i]!, 1000 + i);

describe("searchLayers on the CPU reference", () => {
  it("orders candidates densest first by plan density", () => {
    const c = candidatesOf(spec);
    expect(c.map((x) => x.kernel.name)).toEqual(["full", "tile_2_2", "tile_1_3"]);
    // attention_tile(2) on 4 frames: global frames 0, 2 → 14 of 16 frame pairs; (1): frame 0 → 10 of 16.
    expect(c.map((x) => x.density)).toEqual([1, 14 / 16, 10 / 16]);
  });

  it("frame-local layers get the sparsest mask, diffuse layers dense attention", async () => {
    const progress: string[] = [];
    const r = await searchLayers(spec, layer, {
      layers: 4,
      threshold: 0.05,
      device: "cpu",
      onProgress: (done, total, label) => progress.push(`${done}/${total} ${label}`),
    });
    expect(r.layers.map((l) => l.kernel)).toEqual(["full", "tile_1_3", "tile_1_3", "full"]);
    expect(progress).toHaveLength(16);
    expect(progress[15]).toBe("16/16 layer 3: tile_1_3");
    for (const l of [r.layers[1]!, r.layers[2]!]) {
      expect(l.relL2).toBeLessThan(1e-6);
      expect(l.errors.every((e) => e.passed)).toBe(true);
    }
    // Diffuse attention: every sparse mask is far off, and dense attention is exact.
    for (const l of [r.layers[0]!, r.layers[3]!]) {
      expect(l.relL2).toBe(0);
      expect(l.errors.filter((e) => e.kernel !== "full").every((e) => e.relL2 > 0.1 && !e.passed)).toBe(true);
      // MSE is the squared difference averaged over the elements: ‖Δ‖² / count = rel² · ‖ref‖² / count.
      expect(l.errors[1]!.mse).toBeGreaterThan(0);
    }
    expect(r.rows).toBe(64);
    expect(r.predictedSpeedup).toBeCloseTo(4 / (1 + 10 / 16 + 10 / 16 + 1), 12);
    expect(r.flopsSpeedup).toBeCloseTo(r.predictedSpeedup, 12);
  });

  it("the metric changes the verdict: MSE thresholds are in squared output units", async () => {
    const strict = await searchLayers(spec, layer, {
      layers: 1,
      threshold: 1e-9,
      metric: "mse",
      device: "cpu",
    });
    const loose = await searchLayers(spec, layer, { layers: 1, threshold: 1, metric: "mse", device: "cpu" });
    expect(strict.layers[0]!.kernel).toBe("full");
    expect(loose.layers[0]!.kernel).toBe("tile_1_3");
  });

  it("measures on sampled rows when asked, including both ends", async () => {
    expect(searchRows(10_000, undefined, 1)).toHaveLength(256);
    expect(searchRows(100, undefined, 1)).toHaveLength(100);
    const rows = searchRows(64, 8, 3);
    expect(rows).toHaveLength(8);
    expect(rows[0]).toBe(0);
    expect(rows[7]).toBe(63);
    const r = await searchLayers(spec, layer, { layers: 2, threshold: 0.05, device: "cpu", rows: 8 });
    expect(r.rows).toBe(8);
    expect(r.layers.map((l) => l.kernel)).toEqual(["full", "tile_1_3"]);
  });

  it("rejects calibration that does not fit the layout, and bad options", async () => {
    const wrong = () => frameLocalQkv({ ...layout, heads: 4, kvHeads: 4 }, 0, 1);
    await expect(searchLayers(spec, wrong, { layers: 1, threshold: 0.1, device: "cpu" })).rejects.toThrow(
      /heads 4 ≠ layout's 2.*write a layout with the calibration's heads/,
    );
    await expect(searchLayers(spec, layer, { layers: 1, threshold: 0, device: "cpu" })).rejects.toThrow(
      /threshold must be a positive number/,
    );
    expect(() => candidatesOf(spec, ["tile_9"])).toThrow(/no kernel 'tile_9'/);
    const twoLayouts = tinySpec(
      TINY +
        "layout other { video 2 x 4 x 4 heads 1 head_dim 8 }\nkernel o { layout other mask full block 16 x 16 }\n",
    );
    expect(() => candidatesOf(twoLayouts)).toThrow(SearchError);
    expect(() => candidatesOf(twoLayouts)).toThrow(/2 layouts \(tiny, other\).*--kernels/);
  });
});

describe("the selection rule", () => {
  const c = candidatesOf(spec); // full 1, tile_2_2 0.875, tile_1_3 0.625
  const err = (relL2: number) => ({ sumSq: relL2 * relL2, refSq: 1, count: 1 });
  it("takes the sparsest passing candidate even when a denser one fails (masks need not nest)", () => {
    const l = choose(0, c, [err(0), err(0.3), err(0.01)], 0.1, "rel-l2");
    expect(l.kernel).toBe("tile_1_3");
    expect(l.errors.map((e) => e.passed)).toEqual([true, false, true]);
  });
  it("falls back to the lowest error, flagged, when nothing passes; NaN never passes", () => {
    const l = choose(3, c, [err(NaN), err(0.3), err(0.2)], 0.1, "rel-l2");
    expect(l).toMatchObject({ kernel: "tile_1_3", overThreshold: true, layer: 3 });
    expect(choose(0, c, [err(0), err(NaN), err(NaN)], 0.1, "rel-l2").kernel).toBe("full");
  });
  it("the threshold is strict (error < r)", () => {
    expect(choose(0, c, [err(0), err(0.1), err(0.5)], 0.1, "rel-l2").kernel).toBe("full");
  });
});

describe("the searched .tile", () => {
  it("groups consecutive layers and keeps step overrides", () => {
    const text = modelSection({
      name: "m",
      layerKernels: ["full", "full", "a", "b", "b", "b"],
      steps: 100,
      stepOverrides: [
        { steps: [0, 4], layers: [0, 5], kernel: "full" },
        { steps: [5, 9], layers: [2, 3], kernel: "a" },
      ],
      comment: ["hello"],
    });
    expect(text).toBe(
      [
        "# hello",
        "model m {",
        "  layers 6",
        "  steps 100",
        "  layer 0 .. 1  use full",
        "  layer 2       use a",
        "  layer 3 .. 5  use b",
        "  step 0 .. 4 layer all use full",
        "  step 5 .. 9 layer 2 .. 3 use a",
        "}",
        "",
      ].join("\n"),
    );
  });

  it("drops the spec's models and their comments, keeps everything else verbatim", () => {
    const out = specWithoutModels(TINY, "tiny.tile");
    expect(out).not.toMatch(/model|an example the search replaces/);
    expect(out).toContain("# tiny video: 4 frames of 4x4 tokens\nlayout tiny");
    expect(out).toContain(
      "kernel tile_2_2 { layout tiny  mask attention_tile(2)  block 16 x 16  targets cuda, cpu }",
    );
    expect(freshModelName("tiny", new Set(["tiny"]))).toBe("tiny_2");
    expect(freshModelName("9 lives!", new Set())).toBe("m_9_lives_");
  });
});

describe("calibration files", () => {
  it("round trip through saveCalibration / openCalibration (bf16 storage rounds the values)", () => {
    const path = join(dir, "cal.safetensors");
    saveCalibration(path, 2, layer, "BF16");
    const cal = openCalibration(path);
    try {
      expect(cal.layers).toBe(2);
      expect(cal.shape).toEqual({ batch: 1, seqLen: 64, heads: 2, kvHeads: 2, headDim: 16 });
      expect(cal.metadata).toMatchObject({ format: "tilec-calibration", layout: "bshd" });
      const a = cal.read(1).q as Float32Array;
      const b = layer(1).q as Float32Array;
      for (let i = 0; i < a.length; i += 97)
        expect(Math.abs(a[i]! - b[i]!)).toBeLessThanOrEqual(Math.abs(b[i]!) / 128);
      expect(() => cal.read(2)).toThrow(/no layer 2 \(the file has layers 0\.\.1\)/);
    } finally {
      cal.close();
    }
  });

  const t = (shape: number[]) => fromFloats(new Float32Array(shape.reduce((a, b) => a * b, 1)), shape, "F32");
  const cases: [string, Record<string, ReturnType<typeof t>>, RegExp][] = [
    [
      "no calibration names",
      { "blocks.0.attn": t([1]) },
      /no calibration tensors: expected names layers\.\{i\}\.q.*found blocks\.0\.attn/,
    ],
    [
      "a missing tensor",
      {
        "layers.0.q": t([1, 4, 1, 2]),
        "layers.0.k": t([1, 4, 1, 2]),
        "layers.0.v": t([1, 4, 1, 2]),
        "layers.1.q": t([1, 4, 1, 2]),
      },
      /missing layers\.1\.k, layers\.1\.v: every layer 0\.\.1 needs q, k and v/,
    ],
    [
      "wrong rank",
      { "layers.0.q": t([4, 2]), "layers.0.k": t([4, 2]), "layers.0.v": t([4, 2]) },
      /expected \[batch, seq, heads, head_dim\]/,
    ],
    [
      "shapes that differ between layers",
      { "layers.0.q": t([1, 4, 1, 2]), "layers.0.k": t([1, 4, 1, 2]), "layers.0.v": t([1, 5, 1, 2]) },
      /layers\.0\.v has shape \[1, 5, 1, 2\], expected \[1, 4, 1, 2\]/,
    ],
  ];
  for (const [what, tensors, message] of cases)
    it(`says what is wrong: ${what}`, () => {
      const path = join(dir, "bad-cal.safetensors");
      writeSafetensors(path, tensors);
      expect(() => openCalibration(path)).toThrow(message);
    });
});

function capture(fn: () => Promise<number> | number) {
  let out = "";
  let err = "";
  const o = vi.spyOn(process.stdout, "write").mockImplementation((s) => ((out += String(s)), true));
  const e = vi.spyOn(process.stderr, "write").mockImplementation((s) => ((err += String(s)), true));
  return Promise.resolve()
    .then(fn)
    .then((code) => ({ code, out, err }))
    .finally(() => {
      o.mockRestore();
      e.mockRestore();
    });
}

describe("tilec search", () => {
  const specFile = join(dir, "tiny.tile");
  const qkv = join(dir, "tiny-qkv.safetensors");
  writeFileSync(specFile, TINY);
  saveCalibration(qkv, 4, layer);

  it("prints the table and the speedup, writes a .tile that `tilec check` accepts", async () => {
    const out = join(dir, "searched.tile");
    const r = await capture(() =>
      mainAsync(["search", specFile, "--qkv", qkv, "--threshold", "0.05", "--device", "cpu", "--out", out]),
    );
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/layer +kernel +mask +rel L2 +MSE +density/);
    expect(r.out).toMatch(/\n1 +tile_1_3 +attention_tile\(1\) +\S+ +\S+ +62\.50%/);
    expect(r.out).toContain("predicted attention speedup: 1.23x by plan density");
    expect(r.out).toContain("all 64 query rows");
    const tile = readFileSync(out, "utf8");
    // The base model has 4 layers like the calibration: its steps and step override carry over.
    expect(tile).toMatch(
      /model tiny_searched \{\n  layers 4\n  steps 10\n  layer 0 +use full\n  layer 1 \.\. 2 +use tile_1_3\n  layer 3 +use full\n  step 0 \.\. 1 layer all use full\n\}/,
    );
    const checked = await capture(() => main(["check", out]));
    expect(checked.code).toBe(0);
    expect(checked.out).toContain("ok (1 layouts, 3 kernels, 1 models)");
  });

  it("--json gives the per-layer errors of every candidate and the .tile text", async () => {
    const r = await capture(() =>
      mainAsync([
        "search",
        specFile,
        "--qkv",
        qkv,
        "-r",
        "0.05",
        "--device",
        "cpu",
        "--json",
        "--name",
        "mine",
        "--kernels",
        "full,tile_2_2",
      ]),
    );
    expect(r.code).toBe(0);
    const j = JSON.parse(r.out);
    expect(j.layers.map((l: { kernel: string }) => l.kernel)).toEqual([
      "full",
      "tile_2_2",
      "tile_2_2",
      "full",
    ]);
    expect(j.layers[1].errors.map((e: { kernel: string }) => e.kernel)).toEqual(["full", "tile_2_2"]);
    expect(j).toMatchObject({ model: "mine", metric: "rel-l2", threshold: 0.05, device: "cpu", rows: 64 });
    expect(compileSpec(j.tile, "json.tile").spec?.models.get("mine")?.layerKernels).toEqual([
      "full",
      "tile_2_2",
      "tile_2_2",
      "full",
    ]);
  });

  it("usage errors exit 2, bad calibration exits 1 with the reason", async () => {
    const missing = await capture(() =>
      mainAsync(["search", specFile, "--qkv", join(dir, "nope.safetensors"), "-r", "0.1"]),
    );
    expect(missing.code).toBe(2);
    expect(missing.err).toMatch(/cannot read .*nope\.safetensors: ENOENT/);
    const badR = await capture(() =>
      mainAsync(["search", specFile, "--qkv", qkv, "-r", "-1", "--device", "cpu"]),
    );
    expect(badR.code).toBe(2);
    expect(badR.err).toMatch(/--threshold must be a positive number/);
    const noR = await capture(() => mainAsync(["search", specFile, "--qkv", qkv]));
    expect(noR.code).toBe(2);
    const wrongShape = join(dir, "wide.safetensors");
    saveCalibration(wrongShape, 1, () => frameLocalQkv({ ...layout, headDim: 8 }, 0, 1));
    const shape = await capture(() =>
      mainAsync(["search", specFile, "--qkv", wrongShape, "-r", "0.1", "--device", "cpu"]),
    );
    expect(shape.code).toBe(1);
    expect(shape.err).toMatch(/tilec search: layer 0: .*head_dim 8 ≠ layout's 16/);
    const notSt = join(dir, "text.safetensors");
    writeFileSync(notSt, "hello, this is not a safetensors file");
    const garbage = await capture(() =>
      mainAsync(["search", specFile, "--qkv", notSt, "-r", "0.1", "--device", "cpu"]),
    );
    expect(garbage.code).toBe(1);
    expect(garbage.err).toMatch(/exceeds the format's 100000000-byte limit|runs past the end/);
  });
});
