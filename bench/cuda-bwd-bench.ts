// Times tilec's attention backward on the Open-Sora-Plan 29/93-frame Attention Tile masks (24 heads,
// head dim 96, bf16), and osp29 at head dims 64 and 128, writing JSON rows for bench/bwd-report.ts.
// Effective TFLOP/s counts computed blocks only: 2.5 × the forward FLOPs (4·rows·cols·d per block
// pair) of the mask's 128×128 plan, the same count for every implementation of a mask.
//   npx tsx bench/cuda-bwd-bench.ts OUT.json [--impl tilec-sm90-bwd,tilec-bwd] [--cases osp29,osp93,osp29-d64,osp29-d128]
// Implementations: `tilec-sm90-bwd` the wgmma dK/dV kernel with dQ accumulated by fp32 reductions
// (the default on an H100), `tilec-sm90-bwd-det` the same with the deterministic dQ pass, `tilec-bwd`
// the mma.sync templates (sm_80 configuration, also on an H100). A timed run is the whole backward:
// row statistics, dK/dV (+ dQ), dQ conversion or pass.
//
// Method as bench/cuda-bench.ts: every kernel compiled and gated first, a 2 s warm-up, then
// interleaved rounds (one untimed and 3 timed runs of every kernel per round, CUDA events), medians.
// Gate: the float64 check of the GPU tests is too slow at 28,800 tokens, so each full-size kernel is
// checked against an independent implementation instead — the mma.sync template's deterministic
// backward on the same inputs (relative L2 of dq, dk, dv); the GPU tests cover the float64 reference.
import { readFileSync, writeFileSync } from "node:fs";
import type { CudaArch } from "../backends/cuda/target.ts";
import type { KernelSpec } from "../compiler/check.ts";
import { compileSpec, planKernel } from "../compiler/pipeline.ts";
import { compile, type BackwardOptions, type CudaAttention } from "../runtime/attention.ts";
import { CudaDevice, CudaEvent, type DeviceBuffer } from "../runtime/cuda/device.ts";
import { randomArray, relativeError } from "../runtime/reference.ts";

const out = process.argv[2] ?? "tilec-bwd.json";
const flag = (name: string) =>
  process.argv.includes(name) ? process.argv[process.argv.indexOf(name) + 1] : undefined;
const PER_ROUND = 3;
const ROUNDS = Number(flag("--rounds") ?? 7);
const WARM_MS = 2000;
const IMPLS: Record<string, { arch: CudaArch; deterministic: boolean }> = {
  "tilec-sm90-bwd": { arch: "sm_90", deterministic: false },
  "tilec-sm90-bwd-det": { arch: "sm_90", deterministic: true },
  "tilec-bwd": { arch: "sm_80", deterministic: false },
};
const impls = (flag("--impl") ?? "tilec-sm90-bwd,tilec-bwd").split(",");
for (const i of impls)
  if (!IMPLS[i]) throw new Error(`--impl ${i}: expected one of ${Object.keys(IMPLS).join(", ")}`);
const CASES: Record<string, { file: string; headDim?: number }> = {
  osp29: { file: "examples/efficient-vdit/osp29.tile" },
  osp93: { file: "examples/efficient-vdit/osp93.tile" },
  "osp29-d64": { file: "examples/efficient-vdit/osp29.tile", headDim: 64 },
  "osp29-d128": { file: "examples/efficient-vdit/osp29.tile", headDim: 128 },
};
const cases = (flag("--cases") ?? "osp29,osp93,osp29-d64,osp29-d128").split(",");
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
const dev = CudaDevice.open();

interface Entry {
  readonly kernel: string;
  readonly impl: string;
  readonly attn: CudaAttention;
  readonly options: BackwardOptions;
  gateError: number;
  readonly times: number[];
}

const rows: Record<string, unknown>[] = [];
for (const label of cases) {
  const c = CASES[label];
  if (!c) throw new Error(`--cases ${label}: expected one of ${Object.keys(CASES).join(", ")}`);
  const spec = compileSpec(readFileSync(c.file, "utf8"), c.file).spec!;
  const kernels = [...spec.kernels.values()].map((k) =>
    c.headDim ? ({ ...k, layout: { ...k.layout, headDim: c.headDim } } as KernelSpec) : k,
  );
  const first = kernels[0]!;
  const { heads, headDim: d, batch } = first.layout;
  const n = first.layout.frames * first.layout.height * first.layout.width;
  const elems = batch * n * heads * d;
  const t = (seed: number) => dev.fromHost(Float32Array.from(randomArray(elems, seed)), "bf16");
  const [q, k, v, dout] = [t(1), t(2), t(3), t(4)];
  const o = dev.allocElements("bf16", elems);
  const lse = dev.allocElements("fp32", batch * heads * n);
  const grads = () => [0, 1, 2].map(() => dev.allocElements("bf16", elems));
  const [dq, dk, dv] = grads();
  const [rq, rk, rv] = grads();
  const entries: Entry[] = [];
  for (const kernel of kernels) {
    const one = { ...spec, kernels: new Map([[kernel.name, kernel]]) };
    // The independent implementation the gate compares with (mma.sync, deterministic dQ).
    const ref = await compile(one, {
      target: "cuda",
      kernel: kernel.name,
      arch: "sm_80",
      backward: true,
      tuned: false,
    });
    ref.run(q, k, v, o, { lse });
    ref.backward(q, k, v, o, lse, dout, rq!, rk!, rv!, { deterministic: true });
    dev.synchronize();
    const want = [rq!, rk!, rv!].map((b) => b.download() as Float32Array);
    for (const impl of impls) {
      const { arch, deterministic } = IMPLS[impl]!;
      const attn = await compile(one, {
        target: "cuda",
        kernel: kernel.name,
        arch,
        backward: true,
        tuned: false,
      });
      for (const g of [dq!, dk!, dv!]) g.poison();
      attn.backward(q, k, v, o, lse, dout, dq!, dk!, dv!, { deterministic });
      dev.synchronize();
      const got = [dq!, dk!, dv!].map((b) => b.download() as Float32Array);
      const gateError = Math.max(...got.map((g, i) => relativeError(g, want[i]!)));
      entries.push({ kernel: kernel.name, impl, attn, options: { deterministic }, gateError, times: [] });
    }
    ref.free();
  }
  const run = (e: Entry) => e.attn.backward(q, k, v, o, lse, dout, dq!, dk!, dv!, e.options);
  for (const impl of impls) {
    const group = entries.filter((e) => e.impl === impl);
    const warmStart = performance.now();
    for (let i = 0; performance.now() - warmStart < WARM_MS; i++) {
      run(group[i % group.length]!);
      dev.synchronize();
    }
    const a = CudaEvent.create();
    const b = CudaEvent.create();
    for (let r = 0; r < ROUNDS; r++)
      for (const e of group) {
        run(e);
        for (let i = 0; i < PER_ROUND; i++) {
          a.record();
          run(e);
          b.record();
          b.synchronize();
          e.times.push(CudaEvent.elapsedMs(a, b));
        }
      }
  }
  for (const e of entries) {
    const kernel = kernels.find((x) => x.name === e.kernel)!;
    const stats = planKernel(kernel).stats;
    const ms = median(e.times);
    const flops = 2.5 * stats.flops;
    const row = {
      case: label,
      mask: e.kernel,
      impl: e.impl,
      headDim: d,
      template: e.attn.backwardCompiled!.source.template,
      ms,
      density: stats.density,
      flops,
      tflops: flops / (ms * 1e-3) / 1e12,
      gateError: e.gateError,
      minMs: Math.min(...e.times),
      maxMs: Math.max(...e.times),
    };
    rows.push(row);
    console.log(
      `${label} ${e.kernel.padEnd(11)} ${e.impl.padEnd(18)} ${ms.toFixed(3).padStart(9)} ms  ${row.tflops.toFixed(1).padStart(6)} TFLOP/s  density ${(stats.density * 100).toFixed(2)}%  gate ${e.gateError.toExponential(2)}`,
    );
    e.attn.free();
  }
  for (const x of [q, k, v, dout, o, lse, dq, dk, dv, rq, rk, rv] as DeviceBuffer[]) x.free();
}
writeFileSync(out, JSON.stringify({ device: dev.info.name, rows }, null, 2));
