// Times tilec's CUDA kernels on the Open-Sora-Plan 29/93-frame masks (24 heads, head dim 96, bf16)
// and writes JSON rows for bench/report.ts. Effective TFLOP/s counts computed blocks only
// (4·rows·cols·d per block pair of the mask's 128×128 plan).
//   npx tsx bench/cuda-bench.ts OUT.json [--reps 21] [--config w4s2kv64] [--impl tilec,tilec-sm90]
// Implementations: `tilec` is the mma.sync template (sm_80 configuration, also on an H100);
// `tilec-sm90` the warp-specialized wgmma template (sm_90 default configuration, H100 only).
//
// Method: every kernel of a case is compiled and passes the float64 gate first; then, after a
// warm-up of WARM_MS of back-to-back runs, the kernels are timed in interleaved rounds (each round:
// one untimed run and 3 timed runs of every kernel, CUDA events), and each kernel's time is the
// median of its runs; each implementation is a group of its own. These kernels hold an H100 at its 700 W power cap, where the clock follows
// the GPU's temperature; timing kernels one after the other let the later ones run on a hotter,
// slower GPU (time(mask)/time(full) drifted by up to 8% that way), and rounds spread that drift
// evenly (bench/NOTES.md step 20).
import { readFileSync, writeFileSync } from "node:fs";
import type { CudaArch } from "../backends/cuda/target.ts";
import type { KernelConfig } from "../compiler/lower.ts";
import { compileSpec, planKernel } from "../compiler/pipeline.ts";
import { compile, type CudaAttention } from "../runtime/attention.ts";
import { CudaDevice, CudaEvent } from "../runtime/cuda/device.ts";
import { randomArray } from "../runtime/reference.ts";
import { checkKernel, sampleRows } from "../test/support/attentionCheck.ts";

const out = process.argv[2] ?? "tilec.json";
const flag = (name: string) =>
  process.argv.includes(name) ? process.argv[process.argv.indexOf(name) + 1] : undefined;
const PER_ROUND = 3;
const rounds = Math.max(1, Math.ceil(Number(flag("--reps") ?? 21) / PER_ROUND));
const WARM_MS = 2000;
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

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

interface Entry {
  readonly kernel: string;
  readonly impl: string;
  readonly attn: CudaAttention;
  readonly relError: number;
  /** Timed runs, ms. */
  readonly times: number[];
}

/** Warm-up over the group, then interleaved rounds; appends each kernel's timed runs to `times`. */
function time(group: Entry[], run: (attn: CudaAttention) => void): void {
  const warmStart = performance.now();
  for (let i = 0; performance.now() - warmStart < WARM_MS; i++) {
    run(group[i % group.length]!.attn);
    dev.synchronize();
  }
  const a = CudaEvent.create();
  const b = CudaEvent.create();
  for (let r = 0; r < rounds; r++)
    for (const e of group) {
      run(e.attn);
      for (let i = 0; i < PER_ROUND; i++) {
        a.record();
        run(e.attn);
        b.record();
        b.synchronize();
        e.times.push(CudaEvent.elapsedMs(a, b));
      }
    }
}

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
  const entries: Entry[] = [];
  for (const kernel of spec.kernels.values())
    for (const impl of impls) {
      const arch = ARCH_OF[impl]!;
      const attn = await compile(spec, { target: "cuda", kernel: kernel.name, config, arch });
      // Correctness gate on a reduced copy (2 heads, sampled rows) before timing.
      const small = { ...kernel, layout: { ...kernel.layout, heads: 2, kvHeads: 2 } };
      const gateAttn = await compile(
        { ...spec, kernels: new Map([[small.name, small]]) },
        { target: "cuda", kernel: small.name, config, arch },
      );
      const gate = checkKernel(gateAttn, small, { seed: 9, rows: sampleRows(n, kernel.blockQ, 24, 5) });
      gateAttn.free();
      entries.push({ kernel: kernel.name, impl, attn, relError: gate.relError, times: [] });
    }
  // Each implementation is timed as its own group: its kernels alone share the GPU's thermal state
  // (mixing in a cooler-running implementation would lift the hotter one's numbers).
  for (const impl of impls)
    time(
      entries.filter((e) => e.impl === impl),
      (attn) => attn.run(q, k, v, o),
    );
  for (const e of entries) {
    const stats = planKernel(spec.kernels.get(e.kernel)!).stats;
    const ms = median(e.times);
    const row = {
      case: label,
      mask: e.kernel,
      impl: e.impl,
      template: e.attn.compiled.template,
      ms,
      density: stats.density,
      flops: stats.flops,
      tflops: stats.flops / (ms * 1e-3) / 1e12,
      config: e.attn.ir.config,
      kernelDensity: e.attn.ir.kernelDensity,
      relError: e.relError,
      minMs: Math.min(...e.times),
      maxMs: Math.max(...e.times),
    };
    rows.push(row);
    console.log(
      `${label} ${e.kernel.padEnd(11)} ${e.impl.padEnd(10)} ${ms.toFixed(3).padStart(9)} ms  ${row.tflops.toFixed(1).padStart(6)} TFLOP/s  density ${(stats.density * 100).toFixed(2)}%  err ${e.relError.toExponential(2)}`,
    );
    e.attn.free();
  }
  for (const x of [q, k, v, o]) x.free();
}
writeFileSync(out, JSON.stringify({ device: dev.info.name, rows }, null, 2));
