// How a tuning run reads: per kernel, a table of the timed candidates (config, time, TFLOP/s, vs
// best), the winner against the default, and what was pruned and why; or the run as JSON.
import { table } from "../cli/load.ts";
import type { TuneReport } from "./run.ts";
import type { CandidateResult, KernelTuneResult } from "./tuner.ts";

function fmtMs(ms: number | undefined): string {
  if (ms === undefined || !Number.isFinite(ms)) return "—";
  return ms >= 10 ? ms.toFixed(2) : ms >= 0.1 ? ms.toFixed(3) : ms.toPrecision(3);
}

function tflops(flops: number, ms: number): string {
  const t = flops / (ms * 1e-3) / 1e12;
  return t >= 10 ? t.toFixed(1) : t.toPrecision(3);
}

function status(r: CandidateResult, k: KernelTuneResult): string {
  const tags = [
    ...(r === k.winner ? ["winner"] : []),
    ...(r.isDefault ? ["default"] : []),
    ...(r.status === "failed" ? [`FAILED ${r.reason}`] : []),
  ];
  return tags.join(", ") || "ok";
}

export function kernelTable(k: KernelTuneResult): string {
  const timed = k.candidates
    .filter((c) => c.status === "ok" || c.status === "failed")
    .sort((a, b) => a.ms - b.ms || a.key.localeCompare(b.key));
  const best = k.winner?.ms;
  const rows = timed.map((c) => [
    c.key,
    fmtMs(c.estimateMs),
    fmtMs(c.ms),
    Number.isFinite(c.ms) ? tflops(k.flops, c.ms) : "—",
    best && Number.isFinite(c.ms) ? `${(c.ms / best).toFixed(3)}×` : "—",
    status(c, k),
  ]);
  const lines = [table(rows, ["config", "model ms", "ms", "TFLOP/s", "vs best", "status"]), ...summary(k)];
  return lines.join("\n");
}

function summary(k: KernelTuneResult): string[] {
  const out: string[] = [];
  const pruned = k.candidates.filter((c) => c.status === "pruned");
  const notTimed = k.candidates.filter((c) => c.status === "not timed").length;
  if (pruned.length) {
    const reasons = new Map<string, number>();
    for (const c of pruned) {
      // Group by the kind of limit, not the numbers.
      const kind = (c.reason ?? "").split(";")[0]!.replace(/\d+/g, "N").slice(0, 90);
      reasons.set(kind, (reasons.get(kind) ?? 0) + 1);
    }
    out.push(`pruned ${pruned.length} of ${k.considered} before compiling:`);
    for (const [r, n] of [...reasons].sort((a, b) => b[1] - a[1])) out.push(`  ${n} × ${r}`);
  }
  if (notTimed) out.push(`not timed: ${notTimed} (below the cost model's top N)`);
  if (!k.winner) out.push("no candidate passed: nothing stored (compile() keeps its default)");
  else if (k.confirm && k.winner !== k.default)
    out.push(
      `winner ${k.winner.key}: ${fmtMs(k.confirm.winnerMs)} ms vs default ${fmtMs(k.confirm.defaultMs)} ms ` +
        `(${k.confirm.rounds} interleaved rounds) → ${(k.gain ?? 1).toFixed(3)}× faster`,
    );
  else if (k.winner === k.default) out.push(`winner: the default (${k.winner.key})`);
  return out;
}

export function renderReport(r: TuneReport): string {
  const head = [
    `tuned ${r.specFile} for ${r.target} on ${r.identity.device} (driver ${r.identity.driver}, ${r.identity.compiler})`,
    "TFLOP/s count the spec's plan at its declared block size for every candidate: block sizes change",
    "the kernel's own plan, so candidates compare by time.",
    ...r.notes,
  ];
  const parts = r.kernels.map((k) => `\n${k.kernel} (hash ${k.specHash.slice(0, 12)})\n${kernelTable(k)}`);
  const tail = r.cachePath ? [`\nwinners stored in ${r.cachePath}`] : [];
  return [...head, ...parts, ...tail].join("\n") + "\n";
}

/** The report as JSON (Infinity, i.e. failed or untimed, becomes null). */
export function reportJson(r: TuneReport): string {
  return JSON.stringify(r, (_k, v) => (typeof v === "number" && !Number.isFinite(v) ? null : v), 2) + "\n";
}
