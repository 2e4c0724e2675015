// On an NVIDIA GPU: a CUDA tuning run gates and times real kernels, compile() then picks the
// winner from the cache, and a `tilec build` package's TypeScript loader computes what the runtime
// computes. Skips with the reason where there is no GPU.
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { findNvcc } from "../../backends/cuda/nvcc.ts";
import { compileSpec } from "../../compiler/pipeline.ts";
import { buildPackage } from "../../pack/build.ts";
import { CudaPackage } from "../../pack/runtime/cuda.ts";
import { compile } from "../../runtime/attention.ts";
import * as runtime from "../../runtime/cuda/index.ts";
import { randomArray } from "../../runtime/reference.ts";
import { TuneCache } from "../../tune/cache.ts";
import { tuneSpec } from "../../tune/run.ts";

const cuda = runtime.available();

describe.skipIf(!cuda.ok)(`CUDA tuning on the GPU${cuda.ok ? "" : ` (skipped: ${cuda.reason})`}`, () => {
  it("tunes, stores the winner that compile() then uses, and the package loader agrees with the runtime", async () => {
    const dir = mkdtempSync(join(tmpdir(), "tilec-tune-gpu-"));
    const saved = process.env.TILEC_CACHE_DIR;
    process.env.TILEC_CACHE_DIR = dir;
    try {
      const text =
        "layout L { video 4 x 16 x 16 text 37 after batch 2 heads 4 kv_heads 2 head_dim 64 dtype bf16 }\n" +
        "kernel k { layout L mask attention_tile(2) or text_joint block 128 x 128 targets cuda }";
      const spec = compileSpec(text, "gpu.tile").spec!;
      const report = await tuneSpec(spec, "gpu.tile", {
        target: "cuda",
        top: 2,
        reps: 3,
        warmup: 1,
        confirmRounds: 1,
      });
      const k = report.kernels[0]!;
      for (const c of k.candidates.filter((x) => x.status === "ok" || x.status === "failed"))
        expect(c.status, `${c.key}: ${c.reason}`).toBe("ok");
      expect(k.winner).toBeDefined();
      const entry = new TuneCache().lookup(report.identity, spec.kernels.get("k")!.hash)!;
      expect(entry.choice).toEqual(k.winner!.choice);
      const winner = k.winner!.choice as { config: unknown; blockQ: number };
      const tuned = await compile(spec, { target: "cuda", kernel: "k" });
      expect(tuned.ir.config).toEqual(winner.config);
      expect(tuned.ir.blockQ).toBe(winner.blockQ);

      // The package (built with the same winner) against the runtime on the same inputs.
      const pkgDir = join(dir, "pkg");
      await buildPackage(spec, "gpu.tile", pkgDir, { arch: "sm_90", nvcc: !!findNvcc() });
      const pkg = new CudaPackage<"k">(runtime, new URL(`file://${pkgDir}/`));
      const dev = runtime.CudaDevice.open();
      const n = 4 * 16 * 16 + 37;
      const [q, kk, v] = [4, 2, 2].map((h, i) =>
        dev.fromHost(Float32Array.from(randomArray(2 * n * h * 64, i + 1)), "bf16"),
      );
      const outs = [0, 1].map(() => dev.allocElements("bf16", 2 * n * 4 * 64).poison());
      tuned.run(q!, kk!, v!, outs[0]!);
      pkg.kernel("k").run(q!, kk!, v!, outs[1]!);
      dev.synchronize();
      const [a, b] = outs.map((o) => o.download() as Float32Array);
      let maxDiff = 0;
      for (let i = 0; i < a!.length; i++) maxDiff = Math.max(maxDiff, Math.abs(a![i]! - b![i]!));
      expect(Number.isFinite(maxDiff)).toBe(true);
      expect(maxDiff).toBeLessThan(1e-2);
      for (const x of [q, kk, v, ...outs]) x!.free();
      tuned.free();
      pkg.kernel("k").free();
    } finally {
      if (saved === undefined) delete process.env.TILEC_CACHE_DIR;
      else process.env.TILEC_CACHE_DIR = saved;
    }
  }, 300_000);
});
