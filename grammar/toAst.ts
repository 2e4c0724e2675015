// CST → AST. Written defensively: with error recovery on, any child may be missing or a token may have
// been invented by the parser (no image, NaN offsets). Such places become `error` nodes — the parser
// already reported them — so this stage never throws on broken input.
import type { CstElement, CstNode, IToken } from "chevrotain";
import type {
  Arg,
  BinaryOp,
  Decl,
  Expr,
  KernelField,
  LayoutField,
  ModelField,
  Name,
  RangeAst,
} from "./ast.ts";
import { error, type Diagnostic, type Span } from "./diagnostics.ts";

const MAX_INT = 2 ** 31 - 1;

function isToken(e: CstElement | undefined): e is IToken {
  return e !== undefined && "image" in e;
}

function realToken(e: CstElement | undefined): IToken | undefined {
  if (!isToken(e) || e.isInsertedInRecovery || !Number.isFinite(e.startOffset)) return undefined;
  return e;
}

export class AstBuilder {
  readonly diagnostics: Diagnostic[] = [];

  constructor(
    private readonly file: string,
    private readonly fallback: Span,
  ) {}

  private tok(node: CstNode, name: string, i = 0): IToken | undefined {
    return realToken(node.children[name]?.[i]);
  }

  private allToks(node: CstNode, name: string): IToken[] {
    return (node.children[name] ?? []).map(realToken).filter((t): t is IToken => t !== undefined);
  }

  private sub(node: CstNode, name: string, i = 0): CstNode | undefined {
    const e = node.children[name]?.[i];
    return e && !isToken(e) ? e : undefined;
  }

  private subs(node: CstNode, name: string): CstNode[] {
    return (node.children[name] ?? []).filter((e): e is CstNode => !isToken(e));
  }

  tokenSpan(t: IToken): Span {
    return {
      file: this.file,
      start: t.startOffset,
      end: (t.endOffset ?? t.startOffset) + 1,
      line: t.startLine ?? 1,
      col: t.startColumn ?? 1,
    };
  }

  nodeSpan(n: CstNode | undefined): Span {
    const l = n?.location;
    if (!l || !Number.isFinite(l.startOffset) || !Number.isFinite(l.startLine ?? NaN)) return this.fallback;
    const end = Number.isFinite(l.endOffset ?? NaN) ? (l.endOffset as number) + 1 : l.startOffset + 1;
    return {
      file: this.file,
      start: l.startOffset,
      end,
      line: l.startLine as number,
      col: l.startColumn ?? 1,
    };
  }

  private name(t: IToken | undefined): Name | undefined {
    return t ? { name: t.image, span: this.tokenSpan(t) } : undefined;
  }

  private int(t: IToken | undefined): number | undefined {
    if (!t) return undefined;
    const v = Number(t.image);
    if (!Number.isSafeInteger(v) || v > MAX_INT) {
      this.diagnostics.push(
        error(`integer ${t.image} is too large`, this.tokenSpan(t), `integers in a spec must be below 2^31`),
      );
      return undefined;
    }
    return v;
  }

  private dims(t: IToken | undefined): number[] | undefined {
    if (!t) return undefined;
    const parts = t.image.split(/[x×]/).map((p) => Number(p.trim()));
    if (parts.some((p) => !Number.isSafeInteger(p) || p > MAX_INT)) {
      this.diagnostics.push(error(`shape ${t.image} has a number that is too large`, this.tokenSpan(t)));
      return undefined;
    }
    return parts;
  }

  spec(cst: CstNode): Decl[] {
    const decls: Decl[] = [];
    for (const item of this.subs(cst, "item")) {
      const d =
        this.layoutDecl(this.sub(item, "layoutDecl")) ??
        this.maskDecl(this.sub(item, "maskDecl")) ??
        this.kernelDecl(this.sub(item, "kernelDecl")) ??
        this.modelDecl(this.sub(item, "modelDecl"));
      if (d) decls.push(d);
    }
    return decls;
  }

  private layoutDecl(n: CstNode | undefined): Decl | undefined {
    const name = n && this.name(this.tok(n, "Identifier"));
    if (!n || !name) return undefined;
    const fields: LayoutField[] = [];
    for (const f of this.subs(n, "layoutField")) {
      const span = this.nodeSpan(f);
      if (this.tok(f, "Video")) {
        const dims = this.dims(this.tok(f, "Dims"));
        if (dims) fields.push({ field: "video", dims, span });
      } else if (this.tok(f, "Text")) {
        const count = this.int(this.tok(f, "Integer"));
        const position = this.tok(f, "After") ? "after" : "before";
        if (count !== undefined) fields.push({ field: "text", count, position, span });
      } else if (this.tok(f, "Dtype")) {
        const dtype = this.name(this.tok(f, "Identifier"));
        if (dtype) fields.push({ field: "dtype", dtype, span });
      } else {
        const value = this.int(this.tok(f, "Integer", 0) ?? this.tok(f, "Integer", 1));
        const which = this.tok(f, "Batch")
          ? "batch"
          : this.tok(f, "Heads")
            ? "heads"
            : this.tok(f, "KvHeads")
              ? "kv_heads"
              : this.tok(f, "HeadDim")
                ? "head_dim"
                : undefined;
        if (which && value !== undefined) fields.push({ field: which, value, span });
      }
    }
    return { kind: "layout", name, fields, span: this.nodeSpan(n) };
  }

  private maskDecl(n: CstNode | undefined): Decl | undefined {
    const name = n && this.name(this.tok(n, "Identifier"));
    if (!n || !name) return undefined;
    const params = this.allToks(n, "param").map((t) => ({ name: t.image, span: this.tokenSpan(t) }));
    return {
      kind: "mask",
      name,
      params,
      body: this.expression(this.sub(n, "expression")),
      span: this.nodeSpan(n),
    };
  }

  private kernelDecl(n: CstNode | undefined): Decl | undefined {
    const name = n && this.name(this.tok(n, "Identifier"));
    if (!n || !name) return undefined;
    const fields: KernelField[] = [];
    for (const f of this.subs(n, "kernelField")) {
      const span = this.nodeSpan(f);
      if (this.tok(f, "Layout")) {
        const layout = this.name(this.tok(f, "Identifier"));
        if (layout) fields.push({ field: "layout", layout, span });
      } else if (this.tok(f, "Mask")) {
        fields.push({ field: "mask", expr: this.expression(this.sub(f, "expression")), span });
      } else if (this.tok(f, "Block")) {
        const dims = this.dims(this.tok(f, "Dims"));
        if (dims) fields.push({ field: "block", dims, span });
      } else if (this.tok(f, "Targets")) {
        const targets = this.allToks(f, "target").map((t) => ({ name: t.image, span: this.tokenSpan(t) }));
        fields.push({ field: "targets", targets, span });
      }
    }
    return { kind: "kernel", name, fields, span: this.nodeSpan(n) };
  }

  private modelDecl(n: CstNode | undefined): Decl | undefined {
    const name = n && this.name(this.tok(n, "Identifier"));
    if (!n || !name) return undefined;
    const fields: ModelField[] = [];
    for (const f of this.subs(n, "modelField")) {
      const span = this.nodeSpan(f);
      const count = this.tok(f, "Layers") ? "layers" : this.tok(f, "Steps") ? "steps" : undefined;
      if (count) {
        const value = this.int(this.tok(f, "Integer"));
        if (value !== undefined) fields.push({ field: count, value, span });
        continue;
      }
      const layers = this.range(this.sub(f, "layerRange"));
      const kernel = this.name(this.tok(f, "Identifier"));
      const steps = this.tok(f, "Step") ? this.range(this.sub(f, "stepRange")) : undefined;
      if (!layers || !kernel || (this.tok(f, "Step") && !steps)) continue;
      fields.push({ field: "rule", layers, steps, kernel, span });
    }
    return { kind: "model", name, fields, span: this.nodeSpan(n) };
  }

  private range(n: CstNode | undefined): RangeAst | undefined {
    if (!n) return undefined;
    const span = this.nodeSpan(n);
    if (this.tok(n, "All")) return { kind: "all", span };
    const lo = this.int(this.tok(n, "lo"));
    if (lo === undefined) return undefined;
    const hasHi = (n.children["DotDot"] ?? []).length > 0;
    const hi = hasHi ? this.int(this.tok(n, "hi")) : lo;
    return hi === undefined ? undefined : { kind: "range", lo, hi, span };
  }

  expression(n: CstNode | undefined): Expr {
    if (!n) return { kind: "error", span: this.fallback };
    const span = this.nodeSpan(n);
    switch (n.name) {
      case "expression":
        return this.expression(this.sub(n, "orExpr"));
      case "ifExpr":
        return {
          kind: "if",
          cond: this.expression(this.sub(n, "cond")),
          then: this.expression(this.sub(n, "then")),
          else: this.expression(this.sub(n, "else")),
          span,
        };
      case "quantExpr": {
        const variable = this.name(this.tok(n, "Identifier"));
        if (!variable) return { kind: "error", span };
        return {
          kind: "quant",
          quantifier: this.tok(n, "All") ? "all" : "any",
          variable,
          lo: this.expression(this.sub(n, "lo")),
          hi: this.expression(this.sub(n, "hi")),
          body: this.expression(this.sub(n, "body")),
          span,
        };
      }
      case "orExpr":
      case "andExpr":
      case "comparison":
      case "additive":
      case "multiplicative":
        return this.chain(n, span);
      case "notExpr":
      case "unary": {
        const operand = this.expression(this.sub(n, "operand"));
        const op = this.tok(n, "op");
        if (!op) return operand;
        return { kind: n.name === "unary" ? "neg" : "not", operand, span };
      }
      case "postfix":
        return this.postfix(n, span);
      default:
        return { kind: "error", span };
    }
  }

  // Left-associative chains: operand (op operand)*.
  private chain(n: CstNode, span: Span): Expr {
    const operands = this.subs(n, "operand");
    const ops = (n.children["op"] ?? []).filter(isToken);
    let acc = this.expression(operands[0]);
    for (let i = 0; i < ops.length && i + 1 < operands.length; i++) {
      const opTok = ops[i]!;
      const right = this.expression(operands[i + 1]);
      const op = opImage(opTok.image);
      const opSpan = realToken(opTok) ? this.tokenSpan(opTok) : span;
      if (!op) return { kind: "error", span };
      acc = { kind: "binary", op, left: acc, right, opSpan, span: { ...acc.span, end: right.span.end } };
    }
    return acc;
  }

  private postfix(n: CstNode, span: Span): Expr {
    const p = this.sub(n, "primary");
    if (!p) return { kind: "error", span };
    let acc = this.primary(p);
    for (const m of this.subs(n, "member")) {
      const field = this.name(this.tok(m, "field"));
      if (!field) return { kind: "error", span };
      const callNode = this.sub(m, "callArgs");
      const args = callNode ? this.args(callNode) : undefined;
      acc = { kind: "member", object: acc, field, args, span: { ...acc.span, end: this.nodeSpan(m).end } };
    }
    return acc;
  }

  private primary(n: CstNode): Expr {
    const span = this.nodeSpan(n);
    const int = this.tok(n, "Integer");
    if (int) {
      const value = this.int(int);
      return value === undefined ? { kind: "error", span } : { kind: "int", value, span };
    }
    if (this.tok(n, "True")) return { kind: "bool", value: true, span };
    if (this.tok(n, "False")) return { kind: "bool", value: false, span };
    const parenthesized = this.sub(n, "expression");
    // A parenthesized expression spans its parentheses, so source slices of it stay balanced.
    if (parenthesized) return { ...this.expression(parenthesized), span };
    const inner = this.sub(n, "ifExpr") ?? this.sub(n, "quantExpr");
    if (inner) return this.expression(inner);
    const id = this.name(this.tok(n, "Identifier"));
    if (!id) return { kind: "error", span };
    const callNode = this.sub(n, "callArgs");
    if (!callNode) return { kind: "name", name: id.name, span: id.span };
    return { kind: "call", callee: id, args: this.args(callNode), span };
  }

  private args(n: CstNode): Arg[] {
    return (n.children["arg"] ?? []).map((a): Arg => {
      if (isToken(a)) {
        const dims = this.dims(realToken(a));
        const span = realToken(a) ? this.tokenSpan(a) : this.nodeSpan(n);
        return dims ? { kind: "dims", dims, span } : { kind: "error", span };
      }
      return this.expression(a);
    });
  }
}

function opImage(image: string): BinaryOp | undefined {
  switch (image) {
    case "or":
    case "||":
      return "or";
    case "and":
    case "&&":
      return "and";
    case "==":
    case "!=":
    case "<":
    case "<=":
    case ">":
    case ">=":
    case "+":
    case "-":
    case "*":
    case "/":
    case "%":
      return image;
    default:
      return undefined;
  }
}
