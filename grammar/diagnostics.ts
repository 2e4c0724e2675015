// Diagnostics are values, never exceptions: every stage collects them and hands them on, so a broken
// spec reports all of its problems in one run. Each carries a span into the source and a hint that
// says how to fix the input.
export interface Span {
  readonly file: string;
  /** 0-based character offsets, end exclusive. */
  readonly start: number;
  readonly end: number;
  /** 1-based line and column of `start`. */
  readonly line: number;
  readonly col: number;
}

export type Severity = "error" | "warning";

export interface Diagnostic {
  readonly severity: Severity;
  readonly message: string;
  readonly span: Span;
  readonly hint?: string;
}

export function error(message: string, span: Span, hint?: string): Diagnostic {
  return { severity: "error", message, span, hint };
}

export function warning(message: string, span: Span, hint?: string): Diagnostic {
  return { severity: "warning", message, span, hint };
}

export function hasErrors(diagnostics: readonly Diagnostic[]): boolean {
  return diagnostics.some((d) => d.severity === "error");
}

/** The span of a whole (possibly empty) source, for problems that belong to no token. */
export function fileSpan(file: string): Span {
  return { file, start: 0, end: 0, line: 1, col: 1 };
}

export function joinSpans(a: Span, b: Span): Span {
  return a.start <= b.start ? { ...a, end: Math.max(a.end, b.end) } : { ...b, end: Math.max(a.end, b.end) };
}

/** Turns a character offset into a 1-based line/column. */
export function positionAt(text: string, offset: number): { line: number; col: number } {
  let line = 1;
  let lineStart = 0;
  const end = Math.min(Math.max(offset, 0), text.length);
  for (let i = 0; i < end; i++) {
    if (text.charCodeAt(i) === 10) {
      line++;
      lineStart = i + 1;
    }
  }
  return { line, col: end - lineStart + 1 };
}

export function spanAt(file: string, text: string, start: number, end: number): Span {
  const { line, col } = positionAt(text, start);
  return { file, start, end: Math.max(end, start), line, col };
}

export interface RenderOptions {
  /** Wrap severity words in terminal colours (picocolors functions or identity). */
  readonly color?: {
    red(s: string): string;
    yellow(s: string): string;
    bold(s: string): string;
    cyan(s: string): string;
  };
}

/**
 * `file:line:col: error: message`, the source line, a caret run under the span, and the hint —
 * the format compilers and editors already understand.
 */
export type Sources = string | ReadonlyMap<string, string>;

export function renderDiagnostic(d: Diagnostic, sources: Sources, options: RenderOptions = {}): string {
  const c = options.color;
  const source = typeof sources === "string" ? sources : (sources.get(d.span.file) ?? "");
  const lines = source.split("\n");
  const lineText = (lines[d.span.line - 1] ?? "").replace(/\t/g, " ").replace(/\r$/, "");
  const col = Math.max(1, d.span.col);
  const width = Math.max(1, Math.min(d.span.end - d.span.start, lineText.length - col + 1));
  const sev =
    d.severity === "error"
      ? c
        ? c.red(c.bold("error"))
        : "error"
      : c
        ? c.yellow(c.bold("warning"))
        : "warning";
  const gutter = String(d.span.line).length;
  const out = [
    `${d.span.file}:${d.span.line}:${col}: ${sev}: ${d.message}`,
    `${" ".repeat(gutter)} |`,
    `${d.span.line} | ${lineText}`,
    `${" ".repeat(gutter)} | ${" ".repeat(col - 1)}${"^".repeat(width)}`,
  ];
  if (d.hint) out.push(`${" ".repeat(gutter)} = ${c ? c.cyan("hint") : "hint"}: ${d.hint}`);
  return out.join("\n");
}

export function renderDiagnostics(
  ds: readonly Diagnostic[],
  sources: Sources,
  options: RenderOptions = {},
): string {
  return ds.map((d) => renderDiagnostic(d, sources, options)).join("\n\n");
}
