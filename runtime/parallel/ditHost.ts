// Sequence parallelism of the whole DiT, simulated on the CPU in float64: N ranks each run the DiT
// forward on their contiguous token slice (partitionSequence's rule), and self-attention goes
// through the Ulysses exchange (partition.ts's plans, executed by hostExchange.ts): q, k, v from the
// sequence split to a head split, attention over the whole sequence for the rank's heads, and back.
// This is the GPU path's data movement element for element, so the tests check with it that the
// sliced forward equals the unsliced one (runtime/dit/cpu.ts) for any world size and any slice
// boundaries (through frames and rows, token counts not divisible by N).
import { tokenGrid, type DitConfig } from "../dit/config.ts";
import {
  forwardCpuSlice,
  patchify,
  unpatchify,
  type CpuAttentionCall,
  type DitInputs,
  type LayerMask,
} from "../dit/cpu.ts";
import type { WeightSource } from "../dit/weights.ts";
import { referenceAttention } from "../reference.ts";
import { runExchangeHost, swapAxesHost } from "./hostExchange.ts";
import {
  gatherSequence,
  headsToSeq,
  partitionHeads,
  partitionSequence,
  seqToHeads,
  sliceSequence,
  type SequencePartition,
} from "./partition.ts";

/**
 * Ulysses attention over simulated ranks: per rank q, k, v [batch, s_r, heads, d] → per rank output
 * [batch, s_r, heads, d], each rank attending over the whole sequence for heads/N heads.
 */
export function ulyssesAttentionHost(
  q: readonly Float64Array[],
  k: readonly Float64Array[],
  v: readonly Float64Array[],
  shape: { batch: number; seq: SequencePartition; heads: number; headDim: number },
  allowed: (qi: number, ki: number) => boolean,
): Float64Array[] {
  const { batch, seq, heads, headDim: d } = shape;
  const n = seq.size;
  const local = partitionHeads(heads, heads, n).localHeads;
  const toHeads = seq.counts.map((_, r) => seqToHeads(batch, seq, heads, d, r));
  const split = (xs: readonly Float64Array[]) => {
    const send = xs.map((x, r) => swapAxesHost(x, new Float64Array(x.length), toHeads[r]!.pack));
    const recv = toHeads.map((t) => new Float64Array(t.headsLength));
    runExchangeHost(
      toHeads.map((t) => t.exchange),
      send,
      recv,
    );
    return recv;
  };
  const [qh, kh, vh] = [split(q), split(k), split(v)];
  const attnShape = { batch, seqLen: seq.total, heads: local, kvHeads: local, headDim: d };
  const outHeads = qh.map((_, r) => referenceAttention(qh[r]!, kh[r]!, vh[r]!, attnShape, allowed).out);
  const back = seq.counts.map((_, r) => headsToSeq(batch, seq, heads, d, r));
  const recv = back.map((b) => new Float64Array(b.localLength));
  runExchangeHost(
    back.map((b) => b.exchange),
    outHeads,
    recv,
  );
  return recv.map((x, r) => swapAxesHost(x, new Float64Array(x.length), back[r]!.unpack));
}

export interface SimulatedForward {
  /** [batch, outChannels, frames, height, width], assembled from every rank's slice. */
  readonly output: Float64Array;
  /** Each rank's output rows [batch, s_r, outChannels·p·p] (patchify's channel-first order). */
  readonly slices: readonly Float64Array[];
  readonly seq: SequencePartition;
}

/**
 * forwardCpu on `size` simulated ranks: rank r patchifies (here: cuts out of the whole patch rows)
 * its tokens, runs every layer on them, and meets the other ranks at each self-attention; the
 * output rows are all-gathered (gatherSequence's plan) and unpatchified.
 */
export function forwardCpuSequenceParallel(
  c: DitConfig,
  w: WeightSource,
  inp: DitInputs,
  mask: LayerMask,
  size: number,
): SimulatedForward {
  const { batch: B, frames, height, width } = inp.dims;
  const p = c.patchSize;
  const seq = partitionSequence(tokenGrid(c, { frames, height, width }).tokens, size);
  const allPatches = patchify(inp.latent, { ...inp.dims, channels: c.inChannels }, p, "channel-first");
  const patches = seq.counts.map((_, r) => sliceSequence(allPatches, B, seq, c.inChannels * p * p, r));
  const slices = forwardCpuSlices(c, w, inp, patches, mask);
  const rows = gatherRowsHost(slices, B, seq, c.outChannels * p * p);
  const output = unpatchify(rows, { ...inp.dims, channels: c.outChannels }, p, "channel-first");
  return { output, slices, seq };
}

/**
 * One model evaluation on simulated ranks whose state is already sliced: rank r's patch rows
 * [batch, s_r, inChannels·p·p] in, its output rows [batch, s_r, outChannels·p·p] out (both in
 * patchify's channel-first order, so a sampler can update each rank's slice in place).
 */
export function forwardCpuSlices(
  c: DitConfig,
  w: WeightSource,
  inp: Omit<DitInputs, "latent">,
  patches: readonly Float64Array[],
  mask: LayerMask,
): Float64Array[] {
  const { batch: B, frames, height, width } = inp.dims;
  const seq = partitionSequence(tokenGrid(c, { frames, height, width }).tokens, patches.length);
  const ranks = seq.counts.map((count, r) =>
    forwardCpuSlice(c, w, { ...inp, patches: patches[r]! }, mask, { start: seq.starts[r]!, count }),
  );
  let steps = ranks.map((g) => g.next());
  const shape = { batch: B, seq, heads: c.numHeads, headDim: c.headDim };
  while (steps.some((s) => !s.done)) {
    if (!steps.every((s) => !s.done)) throw new Error("ranks disagree on the number of attention calls");
    const calls = steps.map((s) => s.value as CpuAttentionCall);
    if (calls.some((x) => x.layer !== calls[0]!.layer)) throw new Error("ranks attend in different layers");
    const outs = ulyssesAttentionHost(
      calls.map((x) => x.q),
      calls.map((x) => x.k),
      calls.map((x) => x.v),
      shape,
      calls[0]!.allowed,
    );
    steps = ranks.map((g, r) => g.next(outs[r]!));
  }
  return steps.map((s) => s.value as Float64Array);
}

/** Every rank's [batch, s_r, rowElems] rows into the whole [batch, S, rowElems] (as rank 0 receives them). */
export function gatherRowsHost(
  slices: readonly Float64Array[],
  batch: number,
  seq: SequencePartition,
  rowElems: number,
): Float64Array {
  const plans = slices.map((_, r) => gatherSequence(batch, seq, rowElems, r));
  const recv = slices.map(() => new Float64Array(batch * seq.total * rowElems));
  runExchangeHost(plans, slices, recv);
  return recv[0]!;
}
