// The backward's lowering and CUDA emission, without a GPU: plans re-derived at the passes' tiles
// never compute a pair the spec's plan skips, the launch descriptions agree with the IR, the source is
// deterministic and self-contained, and what cannot be built says why.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import {
  backwardPlanSections,
  backwardSharedBytes,
  CudaBackwardConfigError,
  emitCudaBackward,
} from "../../backends/cuda/emitBackward.ts";
import { BACKWARD_PARAMS } from "../../backends/cuda/params.ts";
import { lowerKernel } from "../../compiler/lower.ts";
import { backwardProblems, lowerBackward, ROW_PAD } from "../../compiler/lowerBackward.ts";
import { compileSpec, planKernel } from "../../compiler/pipeline.ts";
import { EMPTY, blockClass } from "../../compiler/plan.ts";

const osp29 = compileSpec(
  readFileSync("examples/efficient-vdit/osp29.tile", "utf8"),
  "examples/efficient-vdit/osp29.tile",
).spec!;
const ir = (name: string, arch = "sm_90") =>
  lowerKernel(planKernel(osp29.kernels.get(name)!), osp29.file, undefined, arch);

describe("backward lowering", () => {
  it("re-derives both passes' plans from the spec's without computing a pair it skips", () => {
    const f = ir("tile_2_6");
    const b = lowerBackward(f, "sm_90");
    expect(b.template).toBe("sm90");
    expect(b.seqPad).toBe(Math.ceil(28800 / ROW_PAD) * ROW_PAD);
    for (const pass of [b.dkdv, b.dq]) {
      const p = pass.plan;
      expect([p.blockQ, p.blockKv]).toEqual([pass.blockQ, pass.blockKv]);
      // Every computed (query tile, key tile) lies inside a computed block of the spec's plan.
      for (let qb = 0; qb < p.numQBlocks; qb++)
        for (let kb = 0; kb < p.numKvBlocks; kb++) {
          if (blockClass(p, qb, kb) === EMPTY) continue;
          const sq = Math.floor((qb * p.blockQ) / f.specPlan.blockQ);
          const sk = Math.floor((kb * p.blockKv) / f.specPlan.blockKv);
          expect(blockClass(f.specPlan, sq, sk)).not.toBe(EMPTY);
        }
      // Attention Tile frames fall on multiples of 16 tokens: no element mask anywhere.
      expect(pass.subTiles.counts.partial).toBe(0);
      expect(pass.order).toHaveLength(pass === b.dkdv ? p.numKvBlocks : p.numQBlocks);
    }
    // The global frames' key blocks are attended by every query: heavy, and first in kv_order.
    expect(b.dkdv.heavy).toBeGreaterThan(0);
    const { fullT, partialT } = b.dkdv.plan;
    const work = (kb: number) =>
      fullT.offsets[kb + 1]! - fullT.offsets[kb]! + 1.1 * (partialT.offsets[kb + 1]! - partialT.offsets[kb]!);
    const works = Array.from(b.dkdv.order, work);
    expect(works).toEqual([...works].sort((x, y) => y - x));
    expect(works[0]).toBeGreaterThanOrEqual(450); // a global frame's key block: every query block
  });

  it("picks the mma.sync dK/dV kernel off sm_90 and for head dims the wgmma one does not take", () => {
    expect(lowerBackward(ir("tile_2_6", "sm_80"), "sm_80").template).toBe("sm80");
    const spec = compileSpec(
      "layout L { video 2 x 8 x 8 heads 2 head_dim 80 dtype bf16 }\nkernel k { layout L mask full block 64 x 64 }",
      "d80.tile",
    ).spec!;
    const k80 = lowerKernel(planKernel(spec.kernels.get("k")!), "d80.tile", undefined, "sm_90");
    expect(lowerBackward(k80, "sm_90").template).toBe("sm80");
  });

  it("says why a kernel has no backward", () => {
    const spec = compileSpec(
      "layout L { video 2 x 8 x 8 heads 2 head_dim 64 dtype fp32 }\nkernel k { layout L mask full block 64 x 64 }",
      "f.tile",
    ).spec!;
    const k = lowerKernel(planKernel(spec.kernels.get("k")!), "f.tile");
    expect(backwardProblems(k)).toEqual(["the backward runs in bf16 or fp16, not fp32"]);
    expect(() => lowerBackward(k, "sm_90")).toThrow(/has no backward: the backward runs in bf16 or fp16/);
  });
});

describe("backward CUDA emitter", () => {
  it("is deterministic, self-contained and states its operations", () => {
    const b = lowerBackward(ir("tile_2_6"), "sm_90");
    const a = emitCudaBackward(b, "sm_90");
    expect(a.source).toBe(emitCudaBackward(lowerBackward(ir("tile_2_6"), "sm_90"), "sm_90").source);
    expect(a.source).not.toMatch(/^\s*#\s*include/m);
    expect(a.compileArch).toBe("sm_90a");
    expect(a.source).toContain(`#define TILEC_SEQ_PAD ${b.seqPad}`);
    expect(a.source).toContain("struct TilecBwdParams {");
    const smem = backwardSharedBytes({ ...b, headDim: 96 });
    expect(a.source).toContain(`static_assert(TILEC_DKDV90_SMEM_BYTES == ${smem.dkdv}`);
    const fast = a.operations.backward;
    expect(fast.launches.map((l) => l.entry)).toEqual([
      `${b.entry}_pre`,
      `${b.entry}_dkdv`,
      `${b.entry}_post`,
    ]);
    expect(fast.workspace.map((w) => w.tensor)).toEqual(["dq_accum", "lse_log2", "delta"]);
    const det = a.operations.backwardDeterministic;
    expect(det.launches.map((l) => l.entry)).toEqual([
      `${b.entry}_pre`,
      `${b.entry}_dkdv_det`,
      `${b.entry}_dq`,
    ]);
    expect(det.workspace.map((w) => w.tensor)).toEqual(["lse_log2", "delta"]);
    const dkdv = fast.launches[1]!;
    expect(dkdv.grid).toEqual([b.dkdv.plan.numKvBlocks, "kvHeads", "batch"]);
    expect(dkdv.block).toEqual([384, 1, 1]);
    expect(dkdv.sharedBytes).toBe(smem.dkdv);
    expect(dkdv.tensorMaps!.maps.map((m) => `${m.name}:${m.tensor}:${m.boxRows}:${m.swizzleBytes}`)).toEqual([
      "q:q:64:64",
      "do_:do:64:64",
      "k:k:128:64",
      "v:v:128:64",
      "k_dq:k:128:32",
    ]);
    // Constants resolved; every plan field names a section the runtime uploads.
    expect(dkdv.params.bytes).toBe(BACKWARD_PARAMS.bytes);
    expect(dkdv.params.fields.find((f) => f.name === "seq_len")!.source).toEqual({ value: 28800 });
    const sections = new Set(backwardPlanSections(b).map((s) => s.name));
    for (const f of dkdv.params.fields)
      if ("plan" in f.source) expect(sections.has(f.source.plan)).toBe(true);
    expect(det.launches[2]!.grid).toEqual([b.dq.plan.numQBlocks, "heads", "batch"]);
  });

  it("rejects what does not fit, naming the limit", () => {
    const b = lowerBackward(ir("tile_2_6"), "sm_90");
    expect(() => emitCudaBackward(b, "sm_80")).toThrow(CudaBackwardConfigError);
    expect(() => emitCudaBackward({ ...b, dkdv: { ...b.dkdv, stages: 9 } }, "sm_90")).toThrow(
      /the dkdv pass needs \d+ bytes of shared memory per block, more than sm_90 offers \(232448\)/,
    );
  });
});
