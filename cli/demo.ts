// `npm run demo`: compiles every example spec, prints the Efficient-vDiT Attention Tile masks of
// Open-Sora-Plan 29 and 93 frames beside the paper's Table 1, and writes a tile-map SVG per kernel
// to out/. Needs no GPU.
import { mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import pc from "picocolors";
import { planKernel } from "../compiler/pipeline.ts";
import { planAscii, planSvg } from "../compiler/planPicture.ts";
import { describeLayout } from "../compiler/layout.ts";
import { formatFlops, loadSpec, report, table } from "./load.ts";

// Efficient-vDiT Table 1: sparsity (%) of each mask at 128×128 blocks.
const PAPER: Record<string, Record<string, number>> = {
  osp29: { tile_4_4: 17.6, tile_3_5: 29.88, tile_2_6: 45.47, tile_1_7: 64.38 },
  osp93: { tile_12_12: 21.51, tile_8_16: 40.3, tile_6_18: 51.88, tile_4_20: 64.98, tile_3_21: 72.05 },
};

function specFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith(".tile"))
    .map((e) => join(e.parentPath, e.name))
    .sort();
}

const outDir = "out";
mkdirSync(outDir, { recursive: true });
let failed = false;
let svgs = 0;
for (const file of specFiles("examples")) {
  const result = loadSpec(file);
  if (report(result) || !result.spec) {
    failed = true;
    continue;
  }
  const kernels = [...result.spec.kernels.values()];
  const layout = kernels[0]?.layout;
  console.log(pc.bold(`\n${file}`) + (layout ? `  (${describeLayout(layout)})` : ""));
  const paper = layout ? PAPER[layout.name] : undefined;
  const rows: (string | number)[][] = [];
  for (const k of kernels) {
    const t0 = performance.now();
    const p = planKernel(k);
    const ms = performance.now() - t0;
    const sub = join(outDir, relative("examples", file).replace(/\.tile$/, ""));
    mkdirSync(sub, { recursive: true });
    const title = `${k.name}: ${k.maskSource} — ${p.plan.blockQ}×${p.plan.blockKv} blocks, density ${(p.stats.density * 100).toFixed(2)}%`;
    writeFileSync(join(sub, `${k.name}.svg`), planSvg(p.plan, { title, layout: k.layout }));
    svgs++;
    const sparsity = p.stats.sparsity * 100;
    const ref = paper?.[k.name];
    const match =
      ref === undefined
        ? ""
        : Math.abs(sparsity - ref) <= 0.01
          ? pc.green(`${ref.toFixed(2)}% ✓`)
          : pc.red(`${ref.toFixed(2)}% ✗`);
    if (ref !== undefined && Math.abs(sparsity - ref) > 0.01) failed = true;
    rows.push([
      k.name,
      k.maskSource,
      `${p.plan.blockQ}x${p.plan.blockKv}`,
      `${p.plan.counts.full}/${p.plan.counts.partial}/${p.plan.counts.empty}`,
      `${(p.stats.density * 100).toFixed(2)}%`,
      `${sparsity.toFixed(2)}%`,
      ...(paper ? [match] : []),
      formatFlops(p.stats.flops),
      `${ms.toFixed(1)} ms`,
    ]);
  }
  const header = [
    "kernel",
    "mask",
    "block",
    "full/partial/empty",
    "density",
    "sparsity",
    ...(paper ? ["paper"] : []),
    "FLOPs",
    "plan",
  ];
  console.log(table(rows, header));
}
const osp29 = loadSpec("examples/efficient-vdit/osp29.tile").spec?.kernels.get("tile_2_6");
if (osp29)
  console.log(`\nosp29 tile_2_6 (frames 0 and 4 are global):\n${planAscii(planKernel(osp29).plan, 48)}`);
console.log(`\nwrote ${svgs} tile maps (SVG) under ${outDir}/`);
process.exitCode = failed ? 1 : 0;
