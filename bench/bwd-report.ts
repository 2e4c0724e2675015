// Merges tilec's and the peers' backward timings from one device run into
// bench/results/cuda-bwd-h100.json ({device, date, rows: [{case, mask, impl, density, ms, tflops}]})
// and prints the Markdown table for bench/RESULTS.md: effective TFLOP/s (2.5 × the forward FLOPs of
// the mask's computed 128×128 blocks, the same count for every implementation of a mask; dense SDPA
// gets the full mask's), tilec against FlexAttention, and time(mask)/time(full) against the density.
//   npx tsx bench/bwd-report.ts tilec-bwd.json peers-bwd.json [bench/results/cuda-bwd-h100.json]
import { readFileSync, writeFileSync } from "node:fs";

interface Row {
  case: string;
  mask: string;
  impl: string;
  ms: number;
  headDim?: number;
  density?: number;
  flops?: number;
  tflops?: number;
  gateError?: number;
}
const [tilecFile, peersFile, outFile = "bench/results/cuda-bwd-h100.json"] = process.argv.slice(2);
const tilec = JSON.parse(readFileSync(tilecFile!, "utf8")) as { device: string; rows: Row[] };
const peers = JSON.parse(readFileSync(peersFile!, "utf8")) as { device: string; torch: string; rows: Row[] };
const work = new Map(tilec.rows.map((r) => [`${r.case}/${r.mask}`, r]));
const rows: Row[] = [...tilec.rows, ...peers.rows]
  .filter((r) => work.has(`${r.case}/${r.mask}`))
  .map((r) => {
    const t = work.get(`${r.case}/${r.mask}`)!;
    const flops = r.impl.startsWith("sdpa") ? work.get(`${r.case}/full`)!.flops! : t.flops!;
    return {
      case: r.case,
      mask: r.mask,
      impl: r.impl,
      headDim: t.headDim,
      density: t.density,
      ms: r.ms,
      tflops: flops / (r.ms * 1e-3) / 1e12,
      ...(r.gateError !== undefined ? { gateError: r.gateError } : {}),
    };
  });
const date = new Date().toISOString().slice(0, 10);
writeFileSync(
  outFile,
  JSON.stringify({ device: tilec.device, date, torch: peers.torch, rows }, null, 2) + "\n",
);

const get = (c: string, m: string, impl: string) =>
  rows.find((r) => r.case === c && r.mask === m && r.impl === impl);
const lines = [
  `${tilec.device}, ${date}, PyTorch ${peers.torch}; batch 1, 24 heads, bf16, 128×128 plan blocks; a run is the whole backward; medians of interleaved rounds (CUDA events) after a 2 s warm-up. Effective TFLOP/s = 2.5 × forward FLOPs of computed blocks.`,
  "",
  "| case | mask | impl | density | ms | TFLOP/s | Flex ms | Flex TFLOP/s | speed vs Flex | t(mask)/t(full) ÷ density | gate rel. err |",
  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
];
for (const r of rows.filter((x) => x.impl.startsWith("tilec"))) {
  const f = get(r.case, r.mask, "flex-bwd");
  const full = get(r.case, "full", r.impl)!;
  const rel = r.ms / full.ms / r.density!;
  lines.push(
    `| ${r.case} | ${r.mask} | ${r.impl} | ${(r.density! * 100).toFixed(2)}% | ${r.ms.toFixed(2)} | ${r.tflops!.toFixed(0)} | ${f ? f.ms.toFixed(2) : "–"} | ${f ? f.tflops!.toFixed(0) : "–"} | ${f ? (f.ms / r.ms).toFixed(2) + "×" : "–"} | ${rel.toFixed(3)} | ${r.gateError?.toExponential(1) ?? "–"} |`,
  );
}
lines.push("", "| case | dense backward | ms | TFLOP/s |", "| --- | --- | --- | --- |");
for (const r of rows.filter((x) => x.mask === "full"))
  lines.push(`| ${r.case} | ${r.impl} | ${r.ms.toFixed(2)} | ${r.tflops!.toFixed(0)} |`);
console.log(lines.join("\n"));
