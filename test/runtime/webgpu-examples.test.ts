// Every example spec's kernels, generated as WGSL and executed through Dawn against the float64
// reference. On SwiftShader (CI) the spec text is shrunk first (fewer frames, rows, columns, text
// tokens and heads), and the masks re-elaborate for the small layout. With TILEC_WEBGPU_GPU=1
// (a real GPU through Vulkan) the kernels run at full sequence length, with 2 heads, and the check
// covers a sample of rows.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { compileSpec } from "../../compiler/pipeline.ts";
import { compileWgsl } from "../../runtime/webgpu/attention.ts";
import { checkWgsl } from "../../runtime/webgpu/check.ts";
import { openNodeDevice, openSwiftShader } from "../../runtime/webgpu/node.ts";
import type { WebGpuDevice } from "../../runtime/webgpu/device.ts";
import { sampleRows } from "../support/attentionCheck.ts";

const files = readdirSync("examples", { recursive: true, withFileTypes: true })
  .filter((e) => e.isFile() && e.name.endsWith(".tile"))
  .map((e) => join(e.parentPath, e.name))
  .sort();

/** The same spec at a size SwiftShader runs in seconds. */
export function shrink(text: string): string {
  return text
    .replace(
      /video\s+(\d+)\s*[x×]\s*(\d+)\s*[x×]\s*(\d+)/g,
      (_, f, h, w) => `video ${Math.min(+f, 2)} x ${Math.min(+h, 4)} x ${Math.min(+w, 8)}`,
    )
    .replace(/text\s+(\d+)/g, (_, n) => `text ${Math.min(+n, 7)}`)
    .replace(/\bheads\s+\d+/g, "heads 2")
    .replace(/\bkv_heads\s+\d+/g, "kv_heads 1");
}

const onGpu = process.env.TILEC_WEBGPU_GPU === "1";
let device: WebGpuDevice | undefined;
let reason = "";
if (onGpu) device = await openNodeDevice({ backend: "vulkan", powerPreference: "high-performance" });
else {
  const ss = await openSwiftShader();
  device = ss.device;
  reason = ss.reason ?? "";
}
afterAll(() => device?.destroy());
// TILEC_WEBGPU_F16=1: every kernel in f16 storage and arithmetic (needs the device's shader-f16).
const storage = process.env.TILEC_WEBGPU_F16 === "1" ? ("f16" as const) : undefined;
if (storage && device && !device.caps.f16) reason = "TILEC_WEBGPU_F16=1 but the device offers no shader-f16";
const runnable = device && (!storage || device.caps.f16);

describe.skipIf(!runnable)(
  `example specs through WGSL${storage ? " in f16" : ""}${runnable ? (onGpu ? " on the GPU" : " on SwiftShader") : ` (skipped: ${reason})`}`,
  () => {
    it.each(files)(
      "%s: every kernel matches the float64 reference",
      async (file) => {
        const original = readFileSync(file, "utf8");
        const text = onGpu
          ? original.replace(/\bheads\s+\d+/g, "heads 2").replace(/\bkv_heads\s+\d+/g, "kv_heads 1")
          : shrink(original);
        const r = compileSpec(text, file);
        expect(r.diagnostics.map((d) => d.message)).toEqual([]);
        for (const k of r.spec!.kernels.values()) {
          const attn = await compileWgsl(r.spec!, { kernel: k.name, device: device!, storage });
          try {
            const n = attn.ir.seqLen;
            const rows = onGpu ? sampleRows(n, k.blockQ, 40, 3) : undefined;
            const res = await checkWgsl(attn, { seed: 21, rows });
            const label = `${file} ${k.name} (${n} tokens)`;
            expect(res.unwritten, label).toBe(0);
            expect(res.nonFinite, label).toBe(0);
            expect(res.maskedRowsOk, label).toBe(true);
            expect(res.relError, label).toBeLessThan(attn.compiled.storage === "f16" ? 1e-2 : 1e-4);
          } finally {
            attn.free();
          }
        }
        // SwiftShader compiles every pipeline on the CPU, which the other test workers share.
      },
      240_000,
    );
  },
);
