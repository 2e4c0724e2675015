// Ulysses sequence parallelism around tilec's attention kernel. Each rank holds a contiguous slice
// of the sequence, [batch, s_r, heads, d]; an all-to-all turns q, k and v into the whole sequence
// for heads/N heads, the kernel runs its global plan (every query and key block) over those heads,
// and a second all-to-all returns the output to the sequence split. Rules and index mapping:
// partition.ts.
//
//   const world = await initWorld();
//   const attn = await UlyssesAttention.compile(spec, { kernel: "tile_3_21", comm: world.comm });
//   attn.run(q, k, v, out);   // this rank's slices: q/out [b, s_r, H, d], k/v [b, s_r, G, d]
import { compile, type CudaAttention } from "../attention.ts";
import type { CudaArch } from "../../backends/cuda/target.ts";
import type { CheckedSpec, KernelSpec } from "../../compiler/check.ts";
import { sha256Hex } from "../../compiler/hash.ts";
import { seqLen } from "../../compiler/layout.ts";
import type { KernelConfig } from "../../compiler/lower.ts";
import { compileSpec } from "../../compiler/pipeline.ts";
import { renderDiagnostics } from "../../grammar/index.ts";
import { DeviceBuffer, type Stream } from "../cuda/device.ts";
import { DTYPE_BYTES } from "../cuda/dtype.ts";
import type { NcclComm } from "./nccl.ts";
import {
  gatherSequence,
  headsToSeq,
  partitionHeads,
  partitionSequence,
  SequenceParallelError,
  seqToHeads,
  type HeadPartition,
  type HeadsToSeq,
  type SequencePartition,
  type SeqToHeads,
} from "./partition.ts";
import { SwapAxesKernel } from "./swapAxes.ts";

/** The ranks a computation runs on: a communicator, or a world of one without NCCL. */
export type Group = Pick<NcclComm, "rank" | "size" | "exchangeAll">;

export interface UlyssesOptions {
  readonly comm: Group;
  /** Which kernel of the spec; required when the spec has more than one. */
  readonly kernel?: string;
  readonly config?: KernelConfig;
  readonly arch?: CudaArch;
  readonly file?: string;
  readonly cacheDir?: string;
  /** Exchange buffers shared with other kernels of the same token layout (see UlyssesWorkspace). */
  readonly workspace?: UlyssesWorkspace;
  /** A compiled packing kernel to share. */
  readonly swap?: SwapAxesKernel;
}

export interface UlyssesRunOptions {
  readonly stream?: Stream | null;
}

/** The kernel named in `options` (or the only one) of a spec given as text or checked. */
export function selectKernel(
  spec: string | CheckedSpec | KernelSpec,
  name?: string,
  file = "<spec>",
): KernelSpec {
  if (typeof spec !== "string" && "mask" in spec) return spec;
  let checked: CheckedSpec;
  if (typeof spec === "string") {
    const r = compileSpec(spec, file);
    if (!r.spec) throw new Error(`the spec has errors:\n${renderDiagnostics(r.diagnostics, r.sources)}`);
    checked = r.spec;
  } else checked = spec;
  const names = [...checked.kernels.keys()];
  const chosen = name ?? (names.length === 1 ? names[0] : undefined);
  if (!chosen)
    throw new Error(`the spec has ${names.length} kernels (${names.join(", ")}): pass { kernel: NAME }`);
  const k = checked.kernels.get(chosen);
  if (!k) throw new Error(`the spec has no kernel '${chosen}'; it has ${names.join(", ")}`);
  return k;
}

/**
 * The kernel one rank runs: the same mask, blocks and token layout (so the same global plan) over
 * its share of the heads. Its hash differs from the spec's, so nothing cached for the whole-head
 * kernel is mistaken for it.
 */
export function localKernel(kernel: KernelSpec, heads: HeadPartition): KernelSpec {
  // One rank runs the spec's own kernel (same source, so the same NVRTC cache entry).
  if (heads.localHeads === kernel.layout.heads && heads.localKvHeads === kernel.layout.kvHeads) return kernel;
  const layout = { ...kernel.layout, heads: heads.localHeads, kvHeads: heads.localKvHeads };
  const hash = sha256Hex(
    JSON.stringify({ spec: kernel.hash, heads: heads.localHeads, kvHeads: heads.localKvHeads }),
  );
  return { ...kernel, layout, hash };
}

/** A checked spec holding just `kernel` (what compile() takes). */
export function specOf(kernel: KernelSpec): CheckedSpec {
  return {
    file: "<sequence-parallel>",
    layouts: new Map([[kernel.layout.name, kernel.layout]]),
    masks: new Map(),
    models: new Map(),
    kernels: new Map([[kernel.name, kernel]]),
  };
}

/**
 * The exchange buffers of one shape: send buffers of the rank's q, k, v (q's also receives the
 * output on its way back) and the head-split q, k, v and output. Kernels of one token layout
 * (a DiT's per-layer masks) share one workspace; they must then run on one stream.
 */
export class UlyssesWorkspace {
  readonly key: string;
  readonly sendQ: DeviceBuffer;
  readonly sendK: DeviceBuffer;
  readonly sendV: DeviceBuffer;
  readonly qHeads: DeviceBuffer;
  readonly kHeads: DeviceBuffer;
  readonly vHeads: DeviceBuffer;
  readonly outHeads: DeviceBuffer;
  private readonly all: DeviceBuffer[] = [];

  constructor(kernel: KernelSpec, comm: Pick<Group, "rank" | "size">) {
    this.key = workspaceKey(kernel, comm);
    const l = kernel.layout;
    partitionHeads(l.heads, l.kvHeads, comm.size); // the clear message for sizes that don't split
    const seq = partitionSequence(seqLen(l), comm.size);
    const q = seqToHeads(l.batch, seq, l.heads, l.headDim, comm.rank);
    const kv = seqToHeads(l.batch, seq, l.kvHeads, l.headDim, comm.rank);
    const alloc = (n: number) => {
      const b = DeviceBuffer.alloc(n * DTYPE_BYTES[l.dtype], l.dtype);
      this.all.push(b);
      return b;
    };
    try {
      this.sendQ = alloc(q.localLength);
      this.sendK = alloc(kv.localLength);
      this.sendV = alloc(kv.localLength);
      this.qHeads = alloc(q.headsLength);
      this.kHeads = alloc(kv.headsLength);
      this.vHeads = alloc(kv.headsLength);
      this.outHeads = alloc(q.headsLength);
    } catch (e) {
      this.free();
      throw e;
    }
  }

  free(): void {
    for (const b of this.all) b.free();
  }
}

function workspaceKey(kernel: KernelSpec, comm: Pick<Group, "rank" | "size">): string {
  const l = kernel.layout;
  return [seqLen(l), l.batch, l.heads, l.kvHeads, l.headDim, l.dtype, comm.rank, comm.size].join("/");
}

export class UlyssesAttention {
  readonly seq: SequencePartition;
  readonly heads: HeadPartition;
  readonly batch: number;
  readonly headDim: number;
  private readonly q: SeqToHeads;
  private readonly kv: SeqToHeads;
  private readonly out: HeadsToSeq;

  private constructor(
    readonly kernel: KernelSpec,
    readonly local: CudaAttention,
    private readonly swap: SwapAxesKernel,
    readonly comm: Group,
    private readonly ws: UlyssesWorkspace,
    /** What this instance created and frees (not what it was given to share). */
    private readonly owned: readonly { free(): void }[],
  ) {
    const l = kernel.layout;
    this.batch = l.batch;
    this.headDim = l.headDim;
    this.heads = partitionHeads(l.heads, l.kvHeads, comm.size);
    this.seq = partitionSequence(seqLen(l), comm.size);
    this.q = seqToHeads(l.batch, this.seq, l.heads, l.headDim, comm.rank);
    this.kv = seqToHeads(l.batch, this.seq, l.kvHeads, l.headDim, comm.rank);
    this.out = headsToSeq(l.batch, this.seq, l.heads, l.headDim, comm.rank);
    if (ws.key !== workspaceKey(kernel, comm))
      throw new Error(
        `workspace ${ws.key} does not fit kernel '${kernel.name}' (${workspaceKey(kernel, comm)})`,
      );
  }

  /**
   * Compiles the rank's kernel (the spec's over heads/N heads) and the packing kernel, and
   * allocates the exchange buffers (the rank's q, k, v and their head-split copies, plus the
   * head-split output) unless `o.workspace` is given. Throws SequenceParallelError when the world
   * size does not split the heads.
   */
  static async compile(
    spec: string | CheckedSpec | KernelSpec,
    o: UlyssesOptions,
  ): Promise<UlyssesAttention> {
    const kernel = selectKernel(spec, o.kernel, o.file);
    const heads = partitionHeads(kernel.layout.heads, kernel.layout.kvHeads, o.comm.size);
    const [local, swap] = await Promise.all([
      compile(specOf(localKernel(kernel, heads)), {
        target: "cuda",
        config: o.config,
        arch: o.arch,
        cacheDir: o.cacheDir,
      }),
      o.swap ?? SwapAxesKernel.compile(o.cacheDir),
    ]);
    const owned: { free(): void }[] = [local];
    if (!o.swap) owned.push(swap);
    try {
      const ws = o.workspace ?? new UlyssesWorkspace(kernel, o.comm);
      if (!o.workspace) owned.push(ws);
      return new UlyssesAttention(kernel, local, swap, o.comm, ws, owned);
    } catch (e) {
      for (const x of owned) x.free();
      throw e;
    }
  }

  /** Elements of this rank's q and out slices ([batch, s_r, H, d]). */
  get qLength(): number {
    return this.q.localLength;
  }

  /** Elements of this rank's k and v slices ([batch, s_r, G, d]). */
  get kvLength(): number {
    return this.kv.localLength;
  }

  /** This rank's tokens: [start, start + count) of every batch. */
  get tokens(): { start: number; count: number } {
    return { start: this.seq.starts[this.comm.rank]!, count: this.seq.counts[this.comm.rank]! };
  }

  /** Attention over this rank's slices (bshd, contiguous); all on `stream`, nothing waits on the host. */
  run(
    q: DeviceBuffer,
    k: DeviceBuffer,
    v: DeviceBuffer,
    out: DeviceBuffer,
    options: UlyssesRunOptions = {},
  ): void {
    this.checkBuffer(out, this.qLength, "out");
    this.toHeads(q, k, v, options);
    this.attend(options);
    this.toSequence(out, options);
  }

  // run() in its three steps, each ending where an exchange does, for a caller that interleaves
  // ranks (tests simulating several ranks on one device).

  /** Packs this rank's q, k, v and exchanges them into the head split. */
  toHeads(q: DeviceBuffer, k: DeviceBuffer, v: DeviceBuffer, options: UlyssesRunOptions = {}): void {
    this.checkBuffer(q, this.qLength, "q");
    this.checkBuffer(k, this.kvLength, "k");
    this.checkBuffer(v, this.kvLength, "v");
    const stream = options.stream ?? null;
    this.swap.run(q, this.ws.sendQ, this.q.pack, stream);
    this.swap.run(k, this.ws.sendK, this.kv.pack, stream);
    this.swap.run(v, this.ws.sendV, this.kv.pack, stream);
    this.comm.exchangeAll(
      [
        { plan: this.q.exchange, send: this.ws.sendQ, recv: this.ws.qHeads },
        { plan: this.kv.exchange, send: this.ws.sendK, recv: this.ws.kHeads },
        { plan: this.kv.exchange, send: this.ws.sendV, recv: this.ws.vHeads },
      ],
      stream,
    );
  }

  /** The kernel over this rank's heads, then the output's exchange back to the sequence split. */
  attend(options: UlyssesRunOptions = {}): void {
    const stream = options.stream ?? null;
    this.local.run(this.ws.qHeads, this.ws.kHeads, this.ws.vHeads, this.ws.outHeads, { stream });
    this.comm.exchangeAll([{ plan: this.out.exchange, send: this.ws.outHeads, recv: this.ws.sendQ }], stream);
  }

  /** Unpacks the received output into this rank's slice [batch, s_r, H, d]. */
  toSequence(out: DeviceBuffer, options: UlyssesRunOptions = {}): void {
    this.checkBuffer(out, this.qLength, "out");
    this.swap.run(this.ws.sendQ, out, this.out.unpack, options.stream ?? null);
  }

  private checkBuffer(b: DeviceBuffer, n: number, name: string): void {
    const dtype = this.local.ir.dtype;
    if (b.dtype !== dtype)
      throw new TypeError(`${name} is ${b.dtype}, but kernel '${this.kernel.name}' takes ${dtype}`);
    if (b.length < n)
      throw new RangeError(
        `${name} holds ${b.length} elements; rank ${this.comm.rank} of ${this.comm.size} needs ${n} ` +
          `([${this.batch}, ${this.tokens.count} of ${this.seq.total} tokens, heads, ${this.headDim}])`,
      );
  }

  /** Releases what this instance created (kernel, and the workspace and packing kernel unless shared); idempotent. */
  free(): void {
    for (const x of this.owned) x.free();
  }
}

/**
 * Every rank's [batch, s_r, rowElems] slice into the whole [batch, S, rowElems] on every rank,
 * e.g. the DiT's final output or a test's comparison.
 */
export function allGatherSequence(
  comm: Group,
  seq: SequencePartition,
  batch: number,
  rowElems: number,
  local: DeviceBuffer,
  full: DeviceBuffer,
  stream: Stream | null = null,
): void {
  if (seq.size !== comm.size)
    throw new SequenceParallelError(`partition of ${seq.size} ranks on a world of ${comm.size}`);
  comm.exchangeAll(
    [{ plan: gatherSequence(batch, seq, rowElems, comm.rank), send: local, recv: full }],
    stream,
  );
}
