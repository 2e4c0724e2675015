// Tuning on a WebGPU adapter (Dawn in Node): candidates are emitted with their tiling and subgroup
// choice, gated on the reference, and timed with timestamp queries. Heads are reduced where the
// full tensors would exceed the adapter's storage-buffer binding limit (time scales with heads, so
// candidates still compare; the run says so).
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { emitWgsl } from "../backends/wgsl/emit.ts";
import { bufferProblems, defaultStorage, type WgslStorage } from "../backends/wgsl/target.ts";
import type { KernelSpec } from "../compiler/check.ts";
import { seqLen } from "../compiler/layout.ts";
import { lowerKernel } from "../compiler/lower.ts";
import { planKernel } from "../compiler/pipeline.ts";
import { randomArray } from "../runtime/reference.ts";
import { WgslAttention } from "../runtime/webgpu/attention.ts";
import type { GpuTensor, WebGpuDevice } from "../runtime/webgpu/device.ts";
import { roundToF16 } from "../runtime/webgpu/half.ts";
import type { DeviceIdentity } from "./cache.ts";
import type { Candidate } from "./candidates.ts";
import { choiceIR, type WgslChoice } from "./choice.ts";
import { ReferenceGate, tolerance, type GateVerdict } from "./gate.ts";
import type { TuneSession } from "./tuner.ts";

/** The version of Dawn's `webgpu` package (its native Dawn build), or "unknown". */
export function dawnVersion(): string {
  try {
    const require = createRequire(import.meta.url);
    const pkg = join(dirname(require.resolve("webgpu")), "package.json");
    return (JSON.parse(readFileSync(pkg, "utf8")) as { version?: string }).version ?? "unknown";
  } catch {
    return "unknown";
  }
}

export function wgslIdentity(device: WebGpuDevice): DeviceIdentity {
  const a = device.adapter;
  return {
    target: "wgsl",
    device: [a.vendor, a.architecture, a.device].filter(Boolean).join(" ") || "unknown adapter",
    driver: a.description || "unknown",
    compiler: `dawn (webgpu ${dawnVersion()})`,
  };
}

/**
 * The kernel at `heads` heads, or at the most heads (a divisor of the spec's, keeping its GQA
 * ratio) whose tensors the adapter can bind.
 */
export function wgslTuningKernel(kernel: KernelSpec, device: WebGpuDevice, heads?: number): KernelSpec {
  const l = kernel.layout;
  const at = (h: number): KernelSpec => ({
    ...kernel,
    layout: { ...l, heads: h, kvHeads: Math.max(1, (l.kvHeads * h) / l.heads) },
  });
  if (heads !== undefined) return at(heads);
  const storage = defaultStorage(l, device.caps);
  const ir = lowerKernel(planKernel(kernel), "<tune>");
  for (let h = l.heads; h > 1; h--)
    if (l.heads % h === 0 && (l.kvHeads * h) % l.heads === 0)
      if (!bufferProblems({ ...ir, heads: h }, device.caps.limits, storage).length) return at(h);
  return at(1);
}

interface InputSet {
  readonly q: GpuTensor;
  readonly k: GpuTensor;
  readonly v: GpuTensor;
  readonly out: GpuTensor;
}

export class WgslTuneSession implements TuneSession<WgslAttention> {
  private readonly sets: InputSet[] = [];
  private readonly lse: GpuTensor;
  private readonly gate: ReferenceGate;
  readonly storage: WgslStorage;
  readonly copies: number;

  /** `kernel` is the shape to run (wgslTuningKernel); `l2Bytes` sizes the input rotation. */
  constructor(
    private readonly kernel: KernelSpec,
    private readonly file: string,
    private readonly device: WebGpuDevice,
    l2Bytes = 64 << 20,
  ) {
    const l = kernel.layout;
    const n = seqLen(l);
    this.storage = defaultStorage(l, device.caps);
    const round = (x: Float32Array) => (this.storage === "f16" ? roundToF16(x) : x);
    this.gate = new ReferenceGate(
      kernel,
      { seqLen: n, heads: l.heads, kvHeads: l.kvHeads, headDim: l.headDim, scale: 1 / Math.sqrt(l.headDim) },
      round,
      tolerance(this.storage),
    );
    const qElems = l.batch * n * l.heads * l.headDim;
    const kvElems = l.batch * n * l.kvHeads * l.headDim;
    const bytesPerSet = (2 * qElems + 2 * kvElems) * (this.storage === "f16" ? 2 : 4);
    this.copies = Math.min(16, Math.max(1, Math.ceil((4 * l2Bytes) / bytesPerSet)));
    const host = (elems: number, front: Float32Array | undefined, seed: number) => {
      const x = round(Float32Array.from(randomArray(elems, seed)));
      if (front) x.set(front);
      return device.upload(x, this.storage);
    };
    for (let i = 0; i < this.copies; i++)
      this.sets.push({
        q: host(qElems, i === 0 ? this.gate.q : undefined, 100 + i),
        k: host(kvElems, i === 0 ? this.gate.k : undefined, 200 + i),
        v: host(kvElems, i === 0 ? this.gate.v : undefined, 300 + i),
        out: device.empty(qElems, this.storage),
      });
    this.lse = device.empty(l.batch * l.heads * n, "f32");
  }

  async compile(c: Candidate): Promise<WgslAttention> {
    const choice = c.choice as WgslChoice;
    const ir = choiceIR(this.kernel, this.file, choice);
    const caps = { ...this.device.caps, subgroups: choice.subgroups };
    const src = emitWgsl(ir, caps, { tiling: choice.tiling, storage: this.storage });
    const shader = await this.device.shader(src.source, src.entry, `${ir.entry} ${c.key}`);
    return new WgslAttention(this.kernel, ir, src, shader, this.device);
  }

  async check(attn: WgslAttention): Promise<GateVerdict> {
    const s = this.sets[0]!;
    this.device.write(s.out, new Float32Array(s.out.length).fill(NaN));
    this.device.write(this.lse, new Float32Array(this.lse.length).fill(NaN));
    await attn.run(s.q, s.k, s.v, s.out, { lse: this.lse, layout: "bhsd" });
    return this.gate.judge(await this.device.download(s.out), await this.device.download(this.lse));
  }

  async time(attn: WgslAttention, reps: number, warmup: number): Promise<number[]> {
    if (this.copies === 1) {
      const s = this.sets[0]!;
      return (await attn.time(s.q, s.k, s.v, s.out, { reps, warmup })).ns.map((x) => x / 1e6);
    }
    // One dispatch per input copy in turn, so consecutive runs never find their inputs in L2.
    const ms: number[] = [];
    for (let i = 0; i < reps; i++) {
      const s = this.sets[i % this.copies]!;
      const t = await attn.time(s.q, s.k, s.v, s.out, { reps: 1, warmup: i === 0 ? warmup : 0 });
      ms.push(t.ns[0]! / 1e6);
    }
    return ms;
  }

  release(attn: WgslAttention): void {
    attn.free();
  }

  dispose(): void {
    for (const s of this.sets) for (const t of [s.q, s.k, s.v, s.out]) t.buffer.destroy();
    this.lse.buffer.destroy();
  }
}
