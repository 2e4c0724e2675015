// Times tilec's WGSL kernels on the Open-Sora-Plan 29-frame masks (examples/efficient-vdit/osp29.tile,
// head dim 96; heads reduced to fit time) through Dawn's Vulkan backend: warm-up, then the median of
// repeated dispatches timed with timestamp queries. Effective TFLOP/s counts computed blocks only
// (planKernel(k).stats.flops, scaled to the heads used), as bench/RESULTS.md does for CUDA.
// Every kernel first passes a correctness gate against the float64 reference on sampled rows.
//   npx tsx bench/webgpu-bench.ts OUT.json [--heads 4] [--reps 20] [--warmup 3] [--f16] [--unsafe]
//                                          [--swiftshader] [--tiny]
// --unsafe: Dawn's disable_robustness (no bounds clamping on every buffer access), as a native
//           kernel would run; --tiny: an 8 × 4 × 8 video with 1 head, so SwiftShader finishes in
//           seconds (checks that the benchmark works, measures nothing).
import { readFileSync, writeFileSync } from "node:fs";
import type { CheckedSpec, KernelSpec } from "../compiler/check.ts";
import { seqLen } from "../compiler/layout.ts";
import { compileSpec, planKernel } from "../compiler/pipeline.ts";
import { randomArray } from "../runtime/reference.ts";
import { compileWgsl } from "../runtime/webgpu/attention.ts";
import { checkWgsl } from "../runtime/webgpu/check.ts";
import { findSwiftShader, openNodeDevice } from "../runtime/webgpu/node.ts";

const args = process.argv.slice(2);
const out = args.find((a) => !a.startsWith("--") && !/^\d+$/.test(a)) ?? "webgpu-bench.json";
const flag = (name: string) => (args.includes(name) ? args[args.indexOf(name) + 1] : undefined);
const tiny = args.includes("--tiny");
const heads = Number(flag("--heads") ?? (tiny ? 1 : 4));
const reps = Number(flag("--reps") ?? (tiny ? 3 : 20));
const warmup = Number(flag("--warmup") ?? (tiny ? 1 : 3));
const storage = args.includes("--f16") ? "f16" : "f32";

const file = "examples/efficient-vdit/osp29.tile";
const spec = compileSpec(readFileSync(file, "utf8"), file).spec!;

const icd = args.includes("--swiftshader") || tiny ? findSwiftShader() : undefined;
if ((args.includes("--swiftshader") || tiny) && !icd)
  throw new Error("SwiftShader not found (chromium-common)");
const dev = await openNodeDevice({
  backend: "vulkan",
  icd,
  powerPreference: "high-performance",
  enableToggles: [
    ...(args.includes("--unsafe") ? ["allow_unsafe_apis", "disable_robustness"] : []),
    // Dawn offers shader-f16 on NVIDIA's Vulkan driver only when asked (crbug.com/tint/2164).
    ...(storage === "f16" ? ["vulkan_enable_f16_on_nvidia"] : []),
  ],
});
console.log(
  `device: ${dev.adapter.vendor} ${dev.adapter.architecture} ${dev.adapter.device} (${dev.adapter.description})`,
);
console.log(
  `features: shader-f16 ${dev.caps.f16}, subgroups ${dev.caps.subgroups}, timestamp-query ${dev.timestamps}; ` +
    `workgroup memory ${dev.caps.limits.maxComputeWorkgroupStorageSize} bytes`,
);

/** The kernel at the benchmark's shape: fewer heads (and, with --tiny, a small video). */
function reshape(k: KernelSpec): KernelSpec {
  const l = k.layout;
  return {
    ...k,
    layout: { ...l, heads, kvHeads: heads, ...(tiny ? { frames: 8, height: 4, width: 8 } : {}) },
  };
}

/** Block edges, the ends, and a random sample. */
function sampleRows(n: number, block: number, count: number): number[] {
  const rows = new Set([0, 1, n - 2, n - 1]);
  for (let b = block; b < n && rows.size < count / 2; b += block * 7) [b - 1, b].forEach((r) => rows.add(r));
  const r = randomArray(count, 5);
  for (let i = 0; i < count && rows.size < count; i++) rows.add(Math.floor(((r[i]! + 1) / 2) * n));
  return [...rows].filter((x) => x >= 0 && x < n).sort((a, b) => a - b);
}

const results: Record<string, unknown>[] = [];
for (const original of spec.kernels.values()) {
  const kernel = reshape(original);
  const single: CheckedSpec = { ...spec, kernels: new Map([[kernel.name, kernel]]) };
  const attn = await compileWgsl(single, { device: dev, kernel: kernel.name, storage });
  const n = seqLen(kernel.layout);
  const gate = await checkWgsl(attn, { seed: 9, rows: tiny ? undefined : sampleRows(n, kernel.blockQ, 24) });
  const tol = storage === "f16" ? 1e-2 : 1e-4;
  const ok = gate.unwritten === 0 && gate.maskedRowsOk && gate.relError < tol;
  const elems = n * heads * kernel.layout.headDim;
  const q = dev.upload(Float32Array.from(randomArray(elems, 1)), storage);
  const k = dev.upload(Float32Array.from(randomArray(elems, 2)), storage);
  const v = dev.upload(Float32Array.from(randomArray(elems, 3)), storage);
  const o = dev.empty(elems, storage, 0);
  const t = await attn.time(q, k, v, o, { reps, warmup });
  // FLOPs of the spec's kernel scaled to the heads used (--tiny: of the small video itself).
  const stats = planKernel(tiny ? kernel : original).stats;
  const flops = (stats.flops * heads) / (tiny ? heads : original.layout.heads);
  const ms = t.medianNs / 1e6;
  const row = {
    case: tiny ? "osp29-tiny" : "osp29",
    mask: kernel.name,
    impl: "tilec-wgsl",
    device: dev.adapter,
    storage,
    unsafe: args.includes("--unsafe"),
    heads,
    seqLen: n,
    headDim: kernel.layout.headDim,
    tiling: attn.compiled.tiling,
    subgroups: attn.compiled.subgroups,
    workgroupBytes: attn.compiled.workgroupBytes,
    ms,
    msAll: t.ns.map((x) => x / 1e6),
    density: stats.density,
    flops,
    tflops: flops / (ms * 1e-3) / 1e12,
    gate: {
      ok,
      relError: gate.relError,
      lseError: gate.lseError,
      unwritten: gate.unwritten,
      rows: gate.rows,
    },
  };
  results.push(row);
  console.log(
    `${row.mask.padEnd(9)} density ${(row.density * 100).toFixed(1).padStart(5)}%  ${ms.toFixed(3).padStart(9)} ms  ` +
      `${row.tflops.toPrecision(3).padStart(8)} TFLOP/s  gate ${ok ? "ok" : "FAILED"} (rel ${gate.relError.toExponential(1)})`,
  );
  for (const x of [q, k, v, o]) x.buffer.destroy();
  attn.free();
}
writeFileSync(out, JSON.stringify(results, null, 2) + "\n");
console.log(`wrote ${out}`);
dev.destroy();
if (results.some((r) => !(r.gate as { ok: boolean }).ok)) process.exitCode = 1;
