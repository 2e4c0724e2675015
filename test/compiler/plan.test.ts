import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { elementMask } from "../../compiler/elementMask.ts";
import { seqLen } from "../../compiler/layout.ts";
import { buildPlan, EMPTY, FULL, PARTIAL, planFromClasses, type BlockPlan } from "../../compiler/plan.ts";
import { compileSpec, planKernel } from "../../compiler/pipeline.ts";
import type { KernelSpec } from "../../compiler/check.ts";
import { planAscii, planSvg } from "../../compiler/planPicture.ts";
import { Rng, randomLayoutSource, randomMask } from "../support/random.ts";

function kernelsOf(text: string): Map<string, KernelSpec> {
  const r = compileSpec(text, "t.tile");
  expect(r.diagnostics.map((d) => `${d.span.line}:${d.span.col} ${d.message}`)).toEqual([]);
  return r.spec!.kernels as Map<string, KernelSpec>;
}

/** The oracle: classify every block by visiting every element. Tests only; O(S²). */
function bruteForcePlan(k: KernelSpec): BlockPlan {
  const n = seqLen(k.layout);
  const allowed = elementMask(k.layout, k.mask);
  const numQ = Math.ceil(n / k.blockQ);
  const numKv = Math.ceil(n / k.blockKv);
  const classes = new Uint8Array(numQ * numKv);
  for (let qb = 0; qb < numQ; qb++) {
    for (let kb = 0; kb < numKv; kb++) {
      let yes = 0;
      let no = 0;
      for (let i = qb * k.blockQ; i < Math.min(n, (qb + 1) * k.blockQ); i++)
        for (let j = kb * k.blockKv; j < Math.min(n, (kb + 1) * k.blockKv); j++) {
          if (allowed(i, j)) yes++;
          else no++;
        }
      classes[qb * numKv + kb] = yes === 0 ? EMPTY : no === 0 ? FULL : PARTIAL;
    }
  }
  return planFromClasses(classes, n, k.blockQ, k.blockKv, numQ, numKv);
}

describe("Efficient-vDiT Table 1", () => {
  const cases: [string, string, number][] = [
    ["osp29", "tile_4_4", 17.6],
    ["osp29", "tile_3_5", 29.88],
    ["osp29", "tile_2_6", 45.47],
    ["osp29", "tile_1_7", 64.38],
    ["osp93", "tile_12_12", 21.51],
    ["osp93", "tile_8_16", 40.3],
    ["osp93", "tile_6_18", 51.88],
    ["osp93", "tile_4_20", 64.98],
    ["osp93", "tile_3_21", 72.05],
  ];
  const specs = new Map(
    ["osp29", "osp93"].map((n) => [n, kernelsOf(readFileSync(`examples/efficient-vdit/${n}.tile`, "utf8"))]),
  );
  it.each(cases)("%s %s matches the paper's sparsity to 0.01 points", (spec, kernel, paper) => {
    const p = planKernel(specs.get(spec)!.get(kernel)!);
    expect(p.plan.blockQ).toBe(128);
    expect(Math.abs(p.stats.sparsity * 100 - paper)).toBeLessThanOrEqual(0.01);
    expect(p.stats.density + p.stats.sparsity).toBeCloseTo(1, 12);
  });
  it("global frames are i*T//k", () => {
    const ks = kernelsOf(`layout L { video 24 x 1 x 1 heads 1 head_dim 16 }
      kernel a { layout L mask attention_tile(3) block 16 x 16 }`);
    const allowed = elementMask(ks.get("a")!.layout, ks.get("a")!.mask);
    // A global frame is seen from every frame: only frames 0, 8, 16 qualify.
    const globals = [...Array(24).keys()].filter((f) => [...Array(24).keys()].every((g) => allowed(g, f)));
    expect(globals).toEqual([0, 8, 16]);
  });
});

describe("symbolic plan equals the brute-force oracle", () => {
  it("on 300 random layouts, masks, odd lengths and block sizes", () => {
    const r = new Rng(20261123);
    let checked = 0;
    let partial = 0;
    for (let trial = 0; trial < 300; trial++) {
      const src = `${randomLayoutSource(r)}
        kernel k { layout L mask ${randomMask(r)} block ${r.pick([16, 32, 48, 64])} x ${r.pick([16, 32, 48, 64])} }`;
      const res = compileSpec(src, "random.tile");
      if (!res.spec) continue; // e.g. a tile size that does not divide: rejected with a diagnostic
      const k = res.spec.kernels.get("k")!;
      const symbolic = buildPlan(k);
      const oracle = bruteForcePlan(k);
      if (!Buffer.from(symbolic.classes).equals(Buffer.from(oracle.classes))) {
        throw new Error(`trial ${trial}: plan differs from the oracle for\n${src}`);
      }
      expect(symbolic.full.indices).toEqual(oracle.full.indices);
      expect(symbolic.partial.offsets).toEqual(oracle.partial.offsets);
      expect(symbolic.fullT.indices).toEqual(oracle.fullT.indices);
      expect(symbolic.partialT.offsets).toEqual(oracle.partialT.offsets);
      partial += symbolic.counts.partial;
      checked++;
    }
    expect(checked).toBeGreaterThan(250);
    expect(partial).toBeGreaterThan(0);
  });
});

describe("plan format", () => {
  const ks = kernelsOf(`layout L { video 3 x 5 x 7 text 9 after heads 2 head_dim 16 }
    kernel k { layout L mask causal_frames or q.text block 32 x 16 }`);
  const plan = buildPlan(ks.get("k")!);
  it("CSR lists ascend, cover exactly the non-empty blocks, and transposes agree", () => {
    expect(plan.seqLen).toBe(3 * 5 * 7 + 9);
    for (const csr of [plan.full, plan.partial]) {
      for (let qb = 0; qb < plan.numQBlocks; qb++) {
        const row = [...csr.indices.subarray(csr.offsets[qb]!, csr.offsets[qb + 1]!)];
        expect(row).toEqual([...row].sort((a, b) => a - b));
      }
    }
    const pairs = (c: typeof plan.full, t: boolean) => {
      const s = new Set<string>();
      for (let a = 0; a + 1 < c.offsets.length; a++)
        for (let p = c.offsets[a]!; p < c.offsets[a + 1]!; p++)
          s.add(t ? `${c.indices[p]},${a}` : `${a},${c.indices[p]}`);
      return s;
    };
    expect(pairs(plan.fullT, true)).toEqual(pairs(plan.full, false));
    expect(pairs(plan.partialT, true)).toEqual(pairs(plan.partial, false));
    expect(plan.counts.full + plan.counts.partial + plan.counts.empty).toBe(
      plan.numQBlocks * plan.numKvBlocks,
    );
  });
  it("draws itself as ASCII and SVG", () => {
    const ascii = planAscii(plan);
    expect(ascii.split("\n")).toHaveLength(plan.numQBlocks + 1);
    expect(ascii).toMatch(/[#+.]/);
    const svg = planSvg(plan, { title: "k <test>", layout: ks.get("k")!.layout });
    expect(svg.startsWith("<svg")).toBe(true);
    expect(svg).toContain("k &lt;test&gt;");
    expect(svg).toContain(`full ${plan.counts.full}`);
  });
});
