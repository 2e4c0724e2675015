// Tuning on a CUDA device: candidates compile through the runtime's compile() (NVRTC, disk-cached),
// are gated on the reference, and are timed with CUDA events on inputs of the kernel's full shape,
// with enough copies of the inputs that one timed pass reads ≥ 4× the L2 cache.
import type { CudaArch } from "../backends/cuda/target.ts";
import type { CheckedSpec, KernelSpec } from "../compiler/check.ts";
import { compile, type CudaAttention } from "../runtime/attention.ts";
import { CudaDevice, CudaEvent, type DeviceBuffer } from "../runtime/cuda/device.ts";
import { f32ToHalfBits, halfBitsToF32, isHalf } from "../runtime/cuda/dtype.ts";
import { randomArray } from "../runtime/reference.ts";
import { seqLen } from "../compiler/layout.ts";
import type { Candidate } from "./candidates.ts";
import type { CudaChoice } from "./choice.ts";
import { cudaTuneLimits, type CudaTuneLimits } from "./cudaSpace.ts";
import { ReferenceGate, tolerance, type GateVerdict } from "./gate.ts";
import type { TuneSession } from "./tuner.ts";

export function cudaDeviceLimits(device: CudaDevice): CudaTuneLimits {
  return cudaTuneLimits(device.arch, device.info);
}

/** Elements of one random block, repeated to fill large buffers (the values only need to be realistic). */
const FILL_BLOCK = 1 << 22;
/** One timed pass should read at least this many times the L2 cache. */
const L2_FACTOR = 4;

interface InputSet {
  readonly q: DeviceBuffer;
  readonly k: DeviceBuffer;
  readonly v: DeviceBuffer;
  readonly out: DeviceBuffer;
}

export class CudaTuneSession implements TuneSession<CudaAttention> {
  private readonly sets: InputSet[] = [];
  private readonly lse: DeviceBuffer<"fp32">;
  private readonly gate: ReferenceGate;
  private turn = 0;
  /** How many input copies a timing pass rotates through (1 when one set already exceeds L2). */
  readonly copies: number;

  constructor(
    private readonly spec: CheckedSpec,
    private readonly kernel: KernelSpec,
    private readonly device: CudaDevice,
    private readonly cacheDir?: string,
  ) {
    const l = kernel.layout;
    const n = seqLen(l);
    const dtype = l.dtype;
    const round = (x: Float32Array) => (isHalf(dtype) ? halfBitsToF32(f32ToHalfBits(x, dtype), dtype) : x);
    this.gate = new ReferenceGate(
      kernel,
      { seqLen: n, heads: l.heads, kvHeads: l.kvHeads, headDim: l.headDim, scale: 1 / Math.sqrt(l.headDim) },
      round,
      tolerance(dtype),
    );
    const qElems = l.batch * n * l.heads * l.headDim;
    const kvElems = l.batch * n * l.kvHeads * l.headDim;
    const bytesPerSet = (2 * qElems + 2 * kvElems) * (dtype === "fp32" ? 4 : 2);
    this.copies = Math.min(64, Math.max(1, Math.ceil((L2_FACTOR * device.info.l2Bytes) / bytesPerSet)));
    const block = Float32Array.from(randomArray(FILL_BLOCK, 77));
    const blockBytes = isHalf(dtype) ? f32ToHalfBits(block, dtype) : block;
    const fill = (elems: number, front?: Float32Array) => {
      const buf = device.allocElements(dtype, elems);
      const esize = buf.bytes / elems;
      let at = 0;
      if (front) {
        buf.upload(front, 0);
        at = front.length;
      }
      while (at < elems) {
        const count = Math.min(FILL_BLOCK, elems - at);
        buf.uploadBytes(new Uint8Array(blockBytes.buffer, blockBytes.byteOffset, count * esize), at * esize);
        at += count;
      }
      return buf;
    };
    for (let i = 0; i < this.copies; i++)
      this.sets.push({
        // Copy 0 carries the gate's inputs at the front (the checked heads, in bhsd order).
        q: fill(qElems, i === 0 ? this.gate.q : undefined),
        k: fill(kvElems, i === 0 ? this.gate.k : undefined),
        v: fill(kvElems, i === 0 ? this.gate.v : undefined),
        out: device.allocElements(dtype, qElems),
      });
    this.lse = device.allocElements("fp32", l.batch * l.heads * n);
  }

  async compile(c: Candidate): Promise<CudaAttention> {
    const choice = c.choice as CudaChoice;
    // A finer query block is the same kernel spec with a smaller block: the plan is re-derived
    // from the mask, the hash (what caches key on) stays.
    const kernel = { ...this.kernel, blockQ: choice.blockQ };
    const spec: CheckedSpec = { ...this.spec, kernels: new Map([[kernel.name, kernel]]) };
    return compile(spec, {
      target: "cuda",
      kernel: kernel.name,
      config: choice.config,
      arch: choice.arch as CudaArch,
      cacheDir: this.cacheDir,
      tuned: false,
    });
  }

  async check(attn: CudaAttention): Promise<GateVerdict> {
    const s = this.sets[0]!;
    s.out.poison();
    this.lse.poison();
    attn.run(s.q, s.k, s.v, s.out, { lse: this.lse, layout: "bhsd" });
    this.device.synchronize();
    const { heads } = this.gate;
    const n = seqLen(this.kernel.layout);
    const out = s.out.download(0, heads * n * this.kernel.layout.headDim) as Float32Array;
    const lse = this.lse.download(0, heads * n) as Float32Array;
    return this.gate.judge(out, lse);
  }

  async time(attn: CudaAttention, reps: number, warmup: number): Promise<number[]> {
    const run = () => {
      const s = this.sets[this.turn++ % this.sets.length]!;
      attn.run(s.q, s.k, s.v, s.out);
    };
    for (let i = 0; i < warmup; i++) run();
    this.device.synchronize();
    const a = CudaEvent.create();
    const b = CudaEvent.create();
    const times: number[] = [];
    try {
      for (let i = 0; i < reps; i++) {
        a.record();
        run();
        b.record();
        b.synchronize();
        times.push(CudaEvent.elapsedMs(a, b));
      }
    } finally {
      a.destroy();
      b.destroy();
    }
    return times;
  }

  release(attn: CudaAttention): void {
    attn.free();
  }

  dispose(): void {
    for (const s of this.sets) for (const b of [s.q, s.k, s.v, s.out]) b.free();
    this.lse.free();
  }
}
