// A package's WebGPU loader (webgpu.ts + tilec-webgpu.ts, no tilec code) runs its kernels on
// SwiftShader and matches the float64 reference; skips with the reason where SwiftShader is missing.
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { elementMask } from "../../compiler/elementMask.ts";
import { compileSpec } from "../../compiler/pipeline.ts";
import { buildPackage } from "../../pack/build.ts";
import { compareRows, randomArray, referenceAttention } from "../../runtime/reference.ts";
import { openSwiftShader } from "../../runtime/webgpu/node.ts";

const { device, reason } = await openSwiftShader();

describe.skipIf(!device)(
  `package WebGPU loader on SwiftShader${device ? "" : ` (skipped: ${reason})`}`,
  () => {
    it("runs every packaged kernel within 1e-4 of the reference, in both layouts", async () => {
      const text = `layout L { video 2 x 3 x 8 text 3 before batch 1 heads 2 head_dim 16 dtype fp32 }
kernel tile { layout L mask attention_tile(1) block 32 x 32 targets wgsl }
kernel band { layout L mask temporal_band(0) or text_joint block 32 x 32 targets wgsl }`;
      const spec = compileSpec(text, "sw.tile").spec!;
      const dir = mkdtempSync(join(tmpdir(), "tilec-pkg-wgsl-"));
      await buildPackage(spec, "sw.tile", dir, { arch: "sm_90", nvcc: false, useTuned: false });
      const pkg = (await import(join(dir, "webgpu.ts"))) as {
        attention: (n: string, d: GPUDevice) => Promise<{ run: (...a: unknown[]) => void; free(): void }>;
      };
      const dev = device!;
      for (const k of spec.kernels.values()) {
        const n = 2 * 3 * 8 + 3;
        const shape = { batch: 1, seqLen: n, heads: 2, kvHeads: 2, headDim: 16 };
        const [q, kk, v] = [1, 2, 3].map((s) => Float32Array.from(randomArray(n * 2 * 16, s)));
        const ref = referenceAttention(q!, kk!, v!, shape, elementMask(k.layout, k.mask));
        const attn = await pkg.attention(k.name, dev.device);
        for (const layout of ["bshd", "bhsd"] as const) {
          const put = (x: Float32Array) => dev.upload(layout === "bshd" ? x : toBhsd(x, n, 2, 16), "f32");
          const [tq, tk, tv] = [q!, kk!, v!].map(put);
          const out = dev.empty(n * 2 * 16, "f32");
          const lse = dev.empty(2 * n, "f32");
          attn.run(tq!.buffer, tk!.buffer, tv!.buffer, out.buffer, { lse: lse.buffer, layout });
          const raw = await dev.download(out);
          const got = layout === "bshd" ? raw : toBshd(raw, n, 2, 16);
          const r = compareRows(got, await dev.download(lse), ref, shape, [...Array(n).keys()]);
          expect(r.unwritten, `${k.name} ${layout}`).toBe(0);
          expect(r.maskedRowsOk).toBe(true);
          expect(r.relError, `${k.name} ${layout}`).toBeLessThan(1e-4);
          for (const t of [tq!, tk!, tv!, out, lse]) t.buffer.destroy();
        }
        attn.free();
      }
    });
  },
);

function toBhsd(x: Float32Array, n: number, h: number, d: number): Float32Array {
  const y = new Float32Array(x.length);
  for (let s = 0; s < n; s++)
    for (let i = 0; i < h; i++) y.set(x.subarray((s * h + i) * d, (s * h + i + 1) * d), (i * n + s) * d);
  return y;
}

function toBshd(y: Float32Array, n: number, h: number, d: number): Float32Array {
  const x = new Float32Array(y.length);
  for (let s = 0; s < n; s++)
    for (let i = 0; i < h; i++) x.set(y.subarray((i * n + s) * d, (i * n + s + 1) * d), (s * h + i) * d);
  return x;
}
