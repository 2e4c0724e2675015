import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it, vi } from "vitest";
import { main } from "../../cli/main.ts";

function run(args: string[]): { code: number; out: string; err: string } {
  let out = "";
  let err = "";
  const o = vi.spyOn(process.stdout, "write").mockImplementation((s) => ((out += String(s)), true));
  const e = vi.spyOn(process.stderr, "write").mockImplementation((s) => ((err += String(s)), true));
  try {
    return { code: main(args), out, err };
  } finally {
    o.mockRestore();
    e.mockRestore();
  }
}

describe("tilec CLI", () => {
  it("plan --kernel --json prints the plan object", () => {
    const r = run(["plan", "examples/efficient-vdit/osp29.tile", "--kernel", "tile_2_6", "--json"]);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.out);
    expect(j).toMatchObject({
      blockQ: 128,
      blockKv: 128,
      seqLen: 28800,
      blocks: { full: 26319, partial: 1288, empty: 23018 },
    });
    expect(Math.abs(j.sparsity * 100 - 45.47)).toBeLessThan(0.01);
    expect(j.density).toBeCloseTo(1 - j.sparsity, 12);
  });
  it("plan prints a table and writes SVGs", () => {
    const dir = mkdtempSync(join(tmpdir(), "tilec-"));
    const r = run(["plan", "examples/efficient-vdit/osp29.tile", "--svg", dir]);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/tile_1_7 +attention_tile\(1\)/);
    expect(readdirSync(dir).sort()).toEqual([
      "full.svg",
      "tile_1_7.svg",
      "tile_2_6.svg",
      "tile_3_5.svg",
      "tile_4_4.svg",
    ]);
  });
  it("check exits 1 with positioned diagnostics on bad input", () => {
    const dir = mkdtempSync(join(tmpdir(), "tilec-"));
    const f = join(dir, "bad.tile");
    writeFileSync(
      f,
      "layout L { video 2 x 2 x 2 heads 1 head_dim 16 }\nkernel k { layout L mask attention_tile(q) }\n",
    );
    const r = run(["check", f]);
    expect(r.code).toBe(1);
    expect(r.err).toContain(`${f}:2:`);
    expect(r.err).toContain("^");
  });
  it("usage errors exit 2", () => {
    expect(run(["plan"]).code).toBe(2);
    expect(run(["frobnicate"]).code).toBe(2);
    expect(run(["plan", "/no/such/file.tile"]).code).toBe(2);
    expect(run(["plan", "examples/efficient-vdit/osp29.tile", "--kernel", "nope"]).code).toBe(2);
  });
  it("--help exits 0 on every command", () => {
    for (const c of [[], ["check"], ["plan"], ["emit"]]) expect(run([...c, "--help"]).code).toBe(0);
  });
  it("emit --target plan writes plan JSON with CSR lists", () => {
    const dir = mkdtempSync(join(tmpdir(), "tilec-"));
    const r = run([
      "emit",
      "examples/efficient-vdit/osp29.tile",
      "--target",
      "plan",
      "-k",
      "tile_1_7",
      "-o",
      dir,
    ]);
    expect(r.code).toBe(0);
    const j = JSON.parse(readFileSync(join(dir, "tile_1_7.plan.json"), "utf8"));
    expect(j.full.offsets).toHaveLength(226);
    expect(j.full.indices).toHaveLength(17029);
  });
});
