// The addon's NCCL binding (runtime/cuda/native/nccl.cc and runtime/parallel/nccl.ts) against a
// fake NCCL of one rank (runtime/cuda/native/testing/fake_nccl.c) over the fake CUDA driver, so
// loading, communicator set-up, argument checks, grouped transfers and error naming are tested
// without a GPU. Needs a C compiler ($CC or cc).
import { spawnSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { tryLoadAddon } from "../../runtime/cuda/addon.ts";
import { CudaDevice } from "../../runtime/cuda/device.ts";
import { available, NcclComm, uniqueId, versionString } from "../../runtime/parallel/nccl.ts";
import { gatherSequence, partitionSequence } from "../../runtime/parallel/partition.ts";
import { initWorld } from "../../runtime/parallel/world.ts";

const native = fileURLToPath(new URL("../../runtime/cuda/native/testing/", import.meta.url));

function build(name: string, dir: string): string | { error: string } {
  const cc = process.env.CC || "cc";
  const lib = join(dir, `lib${name}.so`);
  const r = spawnSync(cc, ["-shared", "-fPIC", "-O1", "-o", lib, join(native, `${name}.c`)], {
    encoding: "utf8",
  });
  return r.error || r.status !== 0
    ? { error: `cannot compile ${name}.c with ${cc}: ${r.error?.message ?? r.stderr}` }
    : lib;
}

function setUp(): string | undefined {
  const loaded = tryLoadAddon();
  if ("error" in loaded) return loaded.error;
  if (!("ncclLoad" in loaded.addon)) return "the addon was built without NCCL support";
  const dir = mkdtempSync(join(tmpdir(), "tilec-fake-nccl-"));
  const cuda = build("fake_cuda", dir);
  const nccl = build("fake_nccl", dir);
  if (typeof cuda !== "string") return cuda.error;
  if (typeof nccl !== "string") return nccl.error;
  // Read on the first driver load; this file runs in its own process.
  process.env.TILEC_LIBCUDA_PATH = cuda;
  process.env.TILEC_NVRTC_PATH = cuda;
  process.env.NCCL_LIBRARY = nccl;
  if (loaded.addon.available().driverVersion !== 99990)
    return "the real driver was already loaded in this process";
  return undefined;
}

const skipReason = setUp();

describe.skipIf(skipReason !== undefined)(
  `NCCL binding on a fake NCCL${skipReason ? ` (skipped: ${skipReason})` : ""}`,
  () => {
    it("loads $NCCL_LIBRARY and reports its version", () => {
      const a = available();
      expect(a.ok).toBe(true);
      expect(a.path).toBe(process.env.NCCL_LIBRARY);
      expect(a.version).toBe("2.99.99");
      expect(versionString(2708)).toBe("2.7.8"); // before 2.9 the code was X*1000+Y*100+Z
      expect(versionString(22703)).toBe("2.27.3");
    });

    it("joins a world of one through initWorld and moves data with every collective", async () => {
      const world = await initWorld();
      expect([world.rank, world.size, world.comm.device]).toEqual([0, 1, 0]);
      const dev = world.cuda;
      const x = Float32Array.from({ length: 60 }, (_, i) => i * 0.5 - 7);
      const send = dev.fromHost(x, "fp32");
      const recvs = [0, 1, 2, 3, 4].map(() => dev.allocElements("fp32", 60).poison());
      world.comm.allGather(send, recvs[0]!);
      world.comm.allReduce(send, recvs[1]!, "max");
      world.comm.allToAll(send, recvs[2]!);
      world.comm.exchange(gatherSequence(3, partitionSequence(4, 1), 5, 0), send, recvs[3]!);
      // Two exchanges in one group (q and k of a layer).
      const half = {
        sends: [{ peer: 0, offset: 0, count: 30 }],
        recvs: [{ peer: 0, offset: 30, count: 30 }],
      };
      const other = {
        sends: [{ peer: 0, offset: 30, count: 30 }],
        recvs: [{ peer: 0, offset: 0, count: 30 }],
      };
      world.comm.exchangeAll([
        { plan: half, send, recv: recvs[4]! },
        { plan: other, send, recv: recvs[4]! },
      ]);
      for (const r of recvs.slice(0, 4)) expect(r.download()).toEqual(x);
      expect(recvs[4]!.download()).toEqual(Float32Array.from([...x.subarray(30), ...x.subarray(0, 30)]));
      world.comm.check();
      world.comm.destroy();
      world.comm.destroy(); // idempotent
      expect(() => world.comm.check()).toThrow(/communicator \(rank 0 of 1\) was destroyed/);
      for (const b of [send, ...recvs]) b.free();
    });

    it("names the failing call with NCCL's error string and last error", async () => {
      CudaDevice.open();
      await expect(NcclComm.init(2, uniqueId(), 0)).rejects.toMatchObject({
        code: "ncclInvalidArgument",
        message: expect.stringMatching(
          /^ncclInvalidArgument in ncclCommInitRank\(nranks 2, rank 0\): invalid argument .*\(fake NCCL: this fake has one rank\)/,
        ),
      });
      await expect(NcclComm.init(1, new Uint8Array(12), 0)).rejects.toThrow(/unique id is 128 bytes, got 12/);
      const comm = await NcclComm.init(1, uniqueId(), 0);
      const a = CudaDevice.open().allocElements("fp32", 8);
      const b = CudaDevice.open().allocElements("bf16", 8);
      try {
        // Sizes that differ between the two sides fail in ncclGroupEnd (a real NCCL would hang).
        expect(() =>
          comm.exchange(
            { sends: [{ peer: 0, offset: 0, count: 8 }], recvs: [{ peer: 0, offset: 0, count: 4 }] },
            a,
            a,
          ),
        ).toThrow(/^ncclInvalidUsage in ncclGroupEnd \(2 sends\/receives\).*send and recv sizes differ/);
        // Checked before NCCL sees them.
        expect(() => comm.exchange({ sends: [{ peer: 1, offset: 0, count: 8 }], recvs: [] }, a, a)).toThrow(
          /ops\[0\]\.peer 1 outside 0\.\.0/,
        );
        expect(() => comm.exchange({ sends: [{ peer: 0, offset: 4, count: 8 }], recvs: [] }, a, a)).toThrow(
          /transfer of 8 elements at 4 overruns a buffer of 8/,
        );
        expect(() => comm.allGather(a, b)).toThrow(/send is fp32 but recv is bf16/);
        expect(() => comm.allToAll(a, CudaDevice.open().allocElements("fp32", 4))).toThrow(
          /equal send and recv/,
        );
      } finally {
        comm.abort();
        a.free();
        b.free();
      }
    });
  },
);
