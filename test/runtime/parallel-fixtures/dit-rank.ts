// One rank of a sequence-parallel DiT check (parallel-gpu.test.ts launches it on 1, 2 or 4 GPUs): a
// 2-layer DiT with 4 heads (divisible by every world size tested) over 105 tokens, the same random
// weights and inputs on every rank. Rank 0 also runs the plain forward and compares. Two ways: the
// whole DiT on every rank with attention split ("all"), and each rank's DiT on its token slice
// (SlicedDit), the output all-gathered.
import { tinyDit } from "../dit-fixture.ts";
import { createHash } from "node:crypto";
import { compileSpec } from "../../../compiler/pipeline.ts";
import { CudaDit } from "../../../runtime/dit/cuda.ts";
import { DitSequenceParallel } from "../../../runtime/parallel/dit.ts";
import { SlicedDit } from "../../../runtime/parallel/ditSliced.ts";
import { initWorld, runRank } from "../../../runtime/parallel/world.ts";
import { randomArray, relativeError } from "../../../runtime/reference.ts";

const SP_DIT = tinyDit(4);
const SP_DIT_LATENT = { frames: 3, height: 10, width: 14 };
const SP_DIT_SPEC = `
layout sp { video 3 x 5 x 7 batch 2 heads 4 head_dim 48 dtype bf16 }
kernel full  { layout sp mask full              block 64 x 32 targets cuda }
kernel tile1 { layout sp mask attention_tile(1) block 64 x 32 targets cuda }
model sp_model { layers 2 steps 10 layer 0 .. 0 use full layer 1 .. 1 use tile1 }
`;
const TEXT = 9;

runRank(async () => {
  const world = await initWorld();
  const spec = compileSpec(SP_DIT_SPEC, "sp.tile").spec!;
  const dit = await CudaDit.create(SP_DIT, {
    spec,
    model: "sp_model",
    latent: SP_DIT_LATENT,
    textTokens: TEXT,
  });
  dit.randomizeWeights(5);
  const { frames, height, width } = SP_DIT_LATENT;
  const latent = Float32Array.from(randomArray(2 * SP_DIT.inChannels * frames * height * width, 31));
  dit.encodeText(Float32Array.from(randomArray(2 * TEXT * SP_DIT.captionChannels, 32)), [TEXT, 4]);
  const plain = world.rank === 0 ? dit.forwardHost(latent, [700, 80], { step: 5, steps: 10 }) : undefined;
  const sp = await DitSequenceParallel.create(dit, world.comm, { tokens: "all" });
  dit.attention = sp.attention;
  const got = dit.forwardHost(latent, [700, 80], { step: 5, steps: 10 });
  const digest = createHash("sha256").update(new Uint8Array(got.buffer)).digest("hex");
  sp.free();
  dit.free();

  const sliced = await SlicedDit.create(
    SP_DIT,
    { spec, model: "sp_model", latent: SP_DIT_LATENT, textTokens: TEXT },
    world.comm,
  );
  sliced.dit.randomizeWeights(5);
  sliced.dit.encodeText(Float32Array.from(randomArray(2 * TEXT * SP_DIT.captionChannels, 32)), [TEXT, 4]);
  const whole = world.cuda.fromHost(latent, "fp32");
  const rows = world.cuda.allocElements("fp32", sliced.rowsLength(SP_DIT.inChannels)).poison();
  const outRows = world.cuda.allocElements("fp32", sliced.rowsLength(SP_DIT.outChannels)).poison();
  const gathered = world.cuda.allocElements("fp32", sliced.wholeLength(SP_DIT.outChannels)).poison();
  sliced.sliceLatent(whole, rows);
  sliced.dit.forward(rows, [700, 80], outRows, { step: 5, steps: 10 });
  sliced.gatherLatent(outRows, gathered);
  world.cuda.synchronize();
  world.comm.check();
  const slicedOut = gathered.download() as Float32Array;
  const slicedDigest = createHash("sha256").update(new Uint8Array(slicedOut.buffer)).digest("hex");
  for (const b of [whole, rows, outRows, gathered]) b.free();
  const tokens = sliced.dit.slice;
  sliced.free();
  if (!plain) return { rank: world.rank, digest, slicedDigest, tokens };
  const a = new Uint8Array(got.buffer);
  const b = new Uint8Array(plain.buffer);
  const mismatchedBytes = mismatched(a, b);
  return {
    rank: 0,
    digest,
    mismatchedBytes,
    relError: relativeError(got, plain),
    finite: got.every(Number.isFinite),
    slicedDigest,
    tokens,
    slicedMismatchedBytes: mismatched(new Uint8Array(slicedOut.buffer), b),
    slicedRelError: relativeError(slicedOut, plain),
    slicedFinite: slicedOut.every(Number.isFinite),
  };
});

function mismatched(a: Uint8Array, b: Uint8Array): number {
  let n = 0;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) n++;
  return n;
}
