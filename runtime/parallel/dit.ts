// Sequence parallelism for the CUDA DiT (runtime/dit): a replacement for its one self-attention
// call (CudaDit.attention) that runs Ulysses attention over the ranks of a communicator.
//
//   const world = await initWorld();
//   const dit = await CudaDit.create(config, { spec, model, latent, textTokens });
//   const sp = await DitSequenceParallel.create(dit, world.comm, { tokens: "all" });
//   dit.attention = sp.attention;      // the forward now splits attention over world.size GPUs
//
// Two ways the DiT can hold its tokens:
//  - "all": every rank runs the DiT over the whole sequence (what CudaDit does today). The hook
//    cuts the rank's slice out of q, k, v, runs Ulysses attention and all-gathers the output, so
//    every rank continues with the whole attention output. Attention work is divided by N; the
//    other layers are repeated on every rank.
//  - "local": the DiT holds only the rank's tokens (q, k, v, out are [batch, s_r, heads, d], rows
//    [start, start + count) of partitionSequence): a CudaDit created with options.tokens, so every
//    layer's work is divided by N. ditSliced.ts (SlicedDit) sets this up, with the latent's slicing
//    and gathering.
// With one rank both are the non-parallel forward, bit for bit (NCCL copies to itself).
import type { CheckedSpec } from "../../compiler/check.ts";
import { DeviceBuffer } from "../cuda/device.ts";
import { DTYPE_BYTES } from "../cuda/dtype.ts";
import type { CudaDit, SelfAttention, SelfAttentionCall } from "../dit/cuda.ts";
import { SwapAxesKernel } from "./swapAxes.ts";
import { allGatherSequence, UlyssesAttention, UlyssesWorkspace, type Group } from "./ulysses.ts";

export type DitTokens = "all" | "local";

export interface DitParallelOptions {
  readonly tokens: DitTokens;
  readonly cacheDir?: string;
}

/** Every kernel a DiT's model section (or its single kernel) can run. */
export function ditKernelNames(spec: CheckedSpec, model?: string, kernel?: string): string[] {
  if (model !== undefined) {
    const m = spec.models.get(model);
    if (!m) throw new Error(`the spec has no model '${model}'`);
    return [...new Set([...m.layerKernels, ...m.stepOverrides.map((o) => o.kernel)])];
  }
  if (kernel !== undefined) return [kernel];
  const names = [...spec.kernels.keys()];
  if (names.length !== 1) throw new Error(`the spec has ${names.length} kernels: pass a model or a kernel`);
  return names;
}

export class DitSequenceParallel {
  /** Install as `dit.attention`. */
  readonly attention: SelfAttention;
  private readonly local: DeviceBuffer[] = [];

  private constructor(
    private readonly ulysses: ReadonlyMap<string, UlyssesAttention>,
    private readonly swap: SwapAxesKernel,
    private readonly workspace: UlyssesWorkspace,
    readonly comm: Group,
    readonly tokens: DitTokens,
  ) {
    const first = ulysses.values().next().value!;
    if (tokens === "all") {
      const dtype = first.local.ir.dtype;
      // Slices of q, k, v and the output, shared by every layer (kernels share the token layout).
      for (const n of [first.qLength, first.kvLength, first.kvLength, first.qLength])
        this.local.push(DeviceBuffer.alloc(n * DTYPE_BYTES[dtype], dtype));
    }
    this.attention = (call) => this.run(call);
  }

  static async create(dit: CudaDit, comm: Group, options: DitParallelOptions): Promise<DitSequenceParallel> {
    if (options.tokens === "all" && dit.slice.count !== dit.tokens)
      throw new Error(`"all" tokens needs a DiT over every token; this one runs on a slice (use "local")`);
    const spec = dit.checkedSpec;
    const names = ditKernelNames(spec, dit.options.model, dit.options.kernel);
    // One packing kernel and one set of exchange buffers for every layer: the DiT's kernels share
    // its token layout (CudaDit checks) and run one after another on its stream.
    const swap = await SwapAxesKernel.compile(options.cacheDir);
    const workspace = new UlyssesWorkspace(spec.kernels.get(names[0]!)!, comm);
    try {
      const compiled = await Promise.all(
        names.map((kernel) =>
          UlyssesAttention.compile(spec, { kernel, comm, cacheDir: options.cacheDir, swap, workspace }),
        ),
      );
      if (options.tokens === "local")
        for (const u of compiled) {
          const { start, count } = u.tokens;
          if (dit.slice.start !== start || dit.slice.count !== count) {
            for (const x of compiled) x.free();
            throw new Error(
              `"local" tokens: rank ${comm.rank} of ${comm.size} holds tokens [${start}, ${start + count}), ` +
                `but the DiT runs on [${dit.slice.start}, ${dit.slice.start + dit.slice.count}): create it with ` +
                `tokens set to the rank's slice (SlicedDit does)`,
            );
          }
        }
      return new DitSequenceParallel(
        new Map(names.map((n, i) => [n, compiled[i]!])),
        swap,
        workspace,
        comm,
        options.tokens,
      );
    } catch (e) {
      workspace.free();
      swap.free();
      throw e;
    }
  }

  /** The Ulysses attention of a kernel name (its partition, buffers and local kernel). */
  kernel(name: string): UlyssesAttention {
    const u = this.ulysses.get(name);
    if (!u)
      throw new Error(`no sequence-parallel kernel '${name}' (have ${[...this.ulysses.keys()].join(", ")})`);
    return u;
  }

  private run(c: SelfAttentionCall): void {
    const u = this.kernel(c.kernelName);
    if (this.tokens === "local") return u.run(c.q, c.k, c.v, c.out, { stream: c.stream });
    const { heads, kvHeads, headDim: d } = u.kernel.layout;
    const { start, count } = u.tokens;
    const [q, k, v, out] = this.local as [DeviceBuffer, DeviceBuffer, DeviceBuffer, DeviceBuffer];
    const slice = (from: DeviceBuffer, to: DeviceBuffer, h: number) =>
      this.swap.sliceRows(
        from,
        to,
        { batch: u.batch, total: u.seq.total, start, count, rowElems: h * d },
        c.stream,
      );
    slice(c.q, q, heads);
    slice(c.k, k, kvHeads);
    slice(c.v, v, kvHeads);
    u.run(q, k, v, out, { stream: c.stream });
    allGatherSequence(this.comm, u.seq, u.batch, heads * d, out, c.out, c.stream);
  }

  free(): void {
    for (const b of this.local) b.free();
    for (const u of this.ulysses.values()) u.free();
    this.workspace.free();
    this.swap.free();
  }
}
