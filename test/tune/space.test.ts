// The declared spaces: pruning before compiling, with the limit each configuration breaks; the
// default configuration is always a live candidate; the cost model ranks by the plan's work.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { DEFAULT_LIMITS } from "../../backends/wgsl/target.ts";
import { lowerKernel } from "../../compiler/lower.ts";
import { compileSpec, planKernel } from "../../compiler/pipeline.ts";
import type { CudaChoice } from "../../tune/choice.ts";
import { cudaCandidates, cudaTuneLimits, estimateRegisters } from "../../tune/cudaSpace.ts";
import { wgslCandidates } from "../../tune/wgslSpace.ts";

const osp29 = compileSpec(readFileSync("examples/efficient-vdit/osp29.tile", "utf8"), "osp29.tile").spec!;

function space(name: string, arch: string) {
  const base = planKernel(osp29.kernels.get(name)!);
  const baseIR = lowerKernel(base, "osp29.tile", undefined, arch);
  return { base, baseIR, cands: cudaCandidates(base, baseIR, cudaTuneLimits(arch)) };
}

const key = (c: { choice: unknown }) => {
  const ch = c.choice as CudaChoice;
  return `${ch.template} q${ch.blockQ} w${ch.config.warps} s${ch.config.stages} kv${ch.config.kvTile}`;
};

describe("CUDA space", () => {
  it("prunes configurations that would spill registers, with the count", () => {
    const { cands } = space("tile_2_6", "sm_90");
    const w2 = cands.find((c) => key(c) === "sm80 q128 w2 s2 kv64")!;
    expect(w2.pruned.join()).toMatch(/~294 registers per thread .* exceed 255: it would spill/);
    expect(w2.estimateMs).toBeUndefined();
    expect(estimateRegisters(96, 128, 4, 64)).toBeLessThanOrEqual(255);
  });

  it("prunes by the device's shared memory (sm_86: 100 KB per block)", () => {
    const { cands } = space("full", "sm_86");
    const big = cands.find((c) => key(c) === "sm80 q128 w4 s4 kv128")!;
    expect(big.pruned.join()).toMatch(/needs \d+ bytes of shared memory/);
    const small = cands.find((c) => key(c) === "sm80 q128 w4 s2 kv64")!;
    expect(small.pruned).toEqual([]);
  });

  it("prunes warps that do not split the query block and K/V tiles that do not divide the key block", () => {
    const spec = compileSpec(
      "layout L { video 2 x 4 x 8 heads 2 head_dim 64 dtype bf16 }\nkernel k { layout L mask full block 64 x 64 }",
      "t.tile",
    ).spec!;
    const base = planKernel(spec.kernels.get("k")!);
    const cands = cudaCandidates(base, lowerKernel(base, "t.tile"), cudaTuneLimits("sm_80"));
    expect(cands.find((c) => key(c) === "sm80 q64 w8 s2 kv64")!.pruned.join()).toMatch(
      /do not split into 8 warps/,
    );
    expect(cands.find((c) => key(c) === "sm80 q64 w4 s2 kv128")!.pruned.join()).toMatch(
      /K\/V tile 128 does not divide the spec's key block 64/,
    );
  });

  it("always has the default configuration as a live candidate, on each architecture", () => {
    for (const arch of ["sm_80", "sm_90"]) {
      const { cands, baseIR } = space("tile_2_6", arch);
      const def = cands.filter((c) => c.isDefault);
      expect(def.length).toBe(1);
      expect(def[0]!.pruned).toEqual([]);
      expect((def[0]!.choice as CudaChoice).config).toEqual(baseIR.config);
    }
  });

  it("on sm_90 offers the wgmma path as its own code path", () => {
    const { cands } = space("tile_2_6", "sm_90");
    const paths = new Set(cands.filter((c) => !c.pruned.length).map((c) => c.codePath));
    expect(paths).toEqual(new Set(["sm80", "sm90"]));
    expect(new Set(space("tile_2_6", "sm_80").cands.map((c) => c.codePath))).toEqual(new Set(["sm80"]));
  });

  it("offers key tiles that do not divide the spec's block to the wgmma template only", () => {
    const { cands } = space("tile_2_6", "sm_90");
    expect(cands.find((c) => key(c) === "sm90 q128 w12 s3 kv160")!.pruned).toEqual([]);
    expect(cands.find((c) => key(c) === "sm90 q128 w12 s3 kv144")!.pruned).toEqual([]);
    expect(cands.find((c) => key(c) === "sm80 q128 w4 s2 kv160")!.pruned.join()).toMatch(
      /K\/V tile 160 does not divide the spec's key block 128/,
    );
  });

  it("estimates less time for sparser masks and for finer plans that skip more", () => {
    const est = (name: string) =>
      space(name, "sm_80").cands.find((c) => key(c) === "sm80 q128 w4 s2 kv64")!.estimateMs!;
    expect(est("tile_1_7")).toBeLessThan(est("tile_2_6"));
    expect(est("tile_2_6")).toBeLessThan(est("full"));
    // calibrated on H100 measurements: osp29 full at the default ~21.5 ms
    const full = space("full", "sm_90").cands.find((c) => key(c) === "sm80 q128 w4 s2 kv64")!.estimateMs!;
    expect(full).toBeGreaterThan(15);
    expect(full).toBeLessThan(30);
  });
});

describe("WGSL space", () => {
  const base = planKernel(osp29.kernels.get("tile_2_6")!);
  const baseIR = lowerKernel(base, "osp29.tile");
  const caps = { f16: false, subgroups: true, limits: DEFAULT_LIMITS };
  const cands = wgslCandidates(base, baseIR, caps);

  it("prunes by workgroup memory, invocation limits and register tiles, with reasons", () => {
    const reasons = cands.flatMap((c) => c.pruned).join("\n");
    expect(reasons).toMatch(/more than maxComputeWorkgroupStorageSize \(16384\)/);
    expect(reasons).toMatch(/column invocations do not divide 24 vec4 columns/);
    expect(cands.some((c) => !c.pruned.length)).toBe(true);
    // With an adapter's 48 KiB, register tiles are what limits.
    const big = { ...caps, limits: { ...DEFAULT_LIMITS, maxComputeWorkgroupStorageSize: 49152 } };
    const bigReasons = wgslCandidates(base, baseIR, big)
      .flatMap((c) => c.pruned)
      .join("\n");
    expect(bigReasons).toMatch(/96 f32 output accumulators per invocation \(more than 64 spill/);
  });

  it("has the default (compileWgsl's choice) and both subgroup settings", () => {
    expect(cands.filter((c) => c.isDefault && !c.pruned.length).length).toBe(1);
    const live = cands.filter((c) => !c.pruned.length);
    expect(new Set(live.map((c) => (c.choice as { subgroups: boolean }).subgroups))).toEqual(
      new Set([true, false]),
    );
    const noSg = wgslCandidates(base, baseIR, { ...caps, subgroups: false });
    expect(noSg.every((c) => !(c.choice as { subgroups: boolean }).subgroups)).toBe(true);
  });
});
