// The front half of tilec as one call: text → AST → CheckedSpec (with diagnostics), and kernel → plan.
import { error, hasErrors, parse, renderDiagnostics, type Diagnostic } from "../grammar/index.ts";
import { lowerKernel, type KernelConfig, type KernelIR } from "./lower.ts";
import { check, type CheckedSpec, type KernelSpec } from "./check.ts";
import { buildPlan, type BlockPlan } from "./plan.ts";
import { planStats, type PlanStats } from "./planStats.ts";
import { STDLIB_FILE, STDLIB_SOURCE } from "./stdlib.ts";

export interface CompileResult {
  /** Undefined when the spec has errors. */
  readonly spec?: CheckedSpec;
  readonly diagnostics: readonly Diagnostic[];
  /** Every source a diagnostic may point into (the spec and the standard library). */
  readonly sources: ReadonlyMap<string, string>;
}

export function compileSpec(text: string, file = "<input>"): CompileResult {
  const sources = new Map([
    [file, text],
    [STDLIB_FILE, STDLIB_SOURCE],
  ]);
  const parsed = parse(text, file);
  let checked: ReturnType<typeof check>;
  try {
    checked = check(parsed.ast, text);
  } catch (e) {
    // Deep mask call chains (a → b → c → …) recurse in the elaborator; report, never crash.
    if (!(e instanceof RangeError)) throw e;
    const at = parsed.ast.decls[0]?.span ?? { file, start: 0, end: 0, line: 1, col: 1 };
    const d = error(
      `spec too deeply nested to check (${e.message})`,
      at,
      "split deep expressions and call chains into smaller masks",
    );
    return { diagnostics: [...parsed.diagnostics, d], sources };
  }
  // A declaration with a syntax error is incomplete: semantic complaints about it ("no head_dim")
  // would only repeat the syntax error, so they are dropped; other declarations are still checked.
  // Its region runs to the next declaration, since recovery may have ended it before the bad token.
  const starts = parsed.ast.decls.map((d) => Math.min(d.span.start, d.name.span.start)).sort((a, b) => a - b);
  const regions = starts.map((s, i) => [s, starts[i + 1] ?? Infinity] as const);
  const broken = regions.filter(([a, b]) =>
    parsed.diagnostics.some((e) => e.span.start >= a && e.span.start < b),
  );
  const inBroken = (at: number) => broken.some(([a, b]) => at >= a && at < b);
  const semantic = checked.diagnostics.filter((d) => d.span.file !== file || !inBroken(d.span.start));
  const diagnostics = [...parsed.diagnostics, ...semantic].sort((a, b) => a.span.start - b.span.start);
  return { spec: hasErrors(diagnostics) ? undefined : checked.spec, diagnostics, sources };
}

export interface KernelPlan {
  readonly kernel: KernelSpec;
  readonly plan: BlockPlan;
  readonly stats: PlanStats;
}

export function planKernel(kernel: KernelSpec): KernelPlan {
  const plan = buildPlan(kernel);
  return { kernel, plan, stats: planStats(plan, kernel.layout) };
}

/** A spec's (text or checked) kernel and its IR, by name (optional when there is one kernel). */
export function kernelIR(
  spec: string | CheckedSpec,
  options: { kernel?: string; config?: KernelConfig; file?: string; arch?: string },
): { kernel: KernelSpec; ir: KernelIR } {
  let checked: CheckedSpec;
  if (typeof spec === "string") {
    const r = compileSpec(spec, options.file ?? "<spec>");
    if (!r.spec) throw new Error(`the spec has errors:\n${renderDiagnostics(r.diagnostics, r.sources)}`);
    checked = r.spec;
  } else checked = spec;
  const names = [...checked.kernels.keys()];
  const name = options.kernel ?? (names.length === 1 ? names[0] : undefined);
  if (!name)
    throw new Error(`the spec has ${names.length} kernels (${names.join(", ")}): pass { kernel: NAME }`);
  const ks = checked.kernels.get(name);
  if (!ks) throw new Error(`the spec has no kernel '${name}'; it has ${names.join(", ")}`);
  return { kernel: ks, ir: lowerKernel(planKernel(ks), checked.file, options.config, options.arch) };
}
