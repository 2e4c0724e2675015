import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { heaviestFirst, heavyRows, lowerKernel } from "../../compiler/lower.ts";
import { compileSpec, planKernel } from "../../compiler/pipeline.ts";
import type { BlockPlan } from "../../compiler/plan.ts";
import { kernelSubTiles } from "../../compiler/subPlan.ts";

const osp29 = compileSpec(
  readFileSync("examples/efficient-vdit/osp29.tile", "utf8"),
  "examples/efficient-vdit/osp29.tile",
).spec!;
const plan = (name: string) => planKernel(osp29.kernels.get(name)!).plan;
const work = (p: BlockPlan, qb: number) =>
  p.full.offsets[qb + 1]! - p.full.offsets[qb]! + 1.1 * (p.partial.offsets[qb + 1]! - p.partial.offsets[qb]!);

describe("work order", () => {
  it("lists query blocks heaviest first and counts the heavy ones (> 1.5x the mean)", () => {
    for (const name of ["full", "tile_4_4", "tile_3_5", "tile_2_6", "tile_1_7"]) {
      const p = plan(name);
      const order = heaviestFirst(p);
      expect([...order].sort((a, b) => a - b)).toEqual([...Array(p.numQBlocks).keys()]);
      for (let i = 1; i < order.length; i++)
        expect(work(p, order[i - 1]!)).toBeGreaterThanOrEqual(work(p, order[i]!));
      const mean = [...Array(p.numQBlocks).keys()].reduce((s, qb) => s + work(p, qb), 0) / p.numQBlocks;
      const h = heavyRows(p);
      order.forEach((qb, i) => expect(work(p, qb) > 1.5 * mean).toBe(i < h));
    }
  });
  it("Attention Tile 1:7: the heavy blocks are those of global frame 0 (3600 tokens = 29 blocks of 128)", () => {
    const p = plan("tile_1_7");
    expect(heavyRows(p)).toBe(29);
    expect([...heaviestFirst(p).slice(0, 29)].sort((a, b) => a - b)).toEqual([...Array(29).keys()]);
    expect(heavyRows(plan("full"))).toBe(0);
  });
  it("the IR carries the order and the heavy count; the sub-tile plan is of the kernel's own tiles", () => {
    const ir = lowerKernel(planKernel(osp29.kernels.get("tile_2_6")!), osp29.file, undefined, "sm_90");
    expect(ir.plan.blockKv).toBe(128);
    expect(ir.heavyRows).toBe(heavyRows(ir.plan));
    expect(ir.qOrder).toEqual(heaviestFirst(ir.plan));
    const sub = kernelSubTiles(ir);
    expect(sub.classes.length).toBe(ir.plan.counts.partial * 8);
    expect(sub.counts.partial).toBe(0);
    // computed once per plan, shared by IR copies
    expect(kernelSubTiles({ ...ir })).toBe(sub);
  });
});
