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
    // On sm_90 the head-dim-96 default streams 160-key tiles: the kernel's plan is re-derived at
    // 128 x 160 (3600-token frames are 22.5 tiles), not the spec's 128 x 128.
    const ir = lowerKernel(planKernel(osp29.kernels.get("tile_2_6")!), osp29.file, undefined, "sm_90");
    expect(ir.config).toEqual({ warps: 12, stages: 3, kvTile: 160 });
    expect(ir.plan.blockKv).toBe(160);
    expect(ir.plan.numKvBlocks).toBe(180);
    expect(ir.heavyRows).toBe(heavyRows(ir.plan));
    expect(ir.qOrder).toEqual(heaviestFirst(ir.plan));
    const sub = kernelSubTiles(ir);
    expect(sub.classes.length).toBe(ir.plan.counts.partial * 8 * 2); // 20 n-tiles: 2 words per stripe
    expect(sub.counts.partial).toBe(0);
    // computed once per plan, shared by IR copies
    expect(kernelSubTiles({ ...ir })).toBe(sub);
  });
});

describe("key tiles", () => {
  const spec = compileSpec(
    [
      "layout D96 { video 4 x 16 x 20 heads 2 head_dim 96 }",
      "layout D64 { video 4 x 16 x 20 heads 2 head_dim 64 }",
      "kernel t96 { layout D96 mask attention_tile(1) block 128 x 128 }",
      "kernel t64 { layout D64 mask attention_tile(1) block 128 x 128 }",
      "kernel q64 { layout D96 mask attention_tile(1) block 64 x 128 }",
    ].join("\n"),
    "k.tile",
  ).spec!;
  const lower = (name: string, arch?: string, config?: Parameters<typeof lowerKernel>[2]) =>
    lowerKernel(planKernel(spec.kernels.get(name)!), "k.tile", config, arch);

  it("on sm_90 streams 160-key tiles at head dim 96 with 128-row blocks, 128 elsewhere", () => {
    expect(lower("t96", "sm_90").config).toEqual({ warps: 12, stages: 3, kvTile: 160 });
    expect(lower("t64", "sm_90").config).toEqual({ warps: 12, stages: 4, kvTile: 128 });
    expect(lower("q64", "sm_90").config).toEqual({ warps: 8, stages: 4, kvTile: 128 });
    expect(lower("t96", "sm_80").config.kvTile).toBe(64);
  });

  it("re-derives the plan at a key tile that does not divide the spec's block, covering every allowed pair", () => {
    const ir = lower("t96", "sm_90");
    const spec128 = planKernel(spec.kernels.get("t96")!).plan;
    expect(ir.plan.blockKv).toBe(160);
    expect(ir.specPlan.blockKv).toBe(128);
    // A 160-key tile is computed wherever a 128-key block it overlaps is: the kernel computes a
    // superset of the spec's work, never less.
    const computed = (p: BlockPlan, qb: number, kb: number) => {
      const inList = (l: { offsets: Int32Array; indices: Int32Array }) =>
        l.indices.subarray(l.offsets[qb]!, l.offsets[qb + 1]!).includes(kb);
      return inList(p.full) || inList(p.partial);
    };
    for (let qb = 0; qb < spec128.numQBlocks; qb++)
      for (let kb = 0; kb < spec128.numKvBlocks; kb++) {
        if (!computed(spec128, qb, kb)) continue;
        const k0 = kb * 128,
          k1 = Math.min(k0 + 128, 1280);
        let covered = false;
        for (let t = Math.floor(k0 / 160); t * 160 < k1; t++) covered ||= computed(ir.plan, qb, t);
        expect(covered, `spec block (${qb}, ${kb})`).toBe(true);
      }
  });

  it("takes such a tile only on the wgmma template, and multiples of 16 only", () => {
    expect(() => lower("t96", undefined, { warps: 4, stages: 2, kvTile: 160 })).toThrow(
      /kvTile 160 must be a multiple of 16 dividing the spec's key block 128 \(only the sm_90a template takes other key tiles\)/,
    );
    expect(() => lower("t96", "sm_90", { warps: 12, stages: 3, kvTile: 168 })).toThrow(
      /kvTile 168 must be a multiple of 16$/,
    );
    expect(lower("t96", "sm_90", { warps: 12, stages: 3, kvTile: 176 }).plan.blockKv).toBe(176);
  });
});
