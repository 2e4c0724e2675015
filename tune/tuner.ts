// One kernel's tuning run, independent of the target: compile the selected candidates (in
// parallel), gate each on the reference, time the survivors, confirm the winner against the
// default with interleaved timings, and report. A candidate that fails to compile, launch or pass
// the gate scores Infinity and the run goes on.
import type { KernelSpec } from "../compiler/check.ts";
import type { DeviceIdentity, TuneEntry } from "./cache.ts";
import { selectForTiming, type Candidate } from "./candidates.ts";
import type { TuneChoice } from "./choice.ts";
import type { GateVerdict } from "./gate.ts";

/** What a target provides for one kernel: build, check and time candidates on its device. */
export interface TuneSession<K> {
  compile(c: Candidate): Promise<K>;
  check(k: K): Promise<GateVerdict>;
  /** Milliseconds of `reps` timed runs after `warmup` untimed ones. */
  time(k: K, reps: number, warmup: number): Promise<number[]>;
  release(k: K): void;
  dispose(): void;
}

export type CandidateStatus = "ok" | "failed" | "pruned" | "not timed";

export interface CandidateResult {
  readonly key: string;
  readonly choice: TuneChoice;
  readonly codePath: string;
  readonly isDefault: boolean;
  readonly estimateMs?: number;
  readonly status: CandidateStatus;
  /** Pruning reasons, or what failed (compile, launch, gate). */
  readonly reason?: string;
  /** Median ms; Infinity when it failed or was not timed. */
  readonly ms: number;
  readonly minMs?: number;
  readonly maxMs?: number;
  readonly relError?: number;
}

export interface KernelTuneResult {
  readonly kernel: string;
  readonly specHash: string;
  readonly specFile: string;
  /** FLOPs of the spec's plan: what TFLOP/s columns divide (block sizes change the kernel's own plan). */
  readonly flops: number;
  readonly identity: DeviceIdentity;
  readonly candidates: readonly CandidateResult[];
  readonly winner?: CandidateResult;
  readonly default?: CandidateResult;
  /** Interleaved re-timing of the winner and the default (medians), when they differ. */
  readonly confirm?: { readonly winnerMs: number; readonly defaultMs: number; readonly rounds: number };
  /** default ms / winner ms (1 when the default won), from the confirmation where there was one. */
  readonly gain?: number;
  readonly considered: number;
  readonly timed: number;
}

export interface TuneOptions {
  /** Time only the best `top` by the cost model (plus the default). */
  readonly top?: number;
  readonly reps: number;
  readonly warmup: number;
  /** Interleaved rounds of winner vs default (0: no confirmation). */
  readonly confirmRounds: number;
  /** Candidates compiled at once. */
  readonly concurrency: number;
  /** Called once the candidates to time are known, then after each one finishes. */
  readonly onPlanned?: (count: number) => void;
  readonly onCandidate?: (r: CandidateResult) => void;
}

export function median(xs: readonly number[]): number {
  if (!xs.length) return Infinity;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function message(e: unknown): string {
  const text = e instanceof Error ? e.message : String(e);
  const lines = text.split("\n").filter((l) => l.trim());
  // Compiler logs are long: the first error line says what broke.
  const err = lines.find((l) => /error/i.test(l)) ?? lines[0] ?? "unknown error";
  return err.length > 300 ? `${err.slice(0, 300)}…` : err;
}

function base(c: Candidate) {
  return {
    key: c.key,
    choice: c.choice,
    codePath: c.codePath,
    isDefault: c.isDefault,
    estimateMs: c.estimateMs,
  };
}

export async function tuneKernel<K>(
  kernel: KernelSpec,
  specFile: string,
  flops: number,
  identity: DeviceIdentity,
  candidates: readonly Candidate[],
  session: TuneSession<K>,
  options: TuneOptions,
): Promise<KernelTuneResult> {
  const selected = selectForTiming(candidates, options.top);
  options.onPlanned?.(selected.length);
  // Compiles start in order, `concurrency` at a time, while earlier ones are checked and timed.
  const compiled = new Map<Candidate, Promise<K>>();
  let next = 0;
  const startMore = () => {
    while (next < selected.length && compiled.size - done < options.concurrency) {
      const c = selected[next++]!;
      const p = session.compile(c);
      p.catch(() => {}); // observed below; keeps an early rejection from being "unhandled"
      compiled.set(c, p);
    }
  };
  let done = 0;
  const results = new Map<Candidate, CandidateResult>();
  const live = new Map<Candidate, K>();
  for (const c of selected) {
    startMore();
    let r: CandidateResult;
    let k: K | undefined;
    try {
      k = await compiled.get(c)!;
    } catch (e) {
      r = { ...base(c), status: "failed", reason: `compile: ${message(e)}`, ms: Infinity };
    }
    if (k !== undefined) {
      try {
        const verdict = await session.check(k);
        if (!verdict.ok)
          r = {
            ...base(c),
            status: "failed",
            reason: `reference check: ${verdict.reason}`,
            ms: Infinity,
            relError: verdict.relError,
          };
        else {
          const times = await session.time(k, options.reps, options.warmup);
          r = {
            ...base(c),
            status: "ok",
            ms: median(times),
            minMs: Math.min(...times),
            maxMs: Math.max(...times),
            relError: verdict.relError,
          };
          live.set(c, k);
        }
      } catch (e) {
        r = { ...base(c), status: "failed", reason: `launch: ${message(e)}`, ms: Infinity };
      }
      if (!live.has(c)) session.release(k);
    }
    done++;
    results.set(c, r!);
    options.onCandidate?.(r!);
  }

  const all: CandidateResult[] = candidates.map(
    (c) =>
      results.get(c) ??
      (c.pruned.length
        ? { ...base(c), status: "pruned", reason: c.pruned.join("; "), ms: Infinity }
        : { ...base(c), status: "not timed", reason: "below the cost model's top N", ms: Infinity }),
  );
  const ok = all.filter((r) => r.status === "ok").sort((a, b) => a.ms - b.ms);
  let winner = ok[0];
  const def = all.find((r) => r.isDefault);
  let confirm: KernelTuneResult["confirm"];
  let gain: number | undefined;
  if (winner && def?.status === "ok") {
    gain = def.ms / winner.ms;
    const wk = live.get(selected.find((c) => c.key === winner!.key)!);
    const dk = live.get(selected.find((c) => c.key === def.key)!);
    if (winner !== def && wk !== undefined && dk !== undefined && options.confirmRounds > 0) {
      const w: number[] = [];
      const d: number[] = [];
      for (let i = 0; i < options.confirmRounds; i++) {
        d.push(...(await session.time(dk, options.reps, 1)));
        w.push(...(await session.time(wk, options.reps, 1)));
      }
      confirm = { winnerMs: median(w), defaultMs: median(d), rounds: options.confirmRounds };
      // The winner must beat the default in the confirmation too, or the default stays.
      if (confirm.defaultMs <= confirm.winnerMs) winner = def;
      gain = confirm.defaultMs / Math.min(confirm.winnerMs, confirm.defaultMs);
    }
  }
  for (const k of live.values()) session.release(k);
  return {
    kernel: kernel.name,
    specHash: kernel.hash,
    specFile,
    flops,
    identity,
    candidates: all,
    winner,
    default: def,
    confirm,
    gain,
    considered: candidates.length,
    timed: selected.length,
  };
}

/** The cache entry of a run, when it has a winner. */
export function entryOf(r: KernelTuneResult, now = new Date()): TuneEntry | undefined {
  if (!r.winner) return undefined;
  return {
    ...r.identity,
    specHash: r.specHash,
    kernel: r.kernel,
    specFile: r.specFile,
    choice: r.winner.choice,
    ms: r.confirm && r.winner !== r.default ? r.confirm.winnerMs : r.winner.ms,
    defaultMs: r.confirm
      ? r.confirm.defaultMs
      : r.default && Number.isFinite(r.default.ms)
        ? r.default.ms
        : null,
    timed: r.timed,
    considered: r.considered,
    tunedAt: now.toISOString(),
  };
}
