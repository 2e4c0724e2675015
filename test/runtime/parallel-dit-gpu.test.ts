// Sequence parallelism of the whole CUDA DiT (runtime/parallel/ditSliced.ts): each rank runs CudaDit
// on its token slice. World size 1 through NCCL must equal the non-sliced DiT bit for bit (forward
// and sampling); 2, 3 and 4 ranks simulated on one GPU (exchanges as device copies, no NCCL; ranks
// interleaved at each self-attention through CudaDit.forwardSteps) must equal the one-GPU forward
// within bf16 tolerance. Real multi-GPU runs: parallel-gpu.test.ts (dit-rank.ts). Skips with the
// reason without a GPU, cuBLAS or NCCL.
import { tinyDit } from "./dit-fixture.ts";
import { afterAll, describe, expect, it } from "vitest";
import { compileSpec } from "../../compiler/pipeline.ts";
import { cublasAvailable } from "../../runtime/cuda/cublas.ts";
import { available as cudaAvailable, CudaDevice, type DeviceBuffer } from "../../runtime/cuda/index.ts";
import { CudaDit } from "../../runtime/dit/cuda.ts";
import { available as ncclAvailable } from "../../runtime/parallel/nccl.ts";
import { DitSequenceParallel } from "../../runtime/parallel/dit.ts";
import { SlicedDit } from "../../runtime/parallel/ditSliced.ts";
import { partitionSequence } from "../../runtime/parallel/partition.ts";
import { SwapAxesKernel } from "../../runtime/parallel/swapAxes.ts";
import { allGatherSequence } from "../../runtime/parallel/ulysses.ts";
import { initWorld, type World } from "../../runtime/parallel/world.ts";
import { randomArray, relativeError } from "../../runtime/reference.ts";
import { ancestralSample, consistencySample, ditVelocityModel } from "../../runtime/sampler/index.ts";
import { SimulatedRanks } from "./parallel-fixtures/simulatedRanks.ts";

// 12 heads (split by 1, 2, 3, 4) of 48; 3×10×14 latent → 3×5×7 = 105 tokens: 53 + 52 on 2 ranks,
// 35·3 on 3, 27 + 26·3 on 4 (slices through frames and rows); batch 2, uneven text.
const CONFIG = tinyDit(12);
const LATENT = { frames: 3, height: 10, width: 14 };
const LATENT_DIMS = { T: LATENT.frames, H: LATENT.height, W: LATENT.width };
const TEXT = 9;
const SPEC = compileSpec(
  `layout sp { video 3 x 5 x 7 batch 2 heads 12 head_dim 48 dtype bf16 }
kernel full  { layout sp mask full              block 64 x 32 targets cuda }
kernel tile1 { layout sp mask attention_tile(1) block 64 x 32 targets cuda }
model sp_model { layers 2 steps 10 layer 0 .. 0 use full layer 1 .. 1 use tile1 step 0 .. 1 layer all use full }`,
  "sp.tile",
).spec!;
const OPTIONS = { spec: SPEC, model: "sp_model", latent: LATENT, textTokens: TEXT };
const LATENT_LEN = 2 * CONFIG.inChannels * LATENT.frames * LATENT.height * LATENT.width;
const latentHost = Float32Array.from(randomArray(LATENT_LEN, 31)).map((x) => x * 0.8);
const textHost = Float32Array.from(randomArray(2 * TEXT * CONFIG.captionChannels, 32));
const TIMESTEPS = [700, 80];
const VALID = [TEXT, 4];

const cuda = cudaAvailable();
const blas = cuda.ok ? cublasAvailable() : { ok: false, reason: cuda.reason };
const nccl = cuda.ok && blas.ok ? ncclAvailable() : { ok: false, reason: blas.reason };

const same = (a: Float32Array, b: Float32Array) => Buffer.from(a.buffer).equals(Buffer.from(b.buffer));

/** The non-sliced DiT's prediction (and the DiT, for sampling references). */
async function plainDit(): Promise<CudaDit> {
  const dit = await CudaDit.create(CONFIG, OPTIONS);
  dit.randomizeWeights(5);
  dit.encodeText(textHost, VALID);
  return dit;
}

describe.skipIf(!nccl.ok)(
  `the DiT on token slices, world size 1 through NCCL${nccl.ok ? "" : ` (skipped: ${nccl.reason})`}`,
  () => {
    let world: World | undefined;
    afterAll(() => world?.comm.destroy());

    it("forward and sampling equal the non-sliced DiT bit for bit", async () => {
      world ??= await initWorld();
      const dev = CudaDevice.open();
      const plain = await plainDit();
      const sp = await SlicedDit.create(CONFIG, OPTIONS, world.comm);
      const bufs: DeviceBuffer[] = [];
      const keep = <B extends DeviceBuffer>(b: B) => (bufs.push(b), b);
      try {
        sp.dit.randomizeWeights(5);
        sp.dit.encodeText(textHost, VALID);
        expect(sp.dit.slice).toEqual({ start: 0, count: 105 });
        const want = plain.forwardHost(latentHost, TIMESTEPS, { step: 5, steps: 10 });
        const whole = keep(dev.fromHost(latentHost, "fp32"));
        const rows = keep(dev.allocElements("fp32", sp.rowsLength(CONFIG.inChannels)).poison());
        const outRows = keep(dev.allocElements("fp32", sp.rowsLength(CONFIG.outChannels)).poison());
        const got = keep(dev.allocElements("fp32", sp.wholeLength(CONFIG.outChannels)).poison());
        sp.sliceLatent(whole, rows);
        sp.dit.forward(rows, TIMESTEPS, outRows, { step: 5, steps: 10 });
        sp.gatherLatent(outRows, got);
        dev.synchronize();
        expect(same(got.download() as Float32Array, want)).toBe(true);

        // Sampling: consistency (deterministic) and ancestral (noise drawn per latent index).
        for (const run of ["consistency", "ancestral"] as const) {
          const sample = (model: ReturnType<typeof ditVelocityModel>, ops: typeof sp.ops, x: DeviceBuffer) =>
            run === "consistency"
              ? consistencySample(model.model, ops, x, { teacherSteps: 10, segments: 3 })
              : ancestralSample(model.model, ops, x, { steps: 3, seed: 7 });
          const ref = ditVelocityModel(plain);
          const x = keep(dev.fromHost(latentHost, "fp32"));
          sample(ref, ref.ops, x);
          const m = ditVelocityModel(sp.dit);
          sp.sliceLatent(whole, rows);
          sample(m, sp.ops, rows);
          sp.gatherLatent(rows, got, CONFIG.inChannels);
          dev.synchronize();
          expect(same(got.download() as Float32Array, x.download() as Float32Array), run).toBe(true);
          ref.free();
          m.free();
        }
      } finally {
        for (const b of bufs) b.free();
        sp.free();
        plain.free();
      }
    }, 120_000);
  },
);

describe.skipIf(!cuda.ok || !blas.ok)(
  `the DiT on token slices, N ranks simulated on one GPU${cuda.ok && blas.ok ? "" : ` (skipped: ${blas.reason})`}`,
  () => {
    it.each([1, 2, 3, 4])(
      "%i rank(s): the gathered output equals the one-GPU forward within bf16 tolerance",
      async (n) => {
        const dev = CudaDevice.open();
        const plain = await plainDit();
        const want = plain.forwardHost(latentHost, TIMESTEPS, { step: 5, steps: 10 });
        plain.free();
        const swap = await SwapAxesKernel.compile();
        const sim = new SimulatedRanks(n, swap);
        const seq = partitionSequence(105, n);
        const dits: CudaDit[] = [];
        const sps: DitSequenceParallel[] = [];
        const bufs: DeviceBuffer[] = [];
        const keep = <B extends DeviceBuffer>(b: B) => (bufs.push(b), b);
        try {
          for (const comm of sim.ranks) {
            const dit = await CudaDit.create(CONFIG, {
              ...OPTIONS,
              tokens: { start: seq.starts[comm.rank]!, count: seq.counts[comm.rank]! },
            });
            dits.push(dit);
            dit.randomizeWeights(5);
            dit.encodeText(textHost, VALID);
            sps.push(await DitSequenceParallel.create(dit, comm, { tokens: "local" }));
          }
          const k = dits[0]!.elementKernels;
          const whole = keep(dev.fromHost(latentHost, "fp32"));
          const dims = (C: number, start: number, count: number) => ({
            B: 2,
            C,
            ...LATENT_DIMS,
            p: 2,
            start,
            count,
          });
          const ins = dits.map((d) =>
            keep(dev.allocElements("fp32", d.latentLength(CONFIG.inChannels)).poison()),
          );
          const outs = dits.map((d) =>
            keep(dev.allocElements("fp32", d.latentLength(CONFIG.outChannels)).poison()),
          );
          dits.forEach((d, r) =>
            k.latentRows(whole, ins[r]!, dims(CONFIG.inChannels, d.slice.start, d.slice.count)),
          );
          // Every rank's forward up to its next self-attention, then the Ulysses steps of all ranks
          // with the simulated exchanges between them.
          const gens = dits.map((d, r) =>
            d.forwardSteps(ins[r]!, TIMESTEPS, outs[r]!, { step: 5, steps: 10 }),
          );
          let steps = gens.map((g) => g.next());
          let attentions = 0;
          while (steps.some((s) => !s.done)) {
            expect(steps.every((s) => !s.done)).toBe(true);
            const calls = steps.map((s) => s.value as Exclude<typeof s.value, { attentionMs?: number }>);
            const us = calls.map((c, r) => sps[r]!.kernel(c.kernelName));
            us.forEach((u, r) => u.toHeads(calls[r]!.q, calls[r]!.k, calls[r]!.v));
            sim.flush();
            us.forEach((u) => u.attend());
            sim.flush();
            us.forEach((u, r) => u.toSequence(calls[r]!.out));
            attentions++;
            steps = gens.map((g) => g.next());
          }
          expect(attentions).toBe(CONFIG.numLayers);
          const width = CONFIG.outChannels * 4;
          const gathered = dits.map(() => keep(dev.allocElements("fp32", 2 * 105 * width).poison()));
          sim.ranks.forEach((comm, r) => allGatherSequence(comm, seq, 2, width, outs[r]!, gathered[r]!));
          sim.flush();
          const results = gathered.map((g) => {
            const out = keep(dev.allocElements("fp32", LATENT_LEN).poison());
            k.latentRows(out, g, dims(CONFIG.outChannels, 0, 105), true);
            return out;
          });
          dev.synchronize();
          const got = results.map((b) => b.download() as Float32Array);
          for (const g of got) expect(same(g, got[0]!)).toBe(true);
          expect(got[0]!.every(Number.isFinite)).toBe(true);
          const err = relativeError(got[0]!, want);
          if (n === 1) expect(same(got[0]!, want)).toBe(true);
          expect(err).toBeLessThan(1e-2);
        } finally {
          for (const b of bufs) b.free();
          for (const s of sps) s.free();
          for (const d of dits) d.free();
          swap.free();
        }
      },
      180_000,
    );
  },
);
