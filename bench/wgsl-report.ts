// Merges runs of bench/webgpu-bench.ts (f32/f16 storage, Dawn's default robustness or --unsafe) into
// bench/results/wgsl-h100.json, in the CUDA benchmark's row format ({device, date, rows: [{case,
// mask, impl, ms, density, tflops}]}, impl "tilec-wgsl", plus storage and robustness), and prints
// the Markdown table for bench/RESULTS.md against the f32 shader-FMA ceiling.
//   npx tsx bench/wgsl-report.ts OUT.json RUN.json... [--ceiling 43]
import { readFileSync, writeFileSync } from "node:fs";

interface BenchRow {
  case: string;
  mask: string;
  impl: string;
  device: { device: string; description: string };
  storage: string;
  unsafe: boolean;
  heads: number;
  ms: number;
  density: number;
  tflops: number;
  gate: { ok: boolean; relError: number };
}

const args = process.argv.slice(2);
const ceilingAt = args.indexOf("--ceiling");
const ceiling = ceilingAt >= 0 ? Number(args.splice(ceilingAt, 2)[1]) : 43;
const [outFile, ...runs] = args;
if (!outFile || runs.length === 0) throw new Error("usage: wgsl-report.ts OUT.json RUN.json...");
const bench = runs.flatMap((f) => JSON.parse(readFileSync(f, "utf8")) as BenchRow[]);
const failed = bench.filter((r) => !r.gate.ok);
if (failed.length) throw new Error(`correctness gate failed: ${failed.map((r) => r.mask).join(", ")}`);
const device = `${bench[0]!.device.device} (${bench[0]!.device.description})`;
const date = new Date().toISOString().slice(0, 10);
const rows = bench.map((r) => ({
  case: r.case,
  mask: r.mask,
  impl: r.impl,
  ms: r.ms,
  density: r.density,
  tflops: r.tflops,
  storage: r.storage,
  robustness: r.unsafe ? "disabled" : "default",
  heads: r.heads,
  relError: r.gate.relError,
}));
writeFileSync(outFile, JSON.stringify({ device, date, ceilingTflops: ceiling, rows }, null, 2) + "\n");

const variants = [...new Set(rows.map((r) => `${r.storage}/${r.robustness}`))];
const lines = [
  `${device}, ${date}; osp29, ${rows[0]!.heads} heads, head dim 96; median of timestamp-query timings after warm-up.`,
  "",
  `| mask | density | ${variants.map((v) => `${v} ms | TFLOP/s | % of ${ceiling}`).join(" | ")} |`,
  `| --- | --- | ${variants.map(() => "--- | --- | ---").join(" | ")} |`,
];
for (const mask of [...new Set(rows.map((r) => r.mask))]) {
  const cells = variants.map((v) => {
    const r = rows.find((x) => x.mask === mask && `${x.storage}/${x.robustness}` === v);
    return r
      ? `${r.ms.toFixed(2)} | ${r.tflops.toFixed(1)} | ${((100 * r.tflops) / ceiling).toFixed(1)}%`
      : "– | – | –";
  });
  const density = rows.find((x) => x.mask === mask)!.density;
  lines.push(`| ${mask} | ${(density * 100).toFixed(1)}% | ${cells.join(" | ")} |`);
}
console.log(lines.join("\n"));
