// AST expression → MaskExpr: resolves names, checks types, inlines mask calls, expands quantifiers and
// folds constants against one layout. The same walk runs in "generic" mode (no layout, parameters
// unknown) to check every mask declaration once, even masks no kernel uses.
import type { Arg, Expr, Name } from "../grammar/ast.ts";
import { error, type Diagnostic, type Span } from "../grammar/diagnostics.ts";
import { LAYOUT_CONSTANT_NAMES, layoutConstants, type Layout } from "./layout.ts";
import * as M from "./maskExpr.ts";
import type { MaskExpr, Side } from "./maskExpr.ts";

export interface MaskDef {
  readonly name: Name;
  readonly params: readonly Name[];
  readonly body: Expr;
  readonly span: Span;
}

/** Values during elaboration: expressions, or the token / tile views that only `.field` may follow. */
type Value =
  | { readonly kind: "expr"; readonly e: MaskExpr }
  | { readonly kind: "token"; readonly side: Side }
  | { readonly kind: "tile"; readonly side: Side; readonly shape: readonly MaskExpr[] };

interface Env {
  readonly vars: ReadonlyMap<string, MaskExpr>;
  /** Undefined in generic mode. */
  readonly layout?: Layout;
  readonly callStack: readonly string[];
}

const TOKEN_FIELDS = ["frame", "row", "col", "index", "text", "video", "tile"];
const TILE_FIELDS = ["frame", "row", "col"];
const BUILTINS: Record<string, [number, number]> = { abs: [1, 1], min: [2, 16], max: [2, 16], clamp: [3, 3] };
const MAX_QUANTIFIER_RANGE = 4096;
const MAX_NODES = 200_000;

// Stand-in for values unknown in generic mode: an int that is not a constant.
const UNKNOWN_INT: MaskExpr = M.coord("q", "index");

export class Elaborator {
  private nodes = 0;

  constructor(
    private readonly masks: ReadonlyMap<string, MaskDef>,
    private readonly diagnostics: Diagnostic[],
  ) {}

  /** Elaborates a mask body for a layout (or generically) and requires a boolean result. */
  maskBody(
    expr: Expr,
    layout: Layout | undefined,
    vars: ReadonlyMap<string, MaskExpr>,
    what: string,
  ): MaskExpr | undefined {
    this.nodes = 0;
    const v = this.expr(expr, { vars, layout, callStack: [] });
    if (!v) return undefined;
    const e = this.asExpr(v, expr.span);
    if (!e) return undefined;
    if (M.typeOf(e) !== "bool") {
      this.report(
        `${what} must be a boolean expression, but this is an integer`,
        expr.span,
        "compare it, e.g. `q.frame == k.frame`",
      );
      return undefined;
    }
    return e;
  }

  /** Checks a mask declaration without a layout: names, types, arity. */
  checkGeneric(def: MaskDef): void {
    const vars = new Map(def.params.map((p) => [p.name, UNKNOWN_INT] as const));
    this.maskBody(def.body, undefined, vars, `mask '${def.name.name}'`);
  }

  private report(message: string, span: Span, hint?: string): undefined {
    this.diagnostics.push(error(message, span, hint));
    return undefined;
  }

  private asExpr(v: Value, span: Span): MaskExpr | undefined {
    if (v.kind === "expr") return v.e;
    if (v.kind === "token")
      return this.report(
        `'${v.side}' is a token, not a value`,
        span,
        `use one of its coordinates: ${TOKEN_FIELDS.map((f) => `${v.side}.${f}`).join(", ")}`,
      );
    return this.report(
      `a tile view is not a value`,
      span,
      `use .frame, .row or .col, e.g. ${v.side}.tile(6x8x8).frame`,
    );
  }

  private typed(v: Value | undefined, span: Span, want: M.ExprType, context: string): MaskExpr | undefined {
    if (!v) return undefined;
    const e = this.asExpr(v, span);
    if (!e) return undefined;
    const got = M.typeOf(e);
    if (got === want) return e;
    const hint =
      want === "bool"
        ? "compare the integer, e.g. `x == 0`"
        : "use an integer expression here; booleans only combine with and/or/not";
    return this.report(
      `${context} needs ${want === "bool" ? "a boolean" : "an integer"}, but this is ${got === "bool" ? "a boolean" : "an integer"}`,
      span,
      hint,
    );
  }

  private constant(e: MaskExpr, span: Span, env: Env, what: string): number | undefined | "unknown" {
    const v = M.constValue(e);
    if (typeof v === "number") return v;
    if (!env.layout) return "unknown"; // generic mode: parameters are not known yet
    return this.report(
      `${what} must be a constant`,
      span,
      "it may use numbers, mask parameters and layout constants (frames, height, width, …), not token coordinates",
    );
  }

  private expr(x: Expr, env: Env): Value | undefined {
    if (++this.nodes > MAX_NODES) {
      if (this.nodes === MAX_NODES + 1)
        this.report(
          "mask expression is too large after expansion",
          x.span,
          "reduce quantifier ranges or nesting",
        );
      return undefined;
    }
    const ex = (e: MaskExpr | undefined): Value | undefined => (e ? { kind: "expr", e } : undefined);
    switch (x.kind) {
      case "error":
        return undefined;
      case "int":
        return ex(M.int(x.value));
      case "bool":
        return ex(M.bool(x.value));
      case "name":
        return this.name(x.name, x.span, env);
      case "call":
        return this.call(x.callee, x.args, x.span, env);
      case "member":
        return this.member(x, env);
      case "neg":
        return ex(mapDefined(this.typed(this.expr(x.operand, env), x.operand.span, "int", "'-'"), M.neg));
      case "not":
        return ex(mapDefined(this.typed(this.expr(x.operand, env), x.operand.span, "bool", "'not'"), M.not));
      case "if": {
        const c = this.typed(this.expr(x.cond, env), x.cond.span, "bool", "the condition of 'if'");
        const a = this.expr(x.then, env);
        const b = this.expr(x.else, env);
        const ae = a && this.asExpr(a, x.then.span);
        const be = b && this.asExpr(b, x.else.span);
        if (!c || !ae || !be) return undefined;
        if (M.typeOf(ae) !== M.typeOf(be))
          return this.report(
            "the two branches of 'if' have different types",
            x.span,
            "make both integers or both booleans",
          );
        return ex(M.select(c, ae, be));
      }
      case "quant":
        return ex(this.quantifier(x, env));
      case "binary":
        return ex(this.binary(x, env));
    }
  }

  private binary(x: Extract<Expr, { kind: "binary" }>, env: Env): MaskExpr | undefined {
    const ctx = `'${x.op}'`;
    if (x.op === "and" || x.op === "or") {
      const a = this.typed(this.expr(x.left, env), x.left.span, "bool", ctx);
      const b = this.typed(this.expr(x.right, env), x.right.span, "bool", ctx);
      return a && b ? (x.op === "and" ? M.and(a, b) : M.or(a, b)) : undefined;
    }
    const a = this.typed(this.expr(x.left, env), x.left.span, "int", ctx);
    const b = this.typed(this.expr(x.right, env), x.right.span, "int", ctx);
    if (!a || !b) return undefined;
    switch (x.op) {
      case "+":
        return M.binary("add", a, b);
      case "-":
        return M.binary("sub", a, b);
      case "*":
        return M.binary("mul", a, b);
      case "/":
      case "%": {
        const d = this.constant(b, x.right.span, env, `the divisor of '${x.op}'`);
        if (d === undefined) return undefined;
        if (d !== "unknown" && d <= 0)
          return this.report(
            `the divisor of '${x.op}' must be positive, but it is ${d}`,
            x.right.span,
            "divide by a positive number such as a tile size",
          );
        return M.binary(x.op === "/" ? "div" : "mod", a, b);
      }
      default: {
        const op = ({ "==": "eq", "!=": "ne", "<": "lt", "<=": "le", ">": "gt", ">=": "ge" } as const)[x.op];
        return M.compare(op, a, b);
      }
    }
  }

  private quantifier(x: Extract<Expr, { kind: "quant" }>, env: Env): MaskExpr | undefined {
    const lo = this.typed(this.expr(x.lo, env), x.lo.span, "int", "a quantifier bound");
    const hi = this.typed(this.expr(x.hi, env), x.hi.span, "int", "a quantifier bound");
    if (!lo || !hi) return undefined;
    const l = this.constant(lo, x.lo.span, env, "a quantifier bound");
    const h = this.constant(hi, x.hi.span, env, "a quantifier bound");
    if (l === undefined || h === undefined) return undefined;
    const bodyAt = (value: MaskExpr) =>
      this.typed(
        this.expr(x.body, { ...env, vars: new Map([...env.vars, [x.variable.name, value]]) }),
        x.body.span,
        "bool",
        `'${x.quantifier}'`,
      );
    if (l === "unknown" || h === "unknown") return bodyAt(UNKNOWN_INT); // generic mode: check the body once
    if (h - l + 1 > MAX_QUANTIFIER_RANGE)
      return this.report(
        `quantifier range ${l} .. ${h} has ${h - l + 1} values, more than ${MAX_QUANTIFIER_RANGE}`,
        x.span,
        "use a smaller range or a closed-form expression",
      );
    const parts: MaskExpr[] = [];
    for (let i = l; i <= h; i++) {
      const b = bodyAt(M.int(i));
      if (!b) return undefined;
      parts.push(b);
    }
    return x.quantifier === "any" ? M.or(...parts) : M.and(...parts);
  }

  private name(name: string, span: Span, env: Env): Value | undefined {
    if (name === "q" || name === "k") {
      const bound = env.vars.get(name);
      if (bound) return { kind: "expr", e: bound };
      return { kind: "token", side: name };
    }
    const bound = env.vars.get(name);
    if (bound) return { kind: "expr", e: bound };
    if (LAYOUT_CONSTANT_NAMES.includes(name)) {
      const value = env.layout ? layoutConstants(env.layout)[name]! : undefined;
      return { kind: "expr", e: value === undefined ? UNKNOWN_INT : M.int(value) };
    }
    if (this.masks.has(name)) return this.call({ name, span }, [], span, env);
    if (name in BUILTINS)
      return this.report(
        `'${name}' is a function`,
        span,
        `call it, e.g. ${name}(x${BUILTINS[name]![0] > 1 ? ", y" : ""})`,
      );
    return this.report(`unknown name '${name}'`, span, this.suggest(name, env));
  }

  private suggest(name: string, env: Env): string {
    const candidates = [
      ...env.vars.keys(),
      ...LAYOUT_CONSTANT_NAMES,
      ...this.masks.keys(),
      ...Object.keys(BUILTINS),
      "q",
      "k",
    ];
    const close = candidates.filter((c) => editDistance(c, name) <= Math.max(1, Math.floor(name.length / 3)));
    const known = `names here: parameters (${[...env.vars.keys()].join(", ") || "none"}), layout constants (${LAYOUT_CONSTANT_NAMES.join(", ")}), masks and q/k`;
    return close.length ? `did you mean ${close.map((c) => `'${c}'`).join(" or ")}? ${known}` : known;
  }

  private call(callee: Name, args: readonly Arg[], span: Span, env: Env): Value | undefined {
    const values: MaskExpr[] = [];
    let ok = true;
    for (const a of args) {
      if (a.kind === "dims") {
        this.report(
          "a shape is only allowed in q.tile(…) / k.tile(…)",
          a.span,
          "pass the sizes as separate numbers",
        );
        ok = false;
        continue;
      }
      const v = this.typed(this.expr(a, env), a.span, "int", `an argument of '${callee.name}'`);
      if (v) values.push(v);
      else ok = false;
    }
    const builtin = BUILTINS[callee.name];
    if (builtin) {
      const [min, max] = builtin;
      if (args.length < min || args.length > max)
        return this.report(
          `'${callee.name}' takes ${min === max ? min : `${min} to ${max}`} argument${max > 1 ? "s" : ""}, but ${args.length} were given`,
          span,
        );
      if (!ok) return undefined;
      return { kind: "expr", e: applyBuiltin(callee.name, values) };
    }
    const def = this.masks.get(callee.name);
    if (!def)
      return this.report(`unknown mask '${callee.name}'`, callee.span, this.suggest(callee.name, env));
    if (args.length !== def.params.length) {
      const sig = def.params.length ? ` (${def.params.map((p) => p.name).join(", ")})` : " (no parameters)";
      return this.report(
        `mask '${def.name.name}' takes ${def.params.length} argument${def.params.length === 1 ? "" : "s"}${sig}, but ${args.length} ${args.length === 1 ? "was" : "were"} given`,
        span,
      );
    }
    if (!ok) return undefined;
    if (env.callStack.includes(def.name.name))
      return this.report(
        `mask '${def.name.name}' calls itself (${[...env.callStack, def.name.name].join(" → ")})`,
        span,
        "masks cannot be recursive; use a quantifier (`any i in a .. b: …`) instead",
      );
    const vars = new Map(def.params.map((p, i) => [p.name, values[i]!] as const));
    const body = this.expr(def.body, {
      vars,
      layout: env.layout,
      callStack: [...env.callStack, def.name.name],
    });
    if (!body) return undefined;
    const e = this.typed(body, def.body.span, "bool", `mask '${def.name.name}'`);
    return e ? { kind: "expr", e } : undefined;
  }

  private member(x: Extract<Expr, { kind: "member" }>, env: Env): Value | undefined {
    // `k.frame` is always the key token, even inside `mask tile(k) = …` where bare `k` is the parameter.
    const o = x.object;
    const obj: Value | undefined =
      o.kind === "name" && (o.name === "q" || o.name === "k")
        ? { kind: "token", side: o.name }
        : this.expr(o, env);
    if (!obj) return undefined;
    const field = x.field.name;
    if (obj.kind === "expr")
      return this.report(
        `'.${field}' needs a token (q or k) on its left`,
        x.field.span,
        "write q.frame, k.row, q.tile(6x8x8).col, …",
      );
    if (obj.kind === "tile") {
      if (x.args) return this.report(`'.${field}' takes no arguments`, x.field.span);
      const axis = TILE_FIELDS.indexOf(field);
      if (axis < 0)
        return this.report(
          `a tile has no field '${field}'`,
          x.field.span,
          "tile fields are frame, row and col",
        );
      return { kind: "expr", e: M.binary("div", M.coord(obj.side, field as M.Coord), obj.shape[axis]!) };
    }
    const side = obj.side;
    if (field === "tile") return this.tileView(side, x, env);
    if (x.args) return this.report(`'${side}.${field}' takes no arguments`, x.field.span);
    switch (field) {
      case "frame":
      case "row":
      case "col":
      case "index":
        return { kind: "expr", e: M.coord(side, field) };
      case "text":
        return { kind: "expr", e: M.isText(side) };
      case "video":
        return { kind: "expr", e: M.not(M.isText(side)) };
      default:
        return this.report(
          `tokens have no field '${field}'`,
          x.field.span,
          `token fields are ${TOKEN_FIELDS.join(", ")}`,
        );
    }
  }

  private tileView(side: Side, x: Extract<Expr, { kind: "member" }>, env: Env): Value | undefined {
    const args = x.args ?? [];
    let sizes: { e: MaskExpr; span: Span }[] = [];
    if (args.length === 1 && args[0]!.kind === "dims")
      sizes = args[0]!.dims.map((d) => ({ e: M.int(d), span: args[0]!.span }));
    else {
      for (const a of args) {
        if (a.kind === "dims")
          return this.report("write the tile shape either as 6x8x8 or as 6, 8, 8", a.span);
        const v = this.typed(this.expr(a, env), a.span, "int", "a tile size");
        if (!v) return undefined;
        sizes.push({ e: v, span: a.span });
      }
    }
    if (sizes.length !== 3)
      return this.report(
        `'${side}.tile' needs a shape of 3 sizes (frames × rows × cols), but got ${sizes.length}`,
        x.span,
        `e.g. ${side}.tile(6x8x8).frame`,
      );
    for (const s of sizes) {
      const c = this.constant(s.e, s.span, env, "a tile size");
      if (c === undefined) return undefined;
      if (c !== "unknown" && c <= 0)
        return this.report(`tile sizes must be positive, but one is ${c}`, s.span);
    }
    return { kind: "tile", side, shape: sizes.map((s) => s.e) };
  }
}

function applyBuiltin(name: string, v: MaskExpr[]): MaskExpr {
  switch (name) {
    case "abs":
      return M.abs(v[0]!);
    case "min":
      return v.reduce((a, b) => M.binary("min", a, b));
    case "max":
      return v.reduce((a, b) => M.binary("max", a, b));
    default: // clamp(x, lo, hi) = max(lo, min(x, hi))
      return M.binary("max", v[1]!, M.binary("min", v[0]!, v[2]!));
  }
}

function mapDefined<T, U>(v: T | undefined, f: (x: T) => U): U | undefined {
  return v === undefined ? undefined : f(v);
}

export function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return row[b.length]!;
}
