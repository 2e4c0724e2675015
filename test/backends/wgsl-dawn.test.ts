// Every generated WGSL kernel of every example spec must pass Dawn's own WGSL compiler and pipeline
// validation. Dawn's "null" backend needs no GPU and no driver, so this runs in CI everywhere.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { emitWgsl } from "../../backends/wgsl/emit.ts";
import type { WgslCaps, WgslStorage } from "../../backends/wgsl/target.ts";
import { lowerKernel, type KernelIR } from "../../compiler/lower.ts";
import { compileSpec, planKernel } from "../../compiler/pipeline.ts";
import { WgslCompileError, type WebGpuDevice } from "../../runtime/webgpu/device.ts";
import { openNodeDevice } from "../../runtime/webgpu/node.ts";

function tileFiles(dir: string): string[] {
  return readdirSync(dir)
    .sort()
    .flatMap((f) => {
      const p = join(dir, f);
      return statSync(p).isDirectory() ? tileFiles(p) : p.endsWith(".tile") ? [p] : [];
    });
}

const kernels: KernelIR[] = tileFiles("examples").flatMap((file) => {
  const spec = compileSpec(readFileSync(file, "utf8"), file).spec!;
  return [...spec.kernels.values()].map((k) => lowerKernel(planKernel(k), file));
});

let dev: WebGpuDevice;

beforeAll(async () => {
  dev = await openNodeDevice({ backend: "null" });
});

afterAll(() => dev?.destroy());

/** Dawn's verdict on one shader: compilation messages (errors fail) and pipeline creation. */
async function validate(ir: KernelIR, caps: WgslCaps, storage: WgslStorage, pipeline = true) {
  const k = emitWgsl(ir, caps, { storage });
  if (pipeline) {
    const shader = await dev.shader(k.source, k.entry, `${ir.name}.wgsl`);
    expect(shader.warnings, `${ir.specFile} ${ir.name}`).toEqual([]);
  } else {
    const module = dev.device.createShaderModule({ code: k.source });
    const info = await module.getCompilationInfo();
    expect(info.messages.map((m) => `${m.lineNum}:${m.linePos} ${m.message}`)).toEqual([]);
  }
  return k;
}

describe("generated WGSL through Dawn (null backend)", () => {
  it("finds the example kernels", () => {
    expect(kernels.length).toBeGreaterThanOrEqual(20);
    expect(dev.caps.f16 && dev.caps.subgroups).toBe(true); // the null adapter offers both
  });

  it("compiles every example kernel with f32 storage, without subgroups", async () => {
    const caps = { ...dev.caps, subgroups: false };
    for (const ir of kernels) {
      const k = await validate(ir, caps, "f32");
      expect(k.source).not.toContain("enable subgroups");
    }
  });

  it("compiles every example kernel with f32 storage and the subgroup path", async () => {
    for (const ir of kernels) {
      const k = await validate(ir, dev.caps, "f32");
      expect(k.source).toContain("subgroupShuffleXor");
    }
  });

  it("compiles every example kernel with f16 storage and arithmetic", async () => {
    for (const ir of kernels) {
      const k = await validate(ir, dev.caps, "f16");
      expect(k.source).toContain("enable f16;");
    }
  });

  it("compiles the tall tilings that larger workgroup memory allows (shader module only)", async () => {
    // The null adapter caps workgroup memory at 16 KiB, so a pipeline with the 32/48 KiB tilings of
    // SwiftShader or an NVIDIA GPU cannot be created here; the WGSL itself is still checked.
    for (const bytes of [32768, 49152]) {
      const caps = { ...dev.caps, limits: { ...dev.caps.limits, maxComputeWorkgroupStorageSize: bytes } };
      for (const ir of kernels.slice(0, 6)) {
        const k = await validate(ir, caps, "f32", false);
        expect(k.workgroupBytes).toBeLessThanOrEqual(bytes);
        expect(k.workgroupBytes).toBeGreaterThan(16384);
      }
    }
  });

  it("reports WGSL compiler errors with line:col and the source line", async () => {
    const ir = kernels[0]!;
    const k = emitWgsl(ir, { ...dev.caps, subgroups: false });
    const broken = k.source.replace(
      "let hk = h / (params.heads / params.kv_heads);",
      "let hk = h / undefined_name;",
    );
    const line = broken.split("\n").findIndex((l) => l.includes("undefined_name")) + 1;
    const err = await dev.shader(broken, k.entry, "broken.wgsl").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WgslCompileError);
    expect((err as Error).message).toMatch(new RegExp(`broken\\.wgsl:${line}:\\d+: error: .*undefined_name`));
    expect((err as Error).message).toContain("let hk = h / undefined_name;");
  });

  it("caches pipelines per shader", async () => {
    const k = emitWgsl(kernels[0]!, dev.caps);
    const a = await dev.shader(k.source, k.entry);
    const b = await dev.shader(k.source, k.entry);
    expect(b).toBe(a);
  });
});
