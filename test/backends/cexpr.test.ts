// The C rendering of masks, compiled as host C++ with g++ and run on every token pair, must agree
// with the JavaScript evaluation the planner and the reference use.
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { CUDA_C, renderMaskFunction } from "../../backends/cexpr.ts";
import { elementMask } from "../../compiler/elementMask.ts";
import { seqLen } from "../../compiler/layout.ts";
import { lowerKernel } from "../../compiler/lower.ts";
import { compileSpec, planKernel } from "../../compiler/pipeline.ts";
import { Rng, randomLayoutSource, randomMask } from "../support/random.ts";

const cxx = ["g++", "c++", "clang++"].find(
  (c) => spawnSync(c, ["--version"], { stdio: "ignore" }).status === 0,
);

describe.skipIf(!cxx)(`mask rendering to C${cxx ? "" : " (skipped: no C++ compiler)"}`, () => {
  it("agrees with the JS evaluator on every pair, for 40 random masks and layouts", () => {
    const r = new Rng(42);
    const cases: { fn: string; n: number; expected: string }[] = [];
    let program = `#include <cstdio>\n#include <cstdlib>\n#include <algorithm>\nusing std::min; using std::max;\n#define __device__\n#define __forceinline__ inline\n`;
    program += CUDA_C.helpers + "\n";
    while (cases.length < 40) {
      const src = `${randomLayoutSource(r)}\nkernel k { layout L mask ${randomMask(r)} block 16 x 16 }`;
      const spec = compileSpec(src, "c.tile").spec;
      if (!spec) continue;
      const k = spec.kernels.get("k")!;
      const n = seqLen(k.layout);
      if (n > 400) continue;
      const fn = `mask_${cases.length}`;
      program += renderMaskFunction(fn, k.mask, lowerKernel(planKernel(k), "c.tile").decode, CUDA_C) + "\n";
      const allowed = elementMask(k.layout, k.mask);
      let expected = "";
      for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) expected += allowed(i, j) ? "1" : "0";
      cases.push({ fn, n, expected });
    }
    program += "int main() {\n";
    for (const c of cases)
      program += `  for (int i = 0; i < ${c.n}; i++) for (int j = 0; j < ${c.n}; j++) putchar(${c.fn}(i, j) ? '1' : '0');\n  putchar('\\n');\n`;
    program += "  return 0;\n}\n";
    const dir = mkdtempSync(join(tmpdir(), "tilec-cexpr-"));
    writeFileSync(join(dir, "masks.cpp"), program);
    execFileSync(cxx!, ["-O1", "-std=c++17", "-o", join(dir, "masks"), join(dir, "masks.cpp")]);
    const lines = execFileSync(join(dir, "masks"), { encoding: "utf8", maxBuffer: 64 << 20 }).split("\n");
    cases.forEach((c, i) => expect(lines[i], `${c.fn}`).toBe(c.expected));
  });
});
