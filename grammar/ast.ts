// The spec's abstract syntax: discriminated unions, every node with its source span. Produced by
// toAst.ts from the CST; nodes the parser had to invent while recovering become `error` nodes, which
// later stages accept silently (their problem has already been reported).
import type { Span } from "./diagnostics.ts";

export interface Name {
  readonly name: string;
  readonly span: Span;
}

export type BinaryOp = "or" | "and" | "==" | "!=" | "<" | "<=" | ">" | ">=" | "+" | "-" | "*" | "/" | "%";

export type Expr =
  | { readonly kind: "int"; readonly value: number; readonly span: Span }
  | { readonly kind: "bool"; readonly value: boolean; readonly span: Span }
  | { readonly kind: "name"; readonly name: string; readonly span: Span }
  | { readonly kind: "call"; readonly callee: Name; readonly args: readonly Arg[]; readonly span: Span }
  | {
      readonly kind: "member";
      readonly object: Expr;
      readonly field: Name;
      /** `q.tile(6x8x8)` carries arguments; plain `q.frame` does not. */
      readonly args?: readonly Arg[];
      readonly span: Span;
    }
  | { readonly kind: "neg" | "not"; readonly operand: Expr; readonly span: Span }
  | {
      readonly kind: "binary";
      readonly op: BinaryOp;
      readonly left: Expr;
      readonly right: Expr;
      readonly opSpan: Span;
      readonly span: Span;
    }
  | {
      readonly kind: "if";
      readonly cond: Expr;
      readonly then: Expr;
      readonly else: Expr;
      readonly span: Span;
    }
  | {
      readonly kind: "quant";
      readonly quantifier: "any" | "all";
      readonly variable: Name;
      readonly lo: Expr;
      readonly hi: Expr;
      readonly body: Expr;
      readonly span: Span;
    }
  | { readonly kind: "error"; readonly span: Span };

/** A call argument: an expression or a literal shape such as `6x8x8`. */
export type Arg = Expr | { readonly kind: "dims"; readonly dims: readonly number[]; readonly span: Span };

export type LayoutField =
  | { readonly field: "video"; readonly dims: readonly number[]; readonly span: Span }
  | {
      readonly field: "text";
      readonly count: number;
      readonly position: "before" | "after";
      readonly span: Span;
    }
  | {
      readonly field: "batch" | "heads" | "kv_heads" | "head_dim";
      readonly value: number;
      readonly span: Span;
    }
  | { readonly field: "dtype"; readonly dtype: Name; readonly span: Span };

export type KernelField =
  | { readonly field: "layout"; readonly layout: Name; readonly span: Span }
  | { readonly field: "mask"; readonly expr: Expr; readonly span: Span }
  | { readonly field: "block"; readonly dims: readonly number[]; readonly span: Span }
  | { readonly field: "targets"; readonly targets: readonly Name[]; readonly span: Span };

/** Inclusive index range; `all` is the whole axis. */
export type RangeAst =
  | { readonly kind: "all"; readonly span: Span }
  | { readonly kind: "range"; readonly lo: number; readonly hi: number; readonly span: Span };

export type ModelField =
  | { readonly field: "layers" | "steps"; readonly value: number; readonly span: Span }
  | {
      readonly field: "rule";
      readonly steps?: RangeAst;
      readonly layers: RangeAst;
      readonly kernel: Name;
      readonly span: Span;
    };

export type Decl =
  | {
      readonly kind: "layout";
      readonly name: Name;
      readonly fields: readonly LayoutField[];
      readonly span: Span;
    }
  | {
      readonly kind: "mask";
      readonly name: Name;
      readonly params: readonly Name[];
      readonly body: Expr;
      readonly span: Span;
    }
  | {
      readonly kind: "kernel";
      readonly name: Name;
      readonly fields: readonly KernelField[];
      readonly span: Span;
    }
  | {
      readonly kind: "model";
      readonly name: Name;
      readonly fields: readonly ModelField[];
      readonly span: Span;
    };

export interface SpecAst {
  readonly file: string;
  readonly decls: readonly Decl[];
}
