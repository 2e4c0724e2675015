// text → tokens → CST → SpecAst, with every lexical and syntax error as a positioned diagnostic.
import { EOF, type IRecognitionException, type IToken } from "chevrotain";
import type { SpecAst } from "./ast.ts";
import { error, spanAt, type Diagnostic, type Span } from "./diagnostics.ts";
import { parseCst, tileParser } from "./parser.ts";
import { tileLexer } from "./tokens.ts";
import { AstBuilder } from "./toAst.ts";

export type { SpecAst } from "./ast.ts";
export * from "./diagnostics.ts";

export interface ParseResult {
  readonly ast: SpecAst;
  readonly diagnostics: Diagnostic[];
}

// What each rule expects, in words a user can act on.
const RULE_HINTS: Record<string, string> = {
  spec: "a spec is a sequence of `layout NAME { … }`, `mask NAME(params) = expr`, `kernel NAME { … }` and `model NAME { … }`",
  item: "a spec is a sequence of `layout NAME { … }`, `mask NAME(params) = expr`, `kernel NAME { … }` and `model NAME { … }`",
  layoutDecl:
    "layout fields are: video F x H x W, text N [before|after], batch N, heads N, kv_heads N, head_dim N, dtype bf16|fp16|fp32 — e.g. `layout L { video 8 x 45 x 80  heads 24  head_dim 96 }`",
  layoutField:
    "layout fields are: video F x H x W, text N [before|after], batch N, heads N, kv_heads N, head_dim N, dtype bf16|fp16|fp32",
  maskDecl: "write a mask as `mask NAME(a, b) = <boolean expression over q.* and k.*>`",
  kernelDecl:
    "write a kernel as `kernel NAME { layout L  mask attention_tile(2)  block 128 x 128  targets cuda }`",
  kernelField: "kernel fields are: layout NAME, mask EXPR, block BQ x BKV, targets cuda, wgsl, cpu",
  modelDecl: "model fields are: layers N, steps N, layer A..B use KERNEL, step A..B layer C..D use KERNEL",
  modelField: "model fields are: layers N, steps N, layer A..B use KERNEL, step A..B layer C..D use KERNEL",
  range: "a range is `all`, `N` or `A..B` (inclusive)",
  callArgs: "arguments are expressions or shapes such as 6x8x8, separated by commas",
  quantExpr: "a quantifier reads `any i in 0 .. n-1: <expression>`",
  ifExpr: "a conditional reads `if <cond> then <a> else <b>`",
};
const EXPR_HINT =
  "an expression is built from numbers, q.frame / k.row / …, mask calls, arithmetic, comparisons and and/or/not";

export function parse(text: string, file = "<input>"): ParseResult {
  const diagnostics: Diagnostic[] = [];
  const lexed = tileLexer.tokenize(text);
  for (const e of lexed.errors) {
    const ch = text.slice(e.offset, e.offset + Math.max(1, e.length));
    diagnostics.push(
      error(
        `unexpected character${ch.length > 1 ? "s" : ""} '${ch}'`,
        spanAt(file, text, e.offset, e.offset + e.length),
        "remove it; comments start with # or //",
      ),
    );
  }
  const tooDeep = nestingLimitToken(lexed.tokens);
  if (tooDeep) {
    // chevrotain's recursive descent would overflow the stack long before any real spec nests this deep.
    const span = spanAt(file, text, tooDeep.startOffset, (tooDeep.endOffset ?? tooDeep.startOffset) + 1);
    diagnostics.push(
      error(`expression nested more than ${MAX_NESTING} levels deep`, span, "split it into named masks"),
    );
    return { ast: { file, decls: [] }, diagnostics };
  }
  const cst = parseCst(lexed.tokens);
  const endSpan = spanAt(file, text, text.length, text.length);
  for (const e of tileParser.errors) diagnostics.push(syntaxDiagnostic(e, file, text, endSpan));
  const builder = new AstBuilder(file, endSpan);
  const decls = builder.spec(cst);
  diagnostics.push(...builder.diagnostics);
  return { ast: { file, decls }, diagnostics };
}

export const MAX_NESTING = 150;
const PREFIX = new Set(["not", "!", "-", "if", "any", "all"]);

/** The first token past the nesting limit: open parentheses plus a run of prefix operators. */
function nestingLimitToken(tokens: readonly IToken[]): IToken | undefined {
  let parens = 0;
  let prefixRun = 0;
  for (const t of tokens) {
    if (t.image === "(") parens++;
    else if (t.image === ")") parens = Math.max(0, parens - 1);
    prefixRun = PREFIX.has(t.image) ? prefixRun + 1 : 0;
    if (parens + prefixRun > MAX_NESTING) return t;
  }
  return undefined;
}

// Mismatch and early-exit exceptions carry the last good token; the interface does not declare it.
function previousToken(e: IRecognitionException): IToken | undefined {
  return (e as { previousToken?: IToken }).previousToken;
}

function syntaxDiagnostic(e: IRecognitionException, file: string, text: string, endSpan: Span): Diagnostic {
  const tok = e.token;
  const atEnd = !tok || tok.tokenType === EOF || !Number.isFinite(tok.startOffset);
  let span: Span = endSpan;
  if (!atEnd) span = spanAt(file, text, tok.startOffset, (tok.endOffset ?? tok.startOffset) + 1);
  else if (previousToken(e) && Number.isFinite(previousToken(e)!.endOffset)) {
    const p = previousToken(e)!;
    span = spanAt(file, text, (p.endOffset as number) + 1, (p.endOffset as number) + 1);
  }
  const rule = e.context?.ruleStack?.[e.context.ruleStack.length - 1] ?? "spec";
  const hint = RULE_HINTS[rule] ?? EXPR_HINT;
  // chevrotain's messages already name the expected tokens (see errorMessages below).
  return error(e.message, span, hint);
}
