// Writes a search result as .tile text: the spec's own declarations (layouts, masks, kernels — verbatim,
// so the file compiles on its own) with its model sections replaced by the searched model, whose layer
// rules group consecutive layers that chose the same kernel. A base model's step count and per-step
// overrides (e.g. dense attention for the first sampling steps) carry over.
import type { ModelSpec } from "../compiler/check.ts";
import { parse } from "../grammar/index.ts";

export interface ModelText {
  readonly name: string;
  /** Kernel per layer. */
  readonly layerKernels: readonly string[];
  readonly steps?: number;
  readonly stepOverrides?: ModelSpec["stepOverrides"];
  /** Comment lines written above the model (without '#'). */
  readonly comment?: readonly string[];
}

const range = ([a, b]: readonly [number, number]) => (a === b ? `${a}` : `${a} .. ${b}`);

export function modelSection(m: ModelText): string {
  const lines = (m.comment ?? []).map((c) => `# ${c}`.trimEnd());
  lines.push(`model ${m.name} {`, `  layers ${m.layerKernels.length}`);
  if (m.steps !== undefined) lines.push(`  steps ${m.steps}`);
  const rules: [readonly [number, number], string][] = [];
  m.layerKernels.forEach((k, l) => {
    const last = rules[rules.length - 1];
    if (last && last[1] === k && last[0][1] === l - 1) last[0] = [last[0][0], l];
    else rules.push([[l, l], k]);
  });
  const width = Math.max(...rules.map(([r]) => range(r).length));
  for (const [r, k] of rules) lines.push(`  layer ${range(r).padEnd(width)}  use ${k}`);
  for (const o of m.stepOverrides ?? [])
    lines.push(
      `  step ${range(o.steps)} layer ${o.layers[0] === 0 && o.layers[1] === m.layerKernels.length - 1 ? "all" : range(o.layers)} use ${o.kernel}`,
    );
  lines.push("}");
  return lines.join("\n") + "\n";
}

/**
 * The spec's text without its `model` declarations (and the comment lines directly above each), so a
 * searched model can take their place.
 */
export function specWithoutModels(source: string, file: string): string {
  const { ast } = parse(source, file);
  const models = ast.decls.filter((d) => d.kind === "model").sort((a, b) => b.span.start - a.span.start);
  let text = source;
  for (const d of models) {
    let start = text.lastIndexOf("\n", d.span.start - 1) + 1;
    // Walk up over comment lines that belong to the model.
    for (;;) {
      const prev = text.lastIndexOf("\n", start - 2) + 1;
      if (
        start === 0 ||
        !text
          .slice(prev, start - 1)
          .trimStart()
          .startsWith("#")
      )
        break;
      start = prev;
    }
    let end = d.span.end;
    while (end < text.length && text[end] !== "\n") end++;
    text = text.slice(0, start) + text.slice(end + 1);
  }
  return text.replace(/\n{3,}/g, "\n\n").replace(/\s*$/, "\n");
}

/** A model name that is a valid identifier and not taken by any declaration of the spec. */
export function freshModelName(wanted: string, taken: ReadonlySet<string>): string {
  const base = wanted.replace(/[^A-Za-z0-9_]/g, "_").replace(/^(?=[0-9])/, "m_") || "searched";
  let name = base;
  for (let i = 2; taken.has(name); i++) name = `${base}_${i}`;
  return name;
}
