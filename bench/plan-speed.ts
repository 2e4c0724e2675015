// How fast the symbolic planner builds block plans (CPU only). Median of 30 builds after 5 warm-ups,
// per kernel of the Open-Sora-Plan examples; prints a Markdown table for bench/RESULTS.md.
import { readFileSync } from "node:fs";
import os from "node:os";
import { compileSpec } from "../compiler/pipeline.ts";
import { buildPlan } from "../compiler/plan.ts";

const rows: string[] = [];
for (const file of [
  "examples/efficient-vdit/osp29.tile",
  "examples/efficient-vdit/osp93.tile",
  "examples/cogvideox/cogvideox5b.tile",
  "examples/sta/sta.tile",
]) {
  const spec = compileSpec(readFileSync(file, "utf8"), file).spec!;
  for (const k of spec.kernels.values()) {
    for (let i = 0; i < 5; i++) buildPlan(k);
    const times: number[] = [];
    for (let i = 0; i < 30; i++) {
      const t0 = performance.now();
      buildPlan(k);
      times.push(performance.now() - t0);
    }
    times.sort((a, b) => a - b);
    const p = buildPlan(k);
    rows.push(
      `| ${file.split("/").pop()} | ${k.name} | ${p.seqLen} | ${p.numQBlocks}×${p.numKvBlocks} | ${times[15]!.toFixed(2)} | ${times[29]!.toFixed(2)} |`,
    );
  }
}
console.log(
  `Planner speed on ${os.cpus()[0]?.model ?? "?"} (${os.cpus().length} cores), Node ${process.version}, ${new Date().toISOString().slice(0, 10)}\n`,
);
console.log(
  "| spec | kernel | tokens | block grid | median ms | max ms |\n| --- | --- | --- | --- | --- | --- |\n" +
    rows.join("\n"),
);
