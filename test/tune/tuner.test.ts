// The tuning loop on a fake target: failures of every kind score Infinity without stopping the run,
// the winner is the fastest candidate that passed the gate, the confirmation keeps the default when
// the winner does not beat it again, and the cache entry records the run.
import { describe, expect, it } from "vitest";
import { compileSpec, planKernel } from "../../compiler/pipeline.ts";
import { candidate, selectForTiming, type Candidate } from "../../tune/candidates.ts";
import type { CudaChoice } from "../../tune/choice.ts";
import type { GateVerdict } from "../../tune/gate.ts";
import { entryOf, median, tuneKernel, type TuneSession } from "../../tune/tuner.ts";

const spec = compileSpec(
  "layout L { video 2 x 4 x 8 heads 2 head_dim 32 dtype bf16 }\nkernel k { layout L mask full block 64 x 64 }",
  "t.tile",
).spec!;
const kernel = spec.kernels.get("k")!;
const identity = { target: "cuda" as const, device: "Fake GPU", driver: "1", compiler: "nvrtc 0.0" };

function cand(warps: number, estimate: number, isDefault = false, path = "sm80"): Candidate<CudaChoice> {
  const choice: CudaChoice = {
    target: "cuda",
    arch: "sm_90",
    template: path,
    blockQ: 64,
    config: { warps, stages: 2, kvTile: 64 },
  };
  return candidate(choice, [], isDefault, estimate, path);
}

const pass: GateVerdict = {
  ok: true,
  relError: 1e-3,
  lseError: 0,
  unwritten: 0,
  nonFinite: 0,
  maskedRowsOk: true,
  maskedRows: 0,
  rows: 8,
};

/** Times per warp count; warps 3 fails to compile, 5 fails the gate, 6 throws at launch. */
function fakeSession(ms: Record<number, number[]>): TuneSession<number> & { timedCalls: number[] } {
  const timedCalls: number[] = [];
  return {
    timedCalls,
    async compile(c) {
      const w = (c.choice as CudaChoice).config.warps;
      if (w === 3) throw new Error("nvrtc: error: identifier 'x' is undefined\nmore log");
      return w;
    },
    async check(w) {
      if (w === 6) throw new Error("CUDA_ERROR_ILLEGAL_ADDRESS");
      return w === 5
        ? { ...pass, ok: false, relError: 0.5, reason: "relative error 5.00e-1 above 0.01" }
        : pass;
    },
    async time(w, reps) {
      timedCalls.push(w);
      const t = ms[w] ?? [1];
      return Array.from({ length: reps }, (_, i) => t[(i + timedCalls.length) % t.length]!);
    },
    release() {},
    dispose() {},
  };
}

const opts = { reps: 3, warmup: 1, confirmRounds: 2, concurrency: 2 };

describe("tuneKernel", () => {
  it("scores compile, gate and launch failures as Infinity and keeps going", async () => {
    const cands = [cand(4, 5, true), cand(3, 1), cand(5, 2), cand(6, 3), cand(8, 4)];
    const r = await tuneKernel(kernel, "t.tile", 1e9, identity, cands, fakeSession({ 4: [2], 8: [1] }), opts);
    const by = new Map(r.candidates.map((c) => [(c.choice as CudaChoice).config.warps, c]));
    expect(by.get(3)).toMatchObject({ status: "failed", ms: Infinity });
    expect(by.get(3)!.reason).toMatch(/^compile: nvrtc: error: identifier/);
    expect(by.get(5)).toMatchObject({ status: "failed", ms: Infinity, relError: 0.5 });
    expect(by.get(5)!.reason).toMatch(/reference check: relative error/);
    expect(by.get(6)!.reason).toBe("launch: CUDA_ERROR_ILLEGAL_ADDRESS");
    expect(r.winner?.key).toBe(by.get(8)!.key);
    expect(r.confirm).toMatchObject({ winnerMs: 1, defaultMs: 2, rounds: 2 });
    expect(r.gain).toBeCloseTo(2, 12);
    const e = entryOf(r, new Date("2026-01-02T00:00:00Z"))!;
    expect(e).toMatchObject({ specHash: kernel.hash, ms: 1, defaultMs: 2, device: "Fake GPU", timed: 5 });
    expect(e.choice).toEqual(by.get(8)!.choice);
  });

  it("keeps the default when the winner does not beat it in the interleaved confirmation", async () => {
    // warps 8 looks faster in its own timing (first sample 1) but is slower when re-timed.
    const session = fakeSession({ 4: [2], 8: [9, 1, 1, 9, 9, 9] });
    const r = await tuneKernel(
      kernel,
      "t.tile",
      1e9,
      identity,
      [cand(4, 2, true), cand(8, 1)],
      session,
      opts,
    );
    const first = r.candidates.find((c) => !c.isDefault)!;
    expect(first.ms).toBeLessThan(2); // it won the first timing...
    expect(r.confirm!.winnerMs).toBeGreaterThan(r.confirm!.defaultMs); // ...but not the confirmation
    expect(r.winner?.isDefault).toBe(true);
    expect(r.gain).toBe(1);
  });

  it("has no winner (and no cache entry) when every candidate fails", async () => {
    const r = await tuneKernel(
      kernel,
      "t.tile",
      1e9,
      identity,
      [cand(3, 1), cand(5, 2)],
      fakeSession({}),
      opts,
    );
    expect(r.winner).toBeUndefined();
    expect(entryOf(r)).toBeUndefined();
  });

  it("times only the top N by the model plus the default, spread over code paths", () => {
    const cands = [
      cand(4, 9, true),
      cand(8, 1, false, "sm90"),
      cand(12, 2, false, "sm90"),
      cand(16, 3, false, "sm90"),
      cand(2, 4),
      candidate({ ...cand(1, 0).choice }, ["needs too much shared memory"], false, 0, "sm80"),
    ];
    const chosen = selectForTiming(cands, 2).map((c) => (c.choice as CudaChoice).config.warps);
    // one per path (sm90's best, then sm80's best), then the default
    expect(chosen).toEqual([8, 2, 4]);
    expect(selectForTiming(cands).length).toBe(5); // no --top: every unpruned one
  });

  it("median", () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 2, 3])).toBe(2.5);
    expect(median([])).toBe(Infinity);
    expect(planKernel(kernel).plan.numQBlocks).toBe(1);
  });
});
