// N ranks of a sequence-parallel run simulated in one process on one GPU: each rank is a Group
// whose exchanges are recorded and, once every rank has posted its own, carried out with device
// copies, pairing the k-th send a→b with the k-th receive on b from a as NCCL does. Lets the GPU
// path (pack kernels, per-rank kernels over heads/N heads, unpack) run for N > 1 without N GPUs;
// only NCCL's transport itself is left out.
import type { DeviceBuffer, Stream } from "../../../runtime/cuda/device.ts";
import { pairTransfers } from "../../../runtime/parallel/hostExchange.ts";
import type { Exchange } from "../../../runtime/parallel/partition.ts";
import type { SwapAxesKernel } from "../../../runtime/parallel/swapAxes.ts";
import type { Group } from "../../../runtime/parallel/ulysses.ts";

interface Posted {
  plan: Exchange;
  send: DeviceBuffer;
  recv: DeviceBuffer;
}

export class SimulatedRanks {
  readonly ranks: Group[];
  private readonly posted: Posted[][];

  constructor(
    readonly size: number,
    private readonly copier: SwapAxesKernel,
  ) {
    this.posted = Array.from({ length: size }, () => []);
    this.ranks = Array.from({ length: size }, (_, rank) => ({
      rank,
      size,
      exchangeAll: (items: readonly Posted[]) => void this.posted[rank]!.push(...items),
    }));
  }

  /** Carries out every rank's posted exchanges (in posting order) on `stream`. */
  flush(stream: Stream | null = null): void {
    for (let a = 0; a < this.size; a++)
      for (let b = 0; b < this.size; b++) {
        const sends = this.posted[a]!.flatMap((p) =>
          p.plan.sends.filter((t) => t.peer === b).map((t) => ({ ...t, buf: p.send })),
        );
        const recvs = this.posted[b]!.flatMap((p) =>
          p.plan.recvs.filter((t) => t.peer === a).map((t) => ({ ...t, buf: p.recv })),
        );
        for (const [s, r] of pairTransfers(a, b, sends, recvs))
          this.copier.copyElements(s.buf, s.offset, r.buf, r.offset, s.count, stream);
      }
    for (const p of this.posted) p.length = 0;
  }
}
