// CI's compile check: every example kernel through nvcc for sm_80 and sm_90 (no GPU needed), failing
// on any spill to local memory. Skips, saying so, where nvcc is not installed.
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { emitCuda } from "../../backends/cuda/emit.ts";
import { emitCudaBackward } from "../../backends/cuda/emitBackward.ts";
import { backwardProblems, lowerBackward } from "../../compiler/lowerBackward.ts";
import { findNvcc, nvccCompile } from "../../backends/cuda/nvcc.ts";
import { lowerKernel } from "../../compiler/lower.ts";
import { compileSpec, planKernel } from "../../compiler/pipeline.ts";

const nvcc = findNvcc();
const files = readdirSync("examples", { recursive: true, withFileTypes: true })
  .filter((e) => e.isFile() && e.name.endsWith(".tile"))
  .map((e) => join(e.parentPath, e.name))
  .sort();

describe.skipIf(!nvcc)(
  `nvcc resource check${nvcc ? "" : " (skipped: nvcc not found; only this check is skipped)"}`,
  () => {
    // sm_90 with the sm_80 default configuration (mma.sync template), and sm_90 with the Hopper
    // default (the wgmma template, compiled for sm_90a; setmaxnreg caps its consumers at 240).
    const targets = [
      { arch: "sm_80", hopper: false },
      { arch: "sm_90", hopper: false },
      { arch: "sm_90", hopper: true },
    ] as const;
    for (const { arch, hopper } of targets) {
      it.each(files)(
        `%s compiles for ${arch}${hopper ? " (wgmma template, sm_90a)" : ""} without spills`,
        (file) => {
          const spec = compileSpec(readFileSync(file, "utf8"), file).spec!;
          const dir = mkdtempSync(join(tmpdir(), "tilec-nvcc-"));
          for (const k of spec.kernels.values()) {
            const src = emitCuda(
              lowerKernel(planKernel(k), file, undefined, hopper ? arch : undefined),
              arch,
            );
            if (hopper)
              expect(src.template, `${file} ${k.name}`).toBe(k.layout.dtype === "fp32" ? "f32" : "sm90");
            const cu = join(dir, `${k.name}.cu`);
            writeFileSync(cu, src.source);
            const report = nvccCompile(cu, join(dir, `${k.name}.cubin`), src.compileArch)!;
            expect(report.spillStores, `${file} ${k.name} ${arch}:\n${report.log}`).toBe(0);
            expect(report.spillLoads, `${file} ${k.name} ${arch}`).toBe(0);
            expect(report.registers).toBeLessThanOrEqual(255);
          }
        },
        300_000,
      );
    }

    // The backward of every example kernel that has one: the wgmma dK/dV template on sm_90 (head dims
    // 64/96/128), the mma.sync one on sm_80; every entry point of the module without spills.
    for (const arch of ["sm_80", "sm_90"] as const) {
      it.each(files)(
        `%s: backward compiles for ${arch} without spills`,
        (file) => {
          const spec = compileSpec(readFileSync(file, "utf8"), file).spec!;
          const dir = mkdtempSync(join(tmpdir(), "tilec-nvcc-bwd-"));
          for (const k of spec.kernels.values()) {
            const ir = lowerKernel(planKernel(k), file, undefined, arch);
            if (backwardProblems(ir).length) continue;
            const src = emitCudaBackward(lowerBackward(ir, arch), arch);
            const cu = join(dir, `${k.name}.bwd.cu`);
            writeFileSync(cu, src.source);
            const report = nvccCompile(cu, join(dir, `${k.name}.bwd.cubin`), src.compileArch)!;
            for (const entry of report.entries ?? [report])
              expect(entry.spillStores, `${file} ${k.name} ${arch} backward:\n${report.log}`).toBe(0);
          }
        },
        300_000,
      );
    }
  },
);
