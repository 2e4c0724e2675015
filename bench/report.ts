// Merges tilec's and the peers' timings from one device run into bench/results/cuda-h100.json and
// prints the Markdown table for bench/RESULTS.md: effective TFLOP/s (computed blocks only, the same
// plan FLOPs for every implementation of a mask), tilec vs FlexAttention, and time(mask)/time(full)
// against the plan's density.
//   npx tsx bench/report.ts tilec.json peers.json [bench/results/cuda-h100.json]
import { readFileSync, writeFileSync } from "node:fs";

interface Row {
  case: string;
  mask: string;
  impl: string;
  ms: number;
  density?: number;
  flops?: number;
  tflops?: number;
}
const [tilecFile, peersFile, outFile = "bench/results/cuda-h100.json"] = process.argv.slice(2);
const tilec = JSON.parse(readFileSync(tilecFile!, "utf8")) as { device: string; rows: Row[] };
const peers = JSON.parse(readFileSync(peersFile!, "utf8")) as { device: string; torch: string; rows: Row[] };
const work = new Map(tilec.rows.map((r) => [`${r.case}/${r.mask}`, r]));
const rows: Row[] = [...tilec.rows, ...peers.rows].map((r) => {
  const t = work.get(`${r.case}/${r.mask}`)!;
  // Dense SDPA computes every block: its FLOPs are those of the full mask.
  const flops = r.impl.startsWith("sdpa") ? work.get(`${r.case}/full`)!.flops! : t.flops!;
  return {
    case: r.case,
    mask: r.mask,
    impl: r.impl,
    ms: r.ms,
    density: t.density,
    tflops: flops / (r.ms * 1e-3) / 1e12,
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
  `${tilec.device}, ${date}, PyTorch ${peers.torch}; batch 1, 24 heads, head dim 96, bf16, 128×128 blocks; median of 21 runs per kernel (CUDA events) in 7 rounds interleaved over one implementation's kernels of the case, after a 2 s warm-up.`,
  "",
  "| case | mask | impl | density | tilec ms | tilec TFLOP/s | Flex ms | Flex TFLOP/s | tilec/Flex speed | t(mask)/t(full) ÷ density |",
  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
];
// tilec (mma.sync template) and tilec-sm90 (wgmma template), each against its own dense time.
for (const r of rows.filter((x) => x.impl.startsWith("tilec"))) {
  const f = get(r.case, r.mask, "flex");
  const full = get(r.case, "full", r.impl)!;
  const rel = r.ms / full.ms / r.density!;
  lines.push(
    `| ${r.case} | ${r.mask} | ${r.impl} | ${(r.density! * 100).toFixed(2)}% | ${r.ms.toFixed(2)} | ${r.tflops!.toFixed(0)} | ${f ? f.ms.toFixed(2) : "–"} | ${f ? f.tflops!.toFixed(0) : "–"} | ${f ? (f.ms / r.ms).toFixed(2) + "×" : "–"} | ${rel.toFixed(3)} |`,
  );
}
lines.push("", "| case | dense | ms | TFLOP/s |", "| --- | --- | --- | --- |");
for (const r of rows.filter((x) => x.mask === "full"))
  lines.push(`| ${r.case} | ${r.impl} | ${r.ms.toFixed(2)} | ${r.tflops!.toFixed(0)} |`);
console.log(lines.join("\n"));
