import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import type { KernelSpec } from "../../compiler/check.ts";
import { elementMask } from "../../compiler/elementMask.ts";
import { seqLen } from "../../compiler/layout.ts";
import { compileSpec, planKernel } from "../../compiler/pipeline.ts";
import { buildPlan, EMPTY, FULL, PARTIAL } from "../../compiler/plan.ts";
import { SUB_COLS, SUB_ROWS, subTileClass, subTilePlan } from "../../compiler/subPlan.ts";
import { Rng, randomLayoutSource, randomMask } from "../support/random.ts";

/** What a sub-tile must be, by visiting its elements: FULL/EMPTY exact, PARTIAL when mixed or ragged. */
function oracleClass(allowed: (q: number, k: number) => boolean, n: number, row0: number, col0: number) {
  if (row0 >= n || col0 >= n) return EMPTY;
  if (col0 + SUB_COLS > n) return PARTIAL;
  let yes = 0;
  let no = 0;
  for (let q = row0; q < Math.min(n, row0 + SUB_ROWS); q++)
    for (let k = col0; k < col0 + SUB_COLS; k++) {
      if (allowed(q, k)) yes++;
      else no++;
    }
  return yes === 0 ? EMPTY : no === 0 ? FULL : PARTIAL;
}

describe("sub-tile plan equals the brute-force oracle", () => {
  it("on 150 random layouts, masks, odd lengths and block sizes", () => {
    const r = new Rng(20261124);
    let checked = 0;
    const seen = [0, 0, 0];
    for (let trial = 0; trial < 150; trial++) {
      const src = `${randomLayoutSource(r)}
        kernel k { layout L mask ${randomMask(r)} block ${r.pick([16, 32, 48, 64])} x ${r.pick([16, 32, 48, 64, 256])} }`;
      const res = compileSpec(src, "random.tile");
      if (!res.spec) continue;
      const k = res.spec.kernels.get("k")!;
      const plan = buildPlan(k);
      const sub = subTilePlan(plan, k.layout, k.mask);
      const n = seqLen(k.layout);
      const allowed = elementMask(k.layout, k.mask);
      expect(sub.wordsPerStripe).toBe(Math.ceil(plan.blockKv / 128));
      expect(sub.classes.length).toBe(plan.partial.indices.length * sub.stripes * sub.wordsPerStripe);
      for (let qb = 0; qb < plan.numQBlocks; qb++)
        for (let e = plan.partial.offsets[qb]!; e < plan.partial.offsets[qb + 1]!; e++) {
          const kb = plan.partial.indices[e]!;
          for (let s = 0; s < sub.stripes; s++)
            for (let t = 0; t < plan.blockKv / SUB_COLS; t++) {
              const want = oracleClass(
                allowed,
                n,
                qb * plan.blockQ + s * SUB_ROWS,
                kb * plan.blockKv + t * SUB_COLS,
              );
              const got = subTileClass(sub, e, s, t);
              if (got !== want)
                throw new Error(
                  `trial ${trial}: block (${qb}, ${kb}) stripe ${s} n-tile ${t}: ${got} ≠ ${want}\n${src}`,
                );
              seen[got]!++;
            }
        }
      checked++;
    }
    expect(checked).toBeGreaterThan(120);
    // The random masks exercise all three classes.
    expect(Math.min(...seen)).toBeGreaterThan(0);
  });
});

/** The key-major oracle: rows are 16 keys, columns 8 queries (the dK/dV pass computes Sᵀ). */
function oracleClassT(allowed: (q: number, k: number) => boolean, n: number, key0: number, q0: number) {
  if (key0 >= n || q0 >= n) return EMPTY;
  if (q0 + SUB_COLS > n) return PARTIAL;
  let yes = 0;
  let no = 0;
  for (let k = key0; k < Math.min(n, key0 + SUB_ROWS); k++)
    for (let q = q0; q < q0 + SUB_COLS; q++) {
      if (allowed(q, k)) yes++;
      else no++;
    }
  return yes === 0 ? EMPTY : no === 0 ? FULL : PARTIAL;
}

describe("key-major sub-tile plan (the dK/dV pass) equals its brute-force oracle", () => {
  it("on 100 random layouts, masks, odd lengths and block sizes", () => {
    const r = new Rng(20261207);
    let checked = 0;
    const seen = [0, 0, 0];
    for (let trial = 0; trial < 100; trial++) {
      const src = `${randomLayoutSource(r)}
        kernel k { layout L mask ${randomMask(r)} block ${r.pick([16, 32, 64, 136])} x ${r.pick([16, 32, 64, 128])} }`;
      const res = compileSpec(src, "random.tile");
      if (!res.spec) continue;
      const k = res.spec.kernels.get("k")!;
      const plan = buildPlan(k);
      const sub = subTilePlan(plan, k.layout, k.mask, "k");
      const n = seqLen(k.layout);
      const allowed = elementMask(k.layout, k.mask);
      expect(sub.stripes).toBe(plan.blockKv / SUB_ROWS);
      expect(sub.classes.length).toBe(plan.partialT.indices.length * sub.stripes * sub.wordsPerStripe);
      for (let kb = 0; kb < plan.numKvBlocks; kb++)
        for (let e = plan.partialT.offsets[kb]!; e < plan.partialT.offsets[kb + 1]!; e++) {
          const qb = plan.partialT.indices[e]!;
          for (let s = 0; s < sub.stripes; s++)
            for (let t = 0; t < plan.blockQ / SUB_COLS; t++) {
              const want = oracleClassT(
                allowed,
                n,
                kb * plan.blockKv + s * SUB_ROWS,
                qb * plan.blockQ + t * SUB_COLS,
              );
              const got = subTileClass(sub, e, s, t);
              if (got !== want)
                throw new Error(
                  `trial ${trial}: block (${qb}, ${kb}) key stripe ${s} q-tile ${t}: ${got} ≠ ${want}\n${src}`,
                );
              seen[got]!++;
            }
        }
      checked++;
    }
    expect(checked).toBeGreaterThan(60);
    expect(Math.min(...seen)).toBeGreaterThan(0);
  });
});

describe("sub-tile plan of the Efficient-vDiT masks", () => {
  const spec = compileSpec(readFileSync("examples/efficient-vdit/osp29.tile", "utf8"), "osp29.tile").spec!;
  it.each(["tile_4_4", "tile_3_5", "tile_2_6", "tile_1_7"])(
    "%s: every sub-tile of a partial block is FULL or EMPTY (frames are multiples of 16 tokens)",
    (name) => {
      const kp = planKernel(spec.kernels.get(name) as KernelSpec);
      const sub = subTilePlan(kp.plan, kp.kernel.layout, kp.kernel.mask);
      expect(kp.plan.counts.partial).toBeGreaterThan(0);
      expect(sub.classified).toBe(true);
      expect(sub.counts.partial).toBe(0);
      expect(sub.counts.full).toBeGreaterThan(0);
      expect(sub.counts.empty).toBeGreaterThan(0);
      expect(sub.counts.full + sub.counts.empty).toBe(kp.plan.counts.partial * 8 * 16);
    },
  );
});

describe("sub-tile plan budget", () => {
  it("a mask whose sub-tiles all differ falls back to all-PARTIAL, quickly and deterministically", () => {
    const spec = compileSpec(readFileSync("examples/sta/sta.tile", "utf8"), "sta.tile").spec!;
    const kp = planKernel(spec.kernels.get("sta_3x3x5") as KernelSpec);
    const t0 = performance.now();
    const sub = subTilePlan(kp.plan, kp.kernel.layout, kp.kernel.mask);
    expect(performance.now() - t0).toBeLessThan(2000);
    expect(sub.classified).toBe(false);
    expect(sub.counts).toEqual({ empty: 0, full: 0, partial: kp.plan.counts.partial * 8 * 16 });
    expect(sub.classes.every((w) => w === 0x55555555)).toBe(true);
  });
});
