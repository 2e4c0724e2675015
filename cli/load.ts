// Shared by CLI commands: read a spec file, compile it, print diagnostics the way compilers do.
import { readFileSync } from "node:fs";
import pc from "picocolors";
import { compileSpec, type CompileResult } from "../compiler/pipeline.ts";
import { hasErrors, renderDiagnostics } from "../grammar/index.ts";

/** Exit codes: 0 success, 1 diagnostics in the input, 2 usage errors. */
export const EXIT_OK = 0;
export const EXIT_DIAGNOSTICS = 1;
export const EXIT_USAGE = 2;

export class UsageError extends Error {}

export function loadSpec(file: string): CompileResult {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    throw new UsageError(`cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  return compileSpec(text, file);
}

/** Prints diagnostics to stderr; returns true when there were errors. */
export function report(result: CompileResult): boolean {
  if (result.diagnostics.length) {
    const color = pc.isColorSupported ? pc : undefined;
    process.stderr.write(renderDiagnostics(result.diagnostics, result.sources, { color }) + "\n");
    const errors = result.diagnostics.filter((d) => d.severity === "error").length;
    if (errors) process.stderr.write(`${errors} error${errors === 1 ? "" : "s"}\n`);
  }
  return hasErrors(result.diagnostics);
}

export function table(rows: (string | number)[][], header: string[]): string {
  const all = [header, ...rows.map((r) => r.map(String))];
  const widths = header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? "").length)));
  const line = (r: string[]) =>
    r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
  return [line(all[0]!), widths.map((w) => "-".repeat(w)).join("  "), ...all.slice(1).map(line)].join("\n");
}

export function formatFlops(f: number): string {
  return f >= 1e12 ? `${(f / 1e12).toFixed(2)} TFLOP` : `${(f / 1e9).toFixed(2)} GFLOP`;
}
