// Times tilec's CUDA kernels on the Open-Sora-Plan 29/93-frame masks (24 heads, head dim 96, bf16):
// warm-up, then the median of repeated runs timed with CUDA events; effective TFLOP/s counts
// computed blocks only (4·rows·cols·d per block pair). Writes JSON rows for bench/report.ts.
//   node bin/... : npx tsx bench/cuda-bench.ts OUT.json [--reps 20] [--config w4s2kv64]
//                  [--impl tilec,tilec-sm90]
// Implementations: `tilec` is the mma.sync template (sm_80 configuration, also on an H100);
// `tilec-sm90` the warp-specialized wgmma template (sm_90 default configuration, H100 only).
import { readFileSync, writeFileSync } from "node:fs";
import type { CudaArch } from "../backends/cuda/target.ts";
import type { KernelConfig } from "../compiler/lower.ts";
import { compileSpec, planKernel } from "../compiler/pipeline.ts";
import { compile } from "../runtime/attention.ts";
import { CudaDevice, CudaEvent } from "../runtime/cuda/device.ts";
import { randomArray } from "../runtime/reference.ts";
import { checkKernel, sampleRows } from "../test/support/attentionCheck.ts";

const out = process.argv[2] ?? "tilec.json";
const flag = (name: string) =>
  process.argv.includes(name) ? process.argv[process.argv.indexOf(name) + 1] : undefined;
const reps = Number(flag("--reps") ?? 20);
const cfgArg = flag("--config");
const impls = (flag("--impl") ?? "tilec").split(",");
const ARCH_OF: Record<string, CudaArch> = { tilec: "sm_80", "tilec-sm90": "sm_90" };
for (const i of impls) if (!ARCH_OF[i]) throw new Error(`--impl ${i}: expected tilec or tilec-sm90`);
const config: KernelConfig | undefined = cfgArg
  ? {
      warps: Number(/w(\d+)/.exec(cfgArg)![1]),
      stages: Number(/s(\d+)/.exec(cfgArg)![1]),
      kvTile: Number(/kv(\d+)/.exec(cfgArg)?.[1] ?? 64),
    }
  : undefined;

const dev = CudaDevice.open();
const rows: Record<string, unknown>[] = [];
for (const [label, file] of [
  ["osp29", "examples/efficient-vdit/osp29.tile"],
  ["osp93", "examples/efficient-vdit/osp93.tile"],
] as const) {
  const spec = compileSpec(readFileSync(file, "utf8"), file).spec!;
  const first = [...spec.kernels.values()][0]!;
  const { heads, headDim: d, batch } = first.layout;
  const n = first.layout.frames * first.layout.height * first.layout.width;
  const elems = batch * n * heads * d;
  const q = dev.fromHost(Float32Array.from(randomArray(elems, 1)), "bf16");
  const k = dev.fromHost(Float32Array.from(randomArray(elems, 2)), "bf16");
  const v = dev.fromHost(Float32Array.from(randomArray(elems, 3)), "bf16");
  const o = dev.allocElements("bf16", elems);
  for (const kernel of spec.kernels.values())
    for (const impl of impls) {
      const arch = ARCH_OF[impl]!;
      const attn = await compile(spec, { target: "cuda", kernel: kernel.name, config, arch });
      // Correctness gate on a reduced copy (2 heads, sampled rows) before timing.
      const small = { ...kernel, layout: { ...kernel.layout, heads: 2, kvHeads: 2 } };
      const gate = checkKernel(
        await compile(
          { ...spec, kernels: new Map([[small.name, small]]) },
          { target: "cuda", kernel: small.name, config, arch },
        ),
        small,
        {
          seed: 9,
          rows: sampleRows(n, kernel.blockQ, 24, 5),
        },
      );
      const stats = planKernel(kernel).stats;
      for (let i = 0; i < 3; i++) attn.run(q, k, v, o);
      dev.synchronize();
      const times: number[] = [];
      const a = CudaEvent.create();
      const b = CudaEvent.create();
      for (let i = 0; i < reps; i++) {
        a.record();
        attn.run(q, k, v, o);
        b.record();
        b.synchronize();
        times.push(CudaEvent.elapsedMs(a, b));
      }
      times.sort((x, y) => x - y);
      const ms = times[times.length >> 1]!;
      const row = {
        case: label,
        mask: kernel.name,
        impl,
        template: attn.compiled.template,
        ms,
        density: stats.density,
        flops: stats.flops,
        tflops: stats.flops / (ms * 1e-3) / 1e12,
        config: attn.ir.config,
        kernelDensity: attn.ir.kernelDensity,
        relError: gate.relError,
        minMs: times[0],
        maxMs: times[times.length - 1],
      };
      rows.push(row);
      console.log(
        `${label} ${kernel.name.padEnd(11)} ${impl.padEnd(10)} ${ms.toFixed(3).padStart(9)} ms  ${row.tflops.toFixed(1).padStart(6)} TFLOP/s  density ${(stats.density * 100).toFixed(2)}%  err ${gate.relError.toExponential(2)}`,
      );
      attn.free();
    }
  for (const x of [q, k, v, o]) x.free();
}
writeFileSync(out, JSON.stringify({ device: dev.info.name, rows }, null, 2));
