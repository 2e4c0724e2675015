// Sequence parallelism for the whole CUDA DiT: each rank runs CudaDit on its contiguous slice of the
// patchified tokens (partitionSequence's rule), so every per-token layer (linear layers, adaLN,
// norms, MLP, cross-attention queries against the replicated text K/V, final layer) does 1/N of
// the work; self-attention goes through Ulysses (DitSequenceParallel in "local" mode: sequence split
// → head split → the tilec kernel on the global plan → back). RoPE uses the tokens' global
// positions (slices may cut frames and rows). The sampler state is the rank's token rows
// ([batch, s_r, channels·p·p]); the latent is assembled once, at the end.
//
//   const world = await initWorld();
//   const sp = await SlicedDit.create(config, { spec, model, latent, textTokens }, world.comm);
//   sp.dit.randomizeWeights(1);  sp.dit.encodeText(text);           // same weights and text on every rank
//   sp.sliceLatent(noise, x);                                       // this rank's rows of the noise
//   const m = ditVelocityModel(sp.dit);
//   consistencySample(m.model, sp.ops, x, { teacherSteps: 100, segments: 20 });
//   sp.gatherLatent(x, video);                                      // every rank: the whole latent
//
// World size 1 gives the non-sliced CudaDit's output bit for bit (same GEMM shapes and kernels; the
// row layout is a permutation of exact fp32 values).
import { DeviceBuffer, type Stream } from "../cuda/device.ts";
import { tokenGrid, type DitConfig } from "../dit/config.ts";
import { CudaDit, type CudaDitOptions } from "../dit/cuda.ts";
import { deviceOps, type VectorOps } from "../sampler/ops.ts";
import { DitSequenceParallel } from "./dit.ts";
import { partitionHeads, partitionSequence, type SequencePartition } from "./partition.ts";
import { allGatherSequence, type Group } from "./ulysses.ts";

export class SlicedDit {
  /** Vector operations on this rank's rows for the samplers (noise drawn as for the whole latent). */
  readonly ops: VectorOps<DeviceBuffer>;
  private fullRows: DeviceBuffer | undefined;
  private noise: DeviceBuffer | undefined;

  private constructor(
    readonly dit: CudaDit,
    readonly sp: DitSequenceParallel,
    readonly comm: Group,
    readonly seq: SequencePartition,
  ) {
    const base = deviceOps(dit.elementKernels);
    this.ops = {
      ...base,
      // The same numbers the whole-latent sampler draws (counter-based, by latent index), cut to
      // this rank's rows, so sampling with noise is exact across world sizes too.
      normal: (out, seed) => {
        this.noise ??= DeviceBuffer.alloc(this.wholeLength(dit.config.inChannels) * 4, "fp32");
        dit.elementKernels.randomNormal(this.noise, seed);
        this.sliceLatent(this.noise, out);
      },
    };
  }

  /** The rank's CudaDit over its tokens, with attention through Ulysses over `comm`. */
  static async create(
    config: DitConfig,
    options: Omit<CudaDitOptions, "tokens" | "attention">,
    comm: Group,
    o: { cacheDir?: string } = {},
  ): Promise<SlicedDit> {
    partitionHeads(config.numHeads, config.numHeads, comm.size); // the clear error before compiling
    const seq = partitionSequence(tokenGrid(config, options.latent).tokens, comm.size);
    const count = seq.counts[comm.rank]!;
    if (count === 0)
      throw new RangeError(
        `${seq.total} tokens over ${comm.size} ranks leave rank ${comm.rank} none: use at most ${seq.total} ranks`,
      );
    const dit = await CudaDit.create(config, {
      ...options,
      cacheDir: options.cacheDir ?? o.cacheDir,
      tokens: { start: seq.starts[comm.rank]!, count },
    });
    try {
      const sp = await DitSequenceParallel.create(dit, comm, {
        tokens: "local",
        cacheDir: options.cacheDir ?? o.cacheDir,
      });
      dit.attention = sp.attention;
      return new SlicedDit(dit, sp, comm, seq);
    } catch (e) {
      dit.free();
      throw e;
    }
  }

  /** Elements of this rank's rows (forward's input with inChannels, output with outChannels). */
  rowsLength(channels: number): number {
    return this.dit.latentLength(channels);
  }

  /** Elements of the whole latent [batch, channels, frames, height, width]. */
  wholeLength(channels: number): number {
    const { frames, height, width } = this.dit.options.latent;
    return this.dit.batch * channels * frames * height * width;
  }

  /** This rank's token rows of a whole latent fp32 [batch, inChannels, T, H, W] (every rank holds it). */
  sliceLatent(whole: DeviceBuffer, rows: DeviceBuffer): void {
    const ch = this.dit.config.inChannels;
    this.check(whole, this.wholeLength(ch), "whole latent");
    this.check(rows, this.rowsLength(ch), "rows");
    this.dit.elementKernels.latentRows(whole, rows, this.dims(ch, this.dit.slice));
  }

  /**
   * Every rank's rows [batch, s_r, channels·p·p] (e.g. the sampled latent or one prediction) into the
   * whole latent fp32 [batch, channels, T, H, W] on every rank: an all-gather, then a permutation.
   */
  gatherLatent(rows: DeviceBuffer, whole: DeviceBuffer, channels = this.dit.config.outChannels): void {
    const p = this.dit.config.patchSize;
    this.check(rows, this.rowsLength(channels), "rows");
    this.check(whole, this.wholeLength(channels), "whole latent");
    const n = this.wholeLength(channels);
    if (!this.fullRows || this.fullRows.length !== n) {
      this.fullRows?.free();
      this.fullRows = DeviceBuffer.alloc(n * 4, "fp32");
    }
    const stream: Stream | null = this.dit.elementKernels.stream;
    allGatherSequence(this.comm, this.seq, this.dit.batch, channels * p * p, rows, this.fullRows, stream);
    this.dit.elementKernels.latentRows(
      whole,
      this.fullRows,
      this.dims(channels, { start: 0, count: this.seq.total }),
      true,
    );
  }

  private dims(C: number, tokens: { start: number; count: number }) {
    const { frames: T, height: H, width: W } = this.dit.options.latent;
    return { B: this.dit.batch, C, T, H, W, p: this.dit.config.patchSize, ...tokens };
  }

  private check(b: DeviceBuffer, n: number, name: string): void {
    if (b.dtype !== "fp32" || b.length !== n)
      throw new RangeError(`${name} must be fp32 with ${n} elements (got ${b.dtype} × ${b.length})`);
  }

  free(): void {
    this.fullRows?.free();
    this.noise?.free();
    this.sp.free();
    this.dit.free();
  }
}
