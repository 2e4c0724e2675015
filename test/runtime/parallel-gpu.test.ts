// Sequence parallelism on real GPUs through NCCL. World size 1 runs on one GPU (in this process and
// through the launcher); world sizes 2 and 4 run where that many GPUs exist. Each skips with the
// reason otherwise.
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { compile } from "../../runtime/attention.ts";
import { tryLoadAddon } from "../../runtime/cuda/addon.ts";
import { available as cudaAvailable, CudaDevice, DeviceBuffer } from "../../runtime/cuda/index.ts";
import { swapAxesHost } from "../../runtime/parallel/hostExchange.ts";
import { launch } from "../../runtime/parallel/launcher.ts";
import { available as ncclAvailable, type NcclComm } from "../../runtime/parallel/nccl.ts";
import { gatherSequence, partitionSequence, sliceSequence } from "../../runtime/parallel/partition.ts";
import { SwapAxesKernel } from "../../runtime/parallel/swapAxes.ts";
import { allGatherSequence, selectKernel, specOf, UlyssesAttention } from "../../runtime/parallel/ulysses.ts";
import { SimulatedRanks } from "./parallel-fixtures/simulatedRanks.ts";
import { initWorld, type World } from "../../runtime/parallel/world.ts";
import { randomArray } from "../../runtime/reference.ts";
import { cublasAvailable } from "../../runtime/cuda/cublas.ts";
import { CudaDit, runSelfAttention } from "../../runtime/dit/cuda.ts";
import { DitSequenceParallel } from "../../runtime/parallel/dit.ts";
import { TINY, TINY_LATENT, TINY_TEXT, tinyInputs, tinySpec } from "./dit-fixture.ts";

// 373 tokens (odd: 187 + 186 on 2 ranks, 94 + 93·3 on 4), GQA, batch 2, a partial-block mask.
const SPEC = `layout L { video 5 x 8 x 9  text 13 before  batch 2  heads 8  kv_heads 4  head_dim 64  dtype bf16 }
kernel k { layout L  mask attention_tile(2) or text_joint  block 64 x 64  targets cuda }
`;
const rankScript = fileURLToPath(new URL("./parallel-fixtures/sp-rank.ts", import.meta.url));
const ditScript = fileURLToPath(new URL("./parallel-fixtures/dit-rank.ts", import.meta.url));

const cuda = cudaAvailable();
const blas = cuda.ok ? cublasAvailable() : { ok: false, reason: cuda.reason };
const nccl = cuda.ok ? ncclAvailable() : { ok: false, reason: "no CUDA" };
const loaded = tryLoadAddon();
const gpus = cuda.ok && "addon" in loaded ? (loaded.addon.available().deviceCount ?? 0) : 0;
const skipReason = !cuda.ok
  ? `no CUDA device: ${cuda.reason}`
  : !nccl.ok
    ? `NCCL unavailable: ${nccl.reason}`
    : undefined;

function specFile(): string {
  const file = join(mkdtempSync(join(tmpdir(), "tilec-sp-")), "sp.tile");
  writeFileSync(file, SPEC);
  return file;
}

interface RankZero {
  mismatchedBytes: number;
  bytes: number;
  relError: number;
  unwritten: number;
  maskedRowsOk: boolean;
}

interface DitRank {
  rank: number;
  digest: string;
  mismatchedBytes?: number;
  relError?: number;
  finite?: boolean;
  /** The DiT on token slices (SlicedDit), output all-gathered. */
  slicedDigest: string;
  tokens: { start: number; count: number };
  slicedMismatchedBytes?: number;
  slicedRelError?: number;
  slicedFinite?: boolean;
}

/** The DiT forward on `size` ranks: every rank ends with the same output, rank 0's equals its plain forward. */
async function launchDit(size: number): Promise<DitRank[]> {
  return (await launch({ script: ditScript, size, timeoutMs: 300_000 })) as DitRank[];
}

async function launchCheck(size: number): Promise<RankZero> {
  const results = await launch({
    script: rankScript,
    args: [specFile(), "k", "7"],
    size,
    timeoutMs: 300_000,
  });
  return results[0] as RankZero;
}

describe.skipIf(skipReason !== undefined)(
  `sequence parallelism, world size 1 on one GPU${skipReason ? ` (skipped: ${skipReason})` : ""}`,
  () => {
    let world: World | undefined;
    const freeLater: DeviceBuffer[] = [];
    const comm = async (): Promise<NcclComm> => (world ??= await initWorld()).comm;
    afterAll(() => {
      for (const b of freeLater) b.free();
      world?.comm.destroy();
    });
    const upload = (x: Float32Array) => {
      const b = CudaDevice.open().fromHost(x, "fp32");
      freeLater.push(b);
      return b;
    };
    const alloc = (n: number, dtype: "fp32" | "bf16" = "fp32") => {
      const b = CudaDevice.open().allocElements(dtype, n).poison();
      freeLater.push(b);
      return b;
    };

    it("NCCL with one rank: all-gather, all-reduce, all-to-all and a gather plan copy exactly", async () => {
      const c = await comm();
      expect([c.rank, c.size, c.device]).toEqual([0, 1, 0]);
      const x = Float32Array.from(randomArray(1000, 3));
      const send = upload(x);
      for (const op of [
        (r: DeviceBuffer) => c.allGather(send, r),
        (r: DeviceBuffer) => c.allReduce(send, r, "sum"),
        (r: DeviceBuffer) => c.allToAll(send, r),
        (r: DeviceBuffer) => c.exchange(gatherSequence(2, partitionSequence(100, 1), 5, 0), send, r),
      ]) {
        const recv = alloc(1000);
        op(recv);
        CudaDevice.open().synchronize();
        expect(recv.download()).toEqual(x);
      }
      c.check();
    });

    it("NCCL errors name the call", async () => {
      const c = await comm();
      const a = alloc(8);
      expect(() => c.exchange({ sends: [{ peer: 1, offset: 0, count: 8 }], recvs: [] }, a, a)).toThrow(
        /ops\[0\]\.peer 1 outside 0\.\.0/,
      );
    });

    it("the swap-axes kernel equals the host swap (16-byte rows, odd bf16 rows)", async () => {
      await comm();
      const swap = await SwapAxesKernel.compile();
      try {
        for (const [s, dtype] of [
          [{ outer: 37, inner: 4, unit: 96 }, "fp32"],
          [{ outer: 5, inner: 3, unit: 7 }, "bf16"],
          [{ outer: 1, inner: 1, unit: 1 }, "bf16"],
        ] as const) {
          const n = s.outer * s.inner * s.unit;
          const x = Float32Array.from(randomArray(n, n)).map((v) => Math.round(v * 64) / 64); // exact in bf16
          const input = CudaDevice.open().fromHost(x, dtype);
          freeLater.push(input);
          const out = alloc(n, dtype);
          swap.run(input, out, s);
          CudaDevice.open().synchronize();
          expect(out.download()).toEqual(swapAxesHost(x, new Float32Array(n), s));
        }
      } finally {
        swap.free();
      }
    });

    it("Ulysses attention on one rank gives the single-GPU kernel's output bit for bit", async () => {
      const c = await comm();
      const kernel = selectKernel(SPEC, "k");
      const attn = await UlyssesAttention.compile(kernel, { comm: c });
      const single = await compile(specOf(kernel), { target: "cuda" });
      try {
        const dev = CudaDevice.open();
        const n = attn.qLength;
        const q = dev.fromHost(Float32Array.from(randomArray(n, 1)), "bf16");
        const k = dev.fromHost(Float32Array.from(randomArray(attn.kvLength, 2)), "bf16");
        const v = dev.fromHost(Float32Array.from(randomArray(attn.kvLength, 3)), "bf16");
        freeLater.push(q, k, v);
        const a = alloc(n, "bf16");
        const b = alloc(n, "bf16");
        attn.run(q, k, v, a);
        single.run(q, k, v, b);
        dev.synchronize();
        expect(Buffer.from(a.downloadBytes()).equals(Buffer.from(b.downloadBytes()))).toBe(true);
        expect((a.download() as Float32Array).some(Number.isNaN)).toBe(false);
      } finally {
        attn.free();
        single.free();
      }
    });

    it.skipIf(!blas.ok)(
      `the DiT forward through the sequence-parallel hook equals the plain forward bit for bit${blas.ok ? "" : ` (skipped: ${blas.reason})`}`,
      async () => {
        const c = await comm();
        const dit = await CudaDit.create(TINY, {
          spec: tinySpec(),
          model: "tiny_model",
          latent: TINY_LATENT,
          textTokens: TINY_TEXT,
        });
        try {
          dit.randomizeWeights(9);
          const inp = tinyInputs(4);
          dit.encodeText(Float32Array.from(inp.text), inp.textValid);
          const latent = Float32Array.from(inp.latent);
          const plain = dit.forwardHost(latent, inp.timesteps, { step: 5, steps: 10 });
          for (const tokens of ["all", "local"] as const) {
            const sp = await DitSequenceParallel.create(dit, c, { tokens });
            dit.attention = sp.attention;
            try {
              const got = dit.forwardHost(latent, inp.timesteps, { step: 5, steps: 10 });
              expect(Buffer.from(got.buffer).equals(Buffer.from(plain.buffer)), tokens).toBe(true);
            } finally {
              dit.attention = runSelfAttention;
              sp.free();
            }
          }
        } finally {
          dit.free();
        }
      },
      120_000,
    );

    it.skipIf(!blas.ok)(
      "the DiT through the launcher on one rank",
      async () => {
        const [r] = await launchDit(1);
        expect(r!.finite).toBe(true);
        expect(r!.mismatchedBytes).toBe(0);
        // On its one slice (all tokens) the sliced DiT is the plain forward, bit for bit.
        expect(r!.tokens).toEqual({ start: 0, count: 105 });
        expect(r!.slicedFinite).toBe(true);
        expect(r!.slicedMismatchedBytes).toBe(0);
      },
      300_000,
    );

    it("through the launcher (one process, NCCL id via IPC): equal to the single-GPU run and the reference", async () => {
      const r = await launchCheck(1);
      expect(r.unwritten).toBe(0);
      expect(r.mismatchedBytes).toBe(0);
      expect(r.relError).toBeLessThan(1e-2);
      expect(r.maskedRowsOk).toBe(true);
    }, 300_000);
  },
);

// Heads 6 and kv heads 3 split over 3 simulated ranks (125 + 124 + 124 tokens).
const SPEC_3 = SPEC.replace("heads 8  kv_heads 4", "heads 6  kv_heads 3");

describe.skipIf(!cuda.ok)(
  `sequence parallelism, N ranks simulated on one GPU (no NCCL)${cuda.ok ? "" : ` (skipped: no CUDA device: ${cuda.reason})`}`,
  () => {
    it.each([
      [2, SPEC],
      [4, SPEC],
      [3, SPEC_3],
    ])(
      "%i ranks: every rank's gathered output equals the single-GPU kernel bit for bit",
      async (n, text) => {
        const dev = CudaDevice.open();
        const kernel = selectKernel(text, "k");
        const { batch, heads, kvHeads, headDim: d } = kernel.layout;
        const swap = await SwapAxesKernel.compile();
        const sim = new SimulatedRanks(n, swap);
        const attns = await Promise.all(
          sim.ranks.map((comm) => UlyssesAttention.compile(kernel, { comm, swap })),
        );
        const single = await compile(specOf(kernel), { target: "cuda" });
        const bufs: DeviceBuffer[] = [];
        const keep = <B extends DeviceBuffer>(b: B) => (bufs.push(b), b);
        try {
          const seq = attns[0]!.seq;
          const host = [heads, kvHeads, kvHeads].map((h, i) =>
            Float32Array.from(randomArray(batch * seq.total * h * d, 40 + i)),
          );
          const full = host.map((x) => keep(dev.fromHost(x, "bf16")));
          const local = attns.map((_, r) =>
            host.map((x, i) =>
              keep(dev.fromHost(sliceSequence(x, batch, seq, [heads, kvHeads, kvHeads][i]! * d, r), "bf16")),
            ),
          );
          // The slice kernel cuts the same rows out of the whole tensor on the device.
          for (let r = 0; r < n; r++) {
            const cut = keep(dev.allocElements("bf16", attns[r]!.qLength).poison());
            swap.sliceRows(full[0]!, cut, {
              batch,
              total: seq.total,
              ...attns[r]!.tokens,
              rowElems: heads * d,
            });
            dev.synchronize();
            expect(Buffer.from(cut.downloadBytes()).equals(Buffer.from(local[r]![0]!.downloadBytes()))).toBe(
              true,
            );
          }
          const outs = attns.map((a) => keep(dev.allocElements("bf16", a.qLength).poison()));
          attns.forEach((a, r) => a.toHeads(local[r]![0]!, local[r]![1]!, local[r]![2]!));
          sim.flush();
          attns.forEach((a) => a.attend());
          sim.flush();
          attns.forEach((a, r) => a.toSequence(outs[r]!));
          const gathered = attns.map(() =>
            keep(dev.allocElements("bf16", batch * seq.total * heads * d).poison()),
          );
          attns.forEach((a, r) =>
            allGatherSequence(sim.ranks[r]!, seq, batch, heads * d, outs[r]!, gathered[r]!),
          );
          sim.flush();
          const want = keep(dev.allocElements("bf16", batch * seq.total * heads * d).poison());
          single.run(full[0]!, full[1]!, full[2]!, want);
          dev.synchronize();
          const wantBytes = Buffer.from(want.downloadBytes());
          expect((want.download() as Float32Array).some(Number.isNaN)).toBe(false);
          for (const g of gathered) expect(Buffer.from(g.downloadBytes()).equals(wantBytes)).toBe(true);
        } finally {
          for (const b of bufs) b.free();
          for (const a of attns) a.free();
          single.free();
          swap.free();
        }
      },
      120_000,
    );
  },
);

for (const size of [2, 4]) {
  const reason = skipReason ?? (gpus < size ? `needs ${size} GPUs, this machine has ${gpus}` : undefined);
  describe.skipIf(reason !== undefined)(
    `sequence parallelism, world size ${size}${reason ? ` (skipped: ${reason})` : ""}`,
    () => {
      it(`${size} ranks give the single-GPU output bit for bit (uneven slices, GQA, batch 2)`, async () => {
        const r = await launchCheck(size);
        expect(r.unwritten).toBe(0);
        expect(r.mismatchedBytes).toBe(0);
        expect(r.relError).toBeLessThan(1e-2);
      }, 300_000);

      it.skipIf(!blas.ok)(
        `the DiT forward on ${size} ranks equals the one-GPU forward`,
        async () => {
          const results = await launchDit(size);
          // Every rank continues with the same whole output.
          expect(new Set(results.map((r) => r.digest)).size).toBe(1);
          const r = results[0]!;
          expect(r.finite).toBe(true);
          // Bit for bit where cuBLAS is deterministic across the GPUs (same model); within bf16 always.
          expect(r.relError).toBeLessThan(1e-3);
          // Each rank on its own slice (105 tokens: uneven, through frames and rows), gathered.
          expect(results.map((x) => x.tokens.count).reduce((a, b) => a + b)).toBe(105);
          expect(new Set(results.map((x) => x.slicedDigest)).size).toBe(1);
          expect(r.slicedFinite).toBe(true);
          expect(r.slicedRelError).toBeLessThan(1e-2);
        },
        300_000,
      );
    },
  );
}
