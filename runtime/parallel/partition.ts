// How Ulysses sequence parallelism splits attention over N ranks, as plain numbers: which tokens a
// rank holds, which heads it computes, and the exchange (a local axis swap plus point-to-point
// transfers) that moves a tensor between the two splits. The GPU path (ulysses.ts) and the CPU
// simulation in the tests execute these same plans, so the index mapping is tested without GPUs.
//
// Rules:
//  - Sequence: contiguous, balanced. Rank r holds tokens [start_r, start_r + count_r) where the
//    first S mod N ranks hold ⌈S/N⌉ tokens and the rest ⌊S/N⌋ (sizes differ by at most one; a rank
//    may hold none when S < N). Any S works: the transfers carry per-rank counts.
//  - Heads: rank r computes query heads [r·H/N, (r+1)·H/N) and kv heads [r·G/N, (r+1)·G/N). Both H
//    and G must be divisible by N (rejected otherwise, naming the world sizes that work). Then a
//    rank's query heads use exactly its kv heads: head h reads kv head ⌊h/(H/G)⌋, and
//    r·(H/N)/(H/G) = r·G/N.

export class SequenceParallelError extends Error {
  override name = "SequenceParallelError";
}

export interface SequencePartition {
  /** Tokens in the whole sequence. */
  readonly total: number;
  /** World size. */
  readonly size: number;
  /** Tokens rank r holds. */
  readonly counts: readonly number[];
  /** First token of rank r. */
  readonly starts: readonly number[];
}

export function partitionSequence(total: number, size: number): SequencePartition {
  if (!Number.isSafeInteger(total) || total < 0) throw new RangeError(`sequence length ${total} is invalid`);
  if (!Number.isSafeInteger(size) || size < 1) throw new RangeError(`world size ${size} is invalid`);
  const base = Math.floor(total / size);
  const extra = total % size;
  const counts = Array.from({ length: size }, (_, r) => base + (r < extra ? 1 : 0));
  const starts = counts.map((_, r) => r * base + Math.min(r, extra));
  return { total, size, counts, starts };
}

export interface HeadPartition {
  readonly heads: number;
  readonly kvHeads: number;
  readonly size: number;
  /** Query heads per rank (H/N). */
  readonly localHeads: number;
  /** KV heads per rank (G/N). */
  readonly localKvHeads: number;
}

/** World sizes up to `max` that split both H and G evenly. */
export function validWorldSizes(heads: number, kvHeads: number, max = heads): number[] {
  const out: number[] = [];
  for (let n = 1; n <= max; n++) if (heads % n === 0 && kvHeads % n === 0) out.push(n);
  return out;
}

export function partitionHeads(heads: number, kvHeads: number, size: number): HeadPartition {
  if (!Number.isSafeInteger(size) || size < 1) throw new RangeError(`world size ${size} is invalid`);
  const valid = () => validWorldSizes(heads, kvHeads).join(", ");
  if (heads % size !== 0)
    throw new SequenceParallelError(
      `sequence parallelism over ${size} ranks gives each rank heads/${size} heads, but heads (${heads}) ` +
        `is not divisible by ${size}; run on ${valid()} GPU(s)`,
    );
  if (kvHeads % size !== 0)
    throw new SequenceParallelError(
      `sequence parallelism over ${size} ranks splits the kv heads too, but kv_heads (${kvHeads}) is not ` +
        `divisible by ${size} (replicating kv heads is not supported); run on ${valid()} GPU(s)`,
    );
  return { heads, kvHeads, size, localHeads: heads / size, localKvHeads: kvHeads / size };
}

/**
 * A local axis swap: the input viewed as [outer, inner, unit] elements is written as
 * [inner, outer, unit]. `unit` elements are contiguous on both sides (one head group's rows).
 */
export interface SwapAxes {
  readonly outer: number;
  readonly inner: number;
  readonly unit: number;
}

/** One point-to-point transfer, in elements of the tensor's dtype from the buffer's start. */
export interface Transfer {
  readonly peer: number;
  readonly offset: number;
  readonly count: number;
}

/**
 * NCCL pairs the k-th send from rank a to rank b with the k-th receive on b from a, so both sides
 * list their transfers to one peer in the same order. Zero-length transfers are left out on both
 * sides alike (they are derived from the same partition).
 */
export interface Exchange {
  readonly sends: readonly Transfer[];
  readonly recvs: readonly Transfer[];
}

/** Shapes of one tensor around the exchange, for one rank. */
export interface SeqToHeads {
  /** [batch, s_r, heads, d] → send buffer [N, batch·s_r, heads/N·d]: one contiguous chunk per peer. */
  readonly pack: SwapAxes;
  /** Chunks go straight into their place in [batch, S, heads/N, d] (one receive per source and batch). */
  readonly exchange: Exchange;
  /** Elements of the local input (= of the send buffer) and of the head-split output. */
  readonly localLength: number;
  readonly headsLength: number;
}

export interface HeadsToSeq {
  /** Sends slices of [batch, S, heads/N, d] (one per destination and batch) into a receive buffer [N, batch·s_r, heads/N·d]. */
  readonly exchange: Exchange;
  /** Receive buffer [N, batch·s_r, heads/N·d] → [batch, s_r, heads, d]. */
  readonly unpack: SwapAxes;
  readonly localLength: number;
  readonly headsLength: number;
}

function checkRank(seq: SequencePartition, rank: number): void {
  if (!Number.isInteger(rank) || rank < 0 || rank >= seq.size)
    throw new RangeError(`rank ${rank} outside 0..${seq.size - 1}`);
}

/**
 * Sequence split → head split for a tensor with `heads` heads (query or kv) of `headDim`.
 * On rank r the chunk for peer p is heads [p·h, (p+1)·h) of r's tokens (h = heads/N); peer p
 * receives it into every batch's rows [start_r, start_r + count_r).
 */
export function seqToHeads(
  batch: number,
  seq: SequencePartition,
  heads: number,
  headDim: number,
  rank: number,
): SeqToHeads {
  checkRank(seq, rank);
  const n = seq.size;
  if (heads % n !== 0) throw new SequenceParallelError(`${heads} heads do not split over ${n} ranks`);
  const rowElems = (heads / n) * headDim;
  const mine = seq.counts[rank]!;
  const chunk = batch * mine * rowElems;
  const sends: Transfer[] = [];
  const recvs: Transfer[] = [];
  // One transfer per batch on both sides: the receiver's rows of one batch are contiguous, those of
  // consecutive batches are not.
  const perBatch = mine * rowElems;
  for (let p = 0; p < n; p++)
    if (perBatch > 0)
      for (let b = 0; b < batch; b++)
        sends.push({ peer: p, offset: p * chunk + b * perBatch, count: perBatch });
  for (let src = 0; src < n; src++) {
    const count = seq.counts[src]! * rowElems;
    if (count === 0) continue;
    for (let b = 0; b < batch; b++)
      recvs.push({ peer: src, offset: (b * seq.total + seq.starts[src]!) * rowElems, count });
  }
  return {
    pack: { outer: batch * mine, inner: n, unit: rowElems },
    exchange: { sends, recvs },
    localLength: batch * mine * heads * headDim,
    headsLength: batch * seq.total * rowElems,
  };
}

/** Head split → sequence split: the inverse of seqToHeads (the attention output's way back). */
export function headsToSeq(
  batch: number,
  seq: SequencePartition,
  heads: number,
  headDim: number,
  rank: number,
): HeadsToSeq {
  checkRank(seq, rank);
  const n = seq.size;
  if (heads % n !== 0) throw new SequenceParallelError(`${heads} heads do not split over ${n} ranks`);
  const rowElems = (heads / n) * headDim;
  const mine = seq.counts[rank]!;
  const sends: Transfer[] = [];
  const recvs: Transfer[] = [];
  for (let dst = 0; dst < n; dst++) {
    const count = seq.counts[dst]! * rowElems;
    if (count === 0) continue;
    for (let b = 0; b < batch; b++)
      sends.push({ peer: dst, offset: (b * seq.total + seq.starts[dst]!) * rowElems, count });
  }
  const perBatch = mine * rowElems;
  const chunk = batch * perBatch;
  for (let src = 0; src < n; src++)
    if (perBatch > 0)
      for (let b = 0; b < batch; b++)
        recvs.push({ peer: src, offset: src * chunk + b * perBatch, count: perBatch });
  return {
    exchange: { sends, recvs },
    unpack: { outer: n, inner: batch * mine, unit: rowElems },
    localLength: batch * mine * heads * headDim,
    headsLength: batch * seq.total * rowElems,
  };
}

/**
 * Every rank's [batch, s_r, rowElems] slice into the whole [batch, S, rowElems] on every rank
 * (an all-gather that allows uneven slices and batch > 1, written as transfers).
 */
export function gatherSequence(
  batch: number,
  seq: SequencePartition,
  rowElems: number,
  rank: number,
): Exchange {
  checkRank(seq, rank);
  const mine = seq.counts[rank]! * rowElems;
  const sends: Transfer[] = [];
  const recvs: Transfer[] = [];
  for (let p = 0; p < seq.size; p++) {
    if (mine > 0) for (let b = 0; b < batch; b++) sends.push({ peer: p, offset: b * mine, count: mine });
    const theirs = seq.counts[p]! * rowElems;
    if (theirs > 0)
      for (let b = 0; b < batch; b++)
        recvs.push({ peer: p, offset: (b * seq.total + seq.starts[p]!) * rowElems, count: theirs });
  }
  return { sends, recvs };
}

/** Rows [start_r, start_r + count_r) of every batch of a [batch, S, rowElems] host tensor. */
export function sliceSequence<T extends Float32Array | Float64Array>(
  full: T,
  batch: number,
  seq: SequencePartition,
  rowElems: number,
  rank: number,
): T {
  checkRank(seq, rank);
  const count = seq.counts[rank]! * rowElems;
  const out = new (full.constructor as new (n: number) => T)(batch * count);
  for (let b = 0; b < batch; b++) {
    const from = (b * seq.total + seq.starts[rank]!) * rowElems;
    out.set(full.subarray(from, from + count), b * count);
  }
  return out;
}
