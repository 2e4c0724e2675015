// A whole tuning run on SwiftShader (CPU Vulkan): candidates compile, pass the reference gate, are
// timed with timestamp queries, the winner goes to the cache, and `tilec emit` then renders it.
// Skips with the reason where SwiftShader is missing. Timings on a CPU driver mean nothing: this
// checks the machinery.
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { compileSpec, planKernel } from "../../compiler/pipeline.ts";
import { findSwiftShader } from "../../runtime/webgpu/node.ts";
import { buildIR } from "../../tune/apply.ts";
import { TuneCache } from "../../tune/cache.ts";
import { reportJson, renderReport } from "../../tune/report.ts";
import { tuneSpec } from "../../tune/run.ts";

const icd = findSwiftShader();

describe.skipIf(!icd)(
  `tilec tune --target wgsl on SwiftShader${icd ? "" : " (skipped: SwiftShader not found)"}`,
  () => {
    it("tunes, gates, stores the winner, and emit uses it", async () => {
      const file = "sw.tile";
      const spec = compileSpec(
        "layout L { video 2 x 4 x 8 batch 1 heads 2 head_dim 16 dtype fp32 }\nkernel k { layout L mask attention_tile(1) block 64 x 64 targets wgsl }",
        file,
      ).spec!;
      const cache = new TuneCache(join(mkdtempSync(join(tmpdir(), "tilec-tune-sw-")), "tune.json"));
      const ticks: number[] = [];
      let total = 0;
      const report = await tuneSpec(spec, file, {
        target: "wgsl",
        swiftshader: true,
        top: 1,
        reps: 2,
        warmup: 1,
        confirmRounds: 1,
        cache,
        progress: { start: (t) => (total = t), tick: (d) => ticks.push(d), stop: () => {} },
      });
      const k = report.kernels[0]!;
      expect(total).toBeGreaterThanOrEqual(1);
      expect(ticks).toEqual(Array.from({ length: total }, (_, i) => i + 1));
      const timed = k.candidates.filter((c) => c.status === "ok" || c.status === "failed");
      expect(timed.length).toBe(total);
      for (const c of timed) {
        expect(c.status, `${c.key}: ${c.reason}`).toBe("ok");
        expect(c.relError).toBeLessThan(1e-4);
        expect(c.ms).toBeGreaterThan(0);
      }
      expect(k.candidates.some((c) => c.status === "pruned" && c.reason)).toBe(true);
      expect(k.default?.status).toBe("ok");
      expect(k.winner).toBeDefined();
      expect(k.winner!.ms).toBeLessThanOrEqual(k.default!.ms);
      // stored under the adapter's identity; read back for a build
      const stored = cache.lookup(report.identity, spec.kernels.get("k")!.hash)!;
      expect(stored.choice).toEqual(k.winner!.choice);
      expect(report.identity.compiler).toMatch(/^dawn \(webgpu \d/);
      const b = buildIR(planKernel(spec.kernels.get("k")!), file, "wgsl", {
        cache,
        wgslLimits: limits(),
      });
      expect(b.tuned?.specHash).toBe(stored.specHash);
      expect(b.tiling).toEqual((stored.choice as { tiling: unknown }).tiling);
      expect(renderReport(report)).toMatch(/config +model ms +ms +TFLOP\/s +vs best +status/);
      expect(JSON.parse(reportJson(report)).kernels[0].kernel).toBe("k");
    }, 120_000);
  },
);

function limits() {
  return {
    maxComputeWorkgroupStorageSize: 65536,
    maxComputeInvocationsPerWorkgroup: 1024,
    maxComputeWorkgroupSizeX: 1024,
    maxStorageBuffersPerShaderStage: 8,
    maxComputeWorkgroupsPerDimension: 65535,
    maxStorageBufferBindingSize: 1 << 30,
  };
}
