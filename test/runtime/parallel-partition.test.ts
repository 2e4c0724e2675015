// Ulysses partitioning on CPU arrays with N simulated ranks: the same plans the GPU path runs
// (partition.ts), executed by hostExchange.ts.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { elementMask } from "../../compiler/elementMask.ts";
import { compileSpec } from "../../compiler/pipeline.ts";
import { runExchangeHost, swapAxesHost } from "../../runtime/parallel/hostExchange.ts";
import {
  gatherSequence,
  headsToSeq,
  partitionHeads,
  partitionSequence,
  SequenceParallelError,
  seqToHeads,
  sliceSequence,
  validWorldSizes,
} from "../../runtime/parallel/partition.ts";
import { randomArray, referenceAttention } from "../../runtime/reference.ts";
import type { KernelSpec } from "../../compiler/check.ts";
import { randomMask, Rng } from "../support/random.ts";

/** Heads [h0, h0 + count) of a [batch, seq, heads, d] tensor. */
function headSlice(
  full: Float64Array,
  batch: number,
  seq: number,
  heads: number,
  d: number,
  h0: number,
  count: number,
) {
  const out = new Float64Array(batch * seq * count * d);
  for (let b = 0; b < batch; b++)
    for (let s = 0; s < seq; s++)
      for (let h = 0; h < count; h++) {
        const from = ((b * seq + s) * heads + h0 + h) * d;
        out.set(full.subarray(from, from + d), ((b * seq + s) * count + h) * d);
      }
  return out;
}

/** The Ulysses forward on N simulated ranks: local slices → head split → f → sequence split. */
function simulate(
  n: number,
  batch: number,
  total: number,
  d: number,
  tensors: { full: Float64Array; heads: number }[],
  perRank: (headSplit: Float64Array[], rank: number) => Float64Array,
  outHeads: number,
): Float64Array[] {
  const seq = partitionSequence(total, n);
  const headSplit: Float64Array[][] = Array.from({ length: n }, () => []);
  for (const { full, heads } of tensors) {
    const plans = Array.from({ length: n }, (_, r) => seqToHeads(batch, seq, heads, d, r));
    const sendBufs = plans.map((p, r) => {
      const local = sliceSequence(full, batch, seq, heads * d, r);
      return swapAxesHost(local, new Float64Array(p.localLength), p.pack);
    });
    const recvBufs = plans.map((p) => new Float64Array(p.headsLength).fill(NaN));
    runExchangeHost(
      plans.map((p) => p.exchange),
      sendBufs,
      recvBufs,
    );
    recvBufs.forEach((b, r) => headSplit[r]!.push(b));
  }
  const back = Array.from({ length: n }, (_, r) => headsToSeq(batch, seq, outHeads, d, r));
  const results = headSplit.map((t, r) => perRank(t, r));
  const recv = back.map((p) => new Float64Array(p.localLength).fill(NaN));
  runExchangeHost(
    back.map((p) => p.exchange),
    results,
    recv,
  );
  return recv.map((buf, r) => swapAxesHost(buf, new Float64Array(back[r]!.localLength), back[r]!.unpack));
}

const shapes = fc
  .record({
    n: fc.integer({ min: 1, max: 6 }),
    batch: fc.integer({ min: 1, max: 3 }),
    total: fc.integer({ min: 0, max: 40 }),
    headsPerRank: fc.integer({ min: 1, max: 3 }),
    d: fc.integer({ min: 1, max: 5 }),
    seed: fc.integer({ min: 1, max: 1 << 30 }),
  })
  .map((s) => ({ ...s, heads: s.headsPerRank * s.n }));

describe("sequence partition", () => {
  it("is contiguous, covers the sequence and balances to within one token", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 100_000 }), fc.integer({ min: 1, max: 64 }), (total, n) => {
        const p = partitionSequence(total, n);
        expect(p.counts.reduce((a, b) => a + b, 0)).toBe(total);
        p.counts.forEach((c, r) =>
          expect(p.starts[r]).toBe(r === 0 ? 0 : p.starts[r - 1]! + p.counts[r - 1]!),
        );
        expect(Math.max(...p.counts) - Math.min(...p.counts)).toBeLessThanOrEqual(1);
        // The longer slices come first, so rank 0 always holds the most.
        expect(p.counts[0]).toBe(Math.ceil(total / n));
      }),
    );
  });

  it("86,400 tokens on 4 ranks: 21,600 each; 28,800 on 7: 4,115 on one rank, 4,114 on six", () => {
    expect(partitionSequence(86_400, 4).counts).toEqual([21_600, 21_600, 21_600, 21_600]);
    expect(partitionSequence(28_800, 7).counts).toEqual([4115, 4115, 4114, 4114, 4114, 4114, 4114]);
  });

  it("scatter then gather is the identity on every rank (uneven slices, batch > 1)", () => {
    fc.assert(
      fc.property(shapes, ({ n, batch, total, d, seed }) => {
        const full = randomArray(batch * total * d, seed);
        const seq = partitionSequence(total, n);
        const locals = Array.from({ length: n }, (_, r) => sliceSequence(full, batch, seq, d, r));
        const gathered = locals.map(() => new Float64Array(full.length).fill(NaN));
        runExchangeHost(
          locals.map((_, r) => gatherSequence(batch, seq, d, r)),
          locals,
          gathered,
        );
        for (const g of gathered) expect(g).toEqual(full);
      }),
    );
  });
});

describe("head partition", () => {
  it("splits heads and kv heads evenly and keeps GQA groups on one rank", () => {
    const p = partitionHeads(24, 8, 4);
    expect([p.localHeads, p.localKvHeads]).toEqual([6, 2]);
    // Rank r's query heads read exactly its kv heads.
    for (let r = 0; r < 4; r++)
      for (let h = r * p.localHeads; h < (r + 1) * p.localHeads; h++) {
        const kv = Math.floor(h / (p.heads / p.kvHeads));
        expect(Math.floor(kv / p.localKvHeads)).toBe(r);
        expect(kv - r * p.localKvHeads).toBe(Math.floor((h - r * p.localHeads) / (p.heads / p.kvHeads)));
      }
  });

  it("rejects head counts the world size does not divide, naming the sizes that work", () => {
    expect(() => partitionHeads(24, 24, 5)).toThrow(SequenceParallelError);
    expect(() => partitionHeads(24, 24, 5)).toThrow(
      /heads \(24\) is not divisible by 5; run on 1, 2, 3, 4, 6, 8, 12, 24 GPU/,
    );
    expect(() => partitionHeads(24, 2, 4)).toThrow(/kv_heads \(2\) is not divisible by 4 .*run on 1, 2 GPU/);
    expect(validWorldSizes(48, 48, 8)).toEqual([1, 2, 3, 4, 6, 8]);
  });
});

describe("all-to-all between the sequence split and the head split", () => {
  it("gives rank p heads [p·H/N, (p+1)·H/N) of the whole sequence, and back is the identity", () => {
    fc.assert(
      fc.property(shapes, ({ n, batch, total, heads, d, seed }) => {
        const full = randomArray(batch * total * heads * d, seed);
        const h = heads / n;
        const seq = partitionSequence(total, n);
        const back = simulate(
          n,
          batch,
          total,
          d,
          [{ full, heads }],
          ([headSplit], r) => {
            expect(headSplit).toEqual(headSlice(full, batch, total, heads, d, r * h, h));
            return headSplit!;
          },
          heads,
        );
        back.forEach((local, r) => expect(local).toEqual(sliceSequence(full, batch, seq, heads * d, r)));
      }),
    );
  });

  it("attention through N simulated ranks equals the one-rank result exactly (random masks, GQA, odd lengths)", () => {
    for (const seed of [1, 2, 3]) {
      const mask = randomMask(new Rng(seed));
      const spec = compileSpec(
        `layout L { video 3 x 3 x 3  text 4 before  heads 12  kv_heads 6  head_dim 8  batch 2 }
         kernel k { layout L  mask ${mask}  block 16 x 16 }`,
        "sp.tile",
      ).spec;
      if (!spec) throw new Error(`random mask ${mask} does not compile`);
      attentionThroughRanks(spec.kernels.get("k")!);
    }
  });

  function attentionThroughRanks(kernel: KernelSpec): void {
    const allowed = elementMask(kernel.layout, kernel.mask);
    const { batch, heads, kvHeads, headDim: d } = kernel.layout;
    const total = 31; // 27 video + 4 text tokens
    const q = randomArray(batch * total * heads * d, 11);
    const k = randomArray(batch * total * kvHeads * d, 12);
    const v = randomArray(batch * total * kvHeads * d, 13);
    const shape = { batch, seqLen: total, heads, kvHeads, headDim: d };
    const single = referenceAttention(q, k, v, shape, allowed).out;
    for (const n of [1, 2, 3, 6]) {
      const hp = partitionHeads(heads, kvHeads, n);
      const out = simulate(
        n,
        batch,
        total,
        d,
        [
          { full: q, heads },
          { full: k, heads: kvHeads },
          { full: v, heads: kvHeads },
        ],
        ([ql, kl, vl]) =>
          referenceAttention(
            ql!,
            kl!,
            vl!,
            { ...shape, heads: hp.localHeads, kvHeads: hp.localKvHeads },
            allowed,
          ).out,
        heads,
      );
      const seq = partitionSequence(total, n);
      out.forEach((local, r) => expect(local).toEqual(sliceSequence(single, batch, seq, heads * d, r)));
    }
  }

  it("the host exchange refuses plans whose sends and receives disagree", () => {
    const a = { sends: [{ peer: 1, offset: 0, count: 4 }], recvs: [] };
    const b = { sends: [], recvs: [{ peer: 0, offset: 0, count: 3 }] };
    const bufs = [new Float64Array(4), new Float64Array(4)];
    expect(() => runExchangeHost([a, b], bufs, bufs)).toThrow(/4 elements sent, 3 expected/);
    expect(() => runExchangeHost([a, { sends: [], recvs: [] }], bufs, bufs)).toThrow(/receives 0/);
  });
});
