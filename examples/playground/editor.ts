// The spec editor: a textarea with a line-number gutter that marks lines carrying a diagnostic, and a
// list of diagnostics (line:col, severity, message, hint) below it; clicking one selects its span.
import type { Diagnostic } from "../../grammar/index.ts";

export class SpecEditor {
  private marked = new Map<number, Diagnostic[]>();

  constructor(
    readonly textarea: HTMLTextAreaElement,
    private readonly gutter: HTMLElement,
    private readonly list: HTMLElement,
  ) {
    textarea.addEventListener("scroll", () => (gutter.scrollTop = textarea.scrollTop));
    textarea.addEventListener("input", () => this.renderGutter());
  }

  get text(): string {
    return this.textarea.value;
  }

  /** Shows `diagnostics` (only those in `file`; the standard library's are listed without a marker). */
  show(diagnostics: readonly Diagnostic[], file: string): void {
    this.marked = new Map();
    for (const d of diagnostics) {
      if (d.span.file !== file) continue;
      const at = this.marked.get(d.span.line) ?? [];
      at.push(d);
      this.marked.set(d.span.line, at);
    }
    this.renderGutter();
    this.list.replaceChildren(...diagnostics.map((d) => this.item(d, file)));
    this.list.dataset.count = String(diagnostics.length);
  }

  private item(d: Diagnostic, file: string): HTMLElement {
    const li = document.createElement("li");
    li.className = `diagnostic ${d.severity}`;
    li.dataset.line = String(d.span.line);
    const where = d.span.file === file ? "" : `${d.span.file}:`;
    const pos = document.createElement("span");
    pos.className = "pos";
    pos.textContent = `${where}${d.span.line}:${d.span.col}`;
    const msg = document.createElement("span");
    msg.className = "msg";
    msg.textContent = `${d.severity}: ${d.message}`;
    li.append(pos, " ", msg);
    if (d.hint) {
      const hint = document.createElement("div");
      hint.className = "hint";
      hint.textContent = `hint: ${d.hint}`;
      li.append(hint);
    }
    if (d.span.file === file) {
      li.addEventListener("click", () => {
        this.textarea.focus();
        this.textarea.setSelectionRange(d.span.start, Math.max(d.span.end, d.span.start + 1));
      });
    }
    return li;
  }

  private renderGutter(): void {
    const lines = this.textarea.value.split("\n").length;
    const rows: HTMLElement[] = [];
    for (let i = 1; i <= lines; i++) {
      const row = document.createElement("div");
      row.textContent = String(i);
      const ds = this.marked.get(i);
      if (ds) {
        row.className = ds.some((d) => d.severity === "error") ? "mark error" : "mark warning";
        row.dataset.line = String(i);
        row.title = ds.map((d) => d.message).join("\n");
      }
      rows.push(row);
    }
    this.gutter.replaceChildren(...rows);
    this.gutter.scrollTop = this.textarea.scrollTop;
  }
}

/** Calls `fn` once input has paused for `ms`. */
export function debounce(fn: () => void, ms: number): () => void {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return () => {
    clearTimeout(timer);
    timer = setTimeout(fn, ms);
  };
}
