// The front half of tilec as one call: text → AST → CheckedSpec (with diagnostics), and kernel → plan.
import { hasErrors, parse, type Diagnostic } from "../grammar/index.ts";
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
  const checked = check(parsed.ast, text);
  const diagnostics = [...parsed.diagnostics, ...checked.diagnostics].sort(
    (a, b) => a.span.start - b.span.start,
  );
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
