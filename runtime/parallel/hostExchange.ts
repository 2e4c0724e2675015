// The exchange plans of partition.ts executed on host arrays for N simulated ranks: what the GPU
// path does with the swap-axes kernel and NCCL, element for element. The tests check scatter ∘
// gather = identity and that attention through the simulated exchange equals the one-rank result.
import type { Exchange, SwapAxes } from "./partition.ts";

type HostArray = Float32Array | Float64Array;

/** out[j][i][:] = in[i][j][:] for in viewed as [outer, inner, unit]. */
export function swapAxesHost<T extends HostArray>(input: T, output: T, s: SwapAxes): T {
  const need = s.outer * s.inner * s.unit;
  if (input.length < need || output.length < need)
    throw new RangeError(`swap axes needs ${need} elements (${s.outer}×${s.inner}×${s.unit})`);
  for (let i = 0; i < s.outer; i++)
    for (let j = 0; j < s.inner; j++) {
      const from = (i * s.inner + j) * s.unit;
      output.set(input.subarray(from, from + s.unit), (j * s.outer + i) * s.unit);
    }
  return output;
}

/**
 * NCCL's pairing rule for one ordered pair of ranks: the k-th send a→b meets the k-th receive on b
 * from a. Throws where the two sides disagree (a count mismatch or an unmatched transfer would hang
 * or corrupt a real run). Shared by the host simulation below and the tests' simulated GPU ranks.
 */
export function pairTransfers<S extends { count: number }, R extends { count: number }>(
  a: number,
  b: number,
  sends: readonly S[],
  recvs: readonly R[],
): [S, R][] {
  if (sends.length !== recvs.length)
    throw new Error(
      `rank ${a} sends ${sends.length} transfer(s) to rank ${b}, which receives ${recvs.length}`,
    );
  return sends.map((s, k) => {
    const r = recvs[k]!;
    if (s.count !== r.count)
      throw new Error(
        `transfer ${k} from rank ${a} to rank ${b}: ${s.count} elements sent, ${r.count} expected`,
      );
    return [s, r];
  });
}

/** Runs every rank's transfers at once, paired as NCCL pairs them (pairTransfers). */
export function runExchangeHost<T extends HostArray>(
  plans: readonly Exchange[],
  sendBuffers: readonly T[],
  recvBuffers: readonly T[],
): void {
  const n = plans.length;
  for (let a = 0; a < n; a++)
    for (let b = 0; b < n; b++) {
      const sends = plans[a]!.sends.filter((t) => t.peer === b);
      const recvs = plans[b]!.recvs.filter((t) => t.peer === a);
      pairTransfers(a, b, sends, recvs).forEach(([s, r], k) => {
        const src = sendBuffers[a]!;
        const dst = recvBuffers[b]!;
        if (s.offset + s.count > src.length || r.offset + r.count > dst.length)
          throw new RangeError(`transfer ${k} from rank ${a} to rank ${b} overruns a buffer`);
        dst.set(src.subarray(s.offset, s.offset + s.count), r.offset);
      });
    }
}
