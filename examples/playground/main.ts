// The tilec playground: edit a .tile spec, see its diagnostics as you type, pick a kernel, see its tile
// map and cost, and run it on WebGPU against the float64 reference. Plain DOM, no framework.
import type { CheckedSpec } from "../../compiler/check.ts";
import { seqLen } from "../../compiler/layout.ts";
import { compileSpec, planKernel } from "../../compiler/pipeline.ts";
import { planSvg } from "../../compiler/planPicture.ts";
import { debounce, SpecEditor } from "./editor.ts";
import { runKernel, webGpuMissing } from "./run.ts";
import { DEFAULT_SPEC } from "./spec.ts";

const FILE = "playground.tile";
const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

const editor = new SpecEditor($("spec"), $("gutter"), $("diagnostics"));
const summary = $("summary");
const select = $<HTMLSelectElement>("kernel");
const tilemap = $("tilemap");
const stats = $("stats");
const runButton = $<HTMLButtonElement>("run");
const result = $("result");

let spec: CheckedSpec | undefined;

function update(): void {
  const r = compileSpec(editor.text, FILE);
  editor.show(r.diagnostics, FILE);
  const errors = r.diagnostics.filter((d) => d.severity === "error").length;
  const warnings = r.diagnostics.length - errors;
  summary.textContent =
    r.diagnostics.length === 0 ? "no problems" : `${errors} error(s), ${warnings} warning(s)`;
  summary.className = errors ? "error" : "ok";
  spec = r.spec;
  document.body.dataset.state = spec ? "ok" : "errors";
  if (!spec) {
    // Keep the last tile map, greyed out, until the spec checks again.
    tilemap.classList.add("stale");
    runButton.disabled = true;
    return;
  }
  const names = [...spec.kernels.keys()];
  const keep = names.includes(select.value) ? select.value : names[0];
  select.replaceChildren(...names.map((n) => new Option(n, n, false, n === keep)));
  showPlan();
}

function showPlan(): void {
  const ks = spec?.kernels.get(select.value);
  runButton.disabled = !ks;
  tilemap.classList.remove("stale");
  if (!ks) {
    tilemap.replaceChildren();
    stats.replaceChildren();
    return;
  }
  const { plan, stats: s } = planKernel(ks);
  tilemap.innerHTML = planSvg(plan, { layout: ks.layout, size: 480, title: `${ks.name}: ${ks.maskSource}` });
  Object.assign(tilemap.dataset, {
    kernel: ks.name,
    full: String(s.blocks.full),
    partial: String(s.blocks.partial),
    empty: String(s.blocks.empty),
  });
  const l = ks.layout;
  const rows: [string, string][] = [
    ["layout", `${l.name}: ${seqLen(l)} tokens, ${l.heads} heads × ${l.headDim}, ${l.dtype}`],
    ["blocks", `${plan.numQBlocks} × ${plan.numKvBlocks} of ${plan.blockQ} × ${plan.blockKv}`],
    ["full / partial / empty", `${s.blocks.full} / ${s.blocks.partial} / ${s.blocks.empty}`],
    ["density", pct(s.density)],
    ["sparsity", pct(s.sparsity)],
    ["FLOPs", `${flops(s.flops)} (dense ${flops(s.denseFlops)})`],
    ["bytes moved", `${(s.bytes / 1e6).toFixed(1)} MB`],
  ];
  stats.replaceChildren(
    ...rows.map(([k, v]) => {
      const tr = document.createElement("tr");
      tr.append(cell("th", k), cell("td", v));
      return tr;
    }),
  );
}

async function run(): Promise<void> {
  if (!spec) return;
  const kernel = select.value;
  runButton.disabled = true;
  result.dataset.state = "running";
  result.textContent = "starting…";
  try {
    const r = await runKernel(spec, kernel, (s) => (result.textContent = s));
    result.dataset.state = r.ok ? "ok" : "mismatch";
    result.dataset.relError = String(r.relError);
    result.dataset.ms = String(r.ms);
    result.textContent =
      `${r.ok ? "✓ matches" : "✗ does NOT match"} the float64 reference: relative error ${r.relError.toExponential(2)} ` +
      `(tolerance ${r.tolerance}, ${r.storage} storage, ${r.rowsChecked} of ${r.seqLen} rows checked). ` +
      `Time: ${r.ms.toFixed(3)} ms (${r.timing}) on ${r.adapter}.`;
  } catch (e) {
    result.dataset.state = "error";
    result.textContent = `✗ ${(e as Error).message}`;
    console.error(e);
  } finally {
    runButton.disabled = !spec;
  }
}

function cell(tag: "th" | "td", text: string): HTMLElement {
  const c = document.createElement(tag);
  c.textContent = text;
  return c;
}

const pct = (x: number) => `${(100 * x).toFixed(1)} %`;
const flops = (x: number) =>
  x >= 1e12
    ? `${(x / 1e12).toFixed(2)} TFLOP`
    : x >= 1e9
      ? `${(x / 1e9).toFixed(2)} GFLOP`
      : `${(x / 1e6).toFixed(1)} MFLOP`;

editor.textarea.value = DEFAULT_SPEC;
editor.textarea.addEventListener("input", debounce(update, 250));
select.addEventListener("change", showPlan);
runButton.addEventListener("click", () => void run());
const missing = webGpuMissing();
if (missing) {
  $("webgpu").textContent = missing;
  $("webgpu").hidden = false;
}
update();
