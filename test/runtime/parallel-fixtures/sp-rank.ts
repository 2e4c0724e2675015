// One rank of a sequence-parallel attention check (parallel-gpu.test.ts launches it on 1, 2 or 4
// GPUs): every rank draws the same random q, k, v, keeps its slice of the sequence, runs Ulysses
// attention and all-gathers the output; rank 0 compares it with the single-GPU kernel on the
// whole tensors (bit for bit) and with the float64 reference on sampled rows.
//   argv: <spec file> <kernel> <seed>
import { readFileSync } from "node:fs";
import { elementMask } from "../../../compiler/elementMask.ts";
import { seqLen } from "../../../compiler/layout.ts";
import { compile } from "../../../runtime/attention.ts";
import { f32ToHalfBits, halfBitsToF32 } from "../../../runtime/cuda/dtype.ts";
import { sliceSequence } from "../../../runtime/parallel/partition.ts";
import {
  allGatherSequence,
  selectKernel,
  specOf,
  UlyssesAttention,
} from "../../../runtime/parallel/ulysses.ts";
import { initWorld, runRank } from "../../../runtime/parallel/world.ts";
import { compareRows, randomArray, referenceAttention } from "../../../runtime/reference.ts";
import { sampleRows } from "../../support/attentionCheck.ts";

const [file, name, seedText] = process.argv.slice(2);

runRank(async () => {
  const world = await initWorld();
  const kernel = selectKernel(readFileSync(file!, "utf8"), name, file);
  const { batch, heads, kvHeads, headDim: d, dtype } = kernel.layout;
  const n = seqLen(kernel.layout);
  const seed = Number(seedText ?? 1);
  const round = (x: Float64Array) => {
    const f = Float32Array.from(x);
    return dtype === "fp32" ? f : halfBitsToF32(f32ToHalfBits(f, dtype), dtype);
  };
  const qh = round(randomArray(batch * n * heads * d, seed));
  const kh = round(randomArray(batch * n * kvHeads * d, seed + 1));
  const vh = round(randomArray(batch * n * kvHeads * d, seed + 2));

  const attn = await UlyssesAttention.compile(kernel, { comm: world.comm });
  const dev = world.cuda;
  const slice = (x: Float32Array, h: number) => sliceSequence(x, batch, attn.seq, h * d, world.rank);
  const q = dev.fromHost(slice(qh, heads), dtype);
  const k = dev.fromHost(slice(kh, kvHeads), dtype);
  const v = dev.fromHost(slice(vh, kvHeads), dtype);
  const out = dev.allocElements(dtype, attn.qLength).poison();
  const gathered = dev.allocElements(dtype, batch * n * heads * d).poison();
  attn.run(q, k, v, out);
  allGatherSequence(world.comm, attn.seq, batch, heads * d, out, gathered);
  dev.synchronize();
  world.comm.check();
  const tokens = attn.tokens;
  if (world.rank !== 0) return { rank: world.rank, tokens };

  // The single-GPU path on the whole tensors.
  const single = await compile(specOf(kernel), { target: "cuda" });
  const qf = dev.fromHost(qh, dtype);
  const kf = dev.fromHost(kh, dtype);
  const vf = dev.fromHost(vh, dtype);
  const outSingle = dev.allocElements(dtype, batch * n * heads * d).poison();
  single.run(qf, kf, vf, outSingle);
  dev.synchronize();
  const a = gathered.downloadBytes();
  const b = outSingle.downloadBytes();
  let mismatchedBytes = 0;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) mismatchedBytes++;

  const rows = sampleRows(n, kernel.blockQ, 48, seed);
  const shape = { batch, seqLen: n, heads, kvHeads, headDim: d };
  const ref = referenceAttention(
    qh,
    kh,
    vh,
    shape,
    elementMask(kernel.layout, kernel.mask),
    attn.local.ir.scale,
    rows,
  );
  // The sequence-parallel path writes no LSE: the reference's own is passed, so only outputs count.
  const cmp = compareRows(gathered.download() as Float32Array, ref.lse, ref, shape, rows);
  return {
    rank: 0,
    tokens,
    mismatchedBytes,
    bytes: a.length,
    relError: cmp.relError,
    unwritten: cmp.unwritten,
    maskedRowsOk: cmp.maskedRowsOk,
  };
});
