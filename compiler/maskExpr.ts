// MaskExpr: the checked, layout-bound mask — a small typed expression over the coordinates of a query
// token `q` and a key token `k`. Everything the spec wrote (parameters, user masks, quantifiers, layout
// constants) has been inlined and folded away; what is left is what a kernel evaluates per element.
//
// Token coordinates: `index` is the position in the sequence; for video tokens frame/row/col are the
// 3D coordinates (row-major: frame, then row, then column); text tokens have frame = row = col = -1 and
// `text` true. Integer `/` and `%` are floor division and modulo (Python semantics), always by a
// positive constant — which is what keeps interval evaluation exact and kernels cheap.
import { sha256Hex } from "./hash.ts";

export type Side = "q" | "k";
export type Coord = "frame" | "row" | "col" | "index";

export type IntOp = "add" | "sub" | "mul" | "div" | "mod" | "neg" | "abs" | "min" | "max" | "select";
export type BoolOp = "and" | "or" | "not" | "eq" | "ne" | "lt" | "le" | "gt" | "ge";

export type MaskExpr =
  | { readonly op: "int"; readonly value: number }
  | { readonly op: "bool"; readonly value: boolean }
  | { readonly op: "coord"; readonly side: Side; readonly coord: Coord }
  | { readonly op: "text"; readonly side: Side }
  | { readonly op: IntOp | BoolOp; readonly args: readonly MaskExpr[] };

export type ExprType = "int" | "bool";

const BOOL_OPS = new Set<string>(["bool", "text", "and", "or", "not", "eq", "ne", "lt", "le", "gt", "ge"]);

export function typeOf(e: MaskExpr): ExprType {
  if (e.op === "select") return typeOf((e as { args: readonly MaskExpr[] }).args[1]!);
  return BOOL_OPS.has(e.op) ? "bool" : "int";
}

// ---- smart constructors: fold constants, flatten and/or, drop duplicates --------------------------

export const TRUE: MaskExpr = { op: "bool", value: true };
export const FALSE: MaskExpr = { op: "bool", value: false };
export const int = (value: number): MaskExpr => ({ op: "int", value });
export const bool = (value: boolean): MaskExpr => (value ? TRUE : FALSE);
export const coord = (side: Side, c: Coord): MaskExpr => ({ op: "coord", side, coord: c });
export const isText = (side: Side): MaskExpr => ({ op: "text", side });

export function constValue(e: MaskExpr): number | boolean | undefined {
  return e.op === "int" || e.op === "bool" ? e.value : undefined;
}

function args(e: MaskExpr): readonly MaskExpr[] {
  return "args" in e ? e.args : [];
}

export function floorDiv(a: number, b: number): number {
  return Math.floor(a / b);
}

export function floorMod(a: number, b: number): number {
  return ((a % b) + b) % b;
}

function junction(op: "and" | "or", parts: readonly MaskExpr[]): MaskExpr {
  const absorbing = op === "and" ? false : true;
  const flat: MaskExpr[] = [];
  const seen = new Set<string>();
  for (const p of parts) {
    for (const x of p.op === op ? args(p) : [p]) {
      const v = constValue(x);
      if (v === absorbing) return bool(absorbing);
      if (v === !absorbing) continue;
      const key = canonical(x);
      if (!seen.has(key)) {
        seen.add(key);
        flat.push(x);
      }
    }
  }
  if (flat.length === 0) return bool(!absorbing);
  if (flat.length === 1) return flat[0]!;
  return { op, args: flat };
}

export const and = (...parts: MaskExpr[]): MaskExpr => junction("and", parts);
export const or = (...parts: MaskExpr[]): MaskExpr => junction("or", parts);

export function not(a: MaskExpr): MaskExpr {
  const v = constValue(a);
  if (typeof v === "boolean") return bool(!v);
  if (a.op === "not") return args(a)[0]!;
  return { op: "not", args: [a] };
}

const ARITH: Record<string, (x: number, y: number) => number> = {
  add: (x, y) => x + y,
  sub: (x, y) => x - y,
  mul: (x, y) => x * y,
  div: floorDiv,
  mod: floorMod,
  min: Math.min,
  max: Math.max,
};

const COMPARE: Record<string, (x: number, y: number) => boolean> = {
  eq: (x, y) => x === y,
  ne: (x, y) => x !== y,
  lt: (x, y) => x < y,
  le: (x, y) => x <= y,
  gt: (x, y) => x > y,
  ge: (x, y) => x >= y,
};

export function binary(
  op: "add" | "sub" | "mul" | "div" | "mod" | "min" | "max",
  a: MaskExpr,
  b: MaskExpr,
): MaskExpr {
  const x = constValue(a);
  const y = constValue(b);
  if (typeof x === "number" && typeof y === "number") return int(ARITH[op]!(x, y));
  if (op === "add" && y === 0) return a;
  if (op === "add" && x === 0) return b;
  if (op === "sub" && y === 0) return a;
  if (op === "mul" && y === 1) return a;
  if (op === "mul" && x === 1) return b;
  if (op === "div" && y === 1) return a;
  if (op === "mod" && y === 1) return int(0);
  return { op, args: [a, b] };
}

export function compare(op: "eq" | "ne" | "lt" | "le" | "gt" | "ge", a: MaskExpr, b: MaskExpr): MaskExpr {
  const x = constValue(a);
  const y = constValue(b);
  if (typeof x === "number" && typeof y === "number") return bool(COMPARE[op]!(x, y));
  return { op, args: [a, b] };
}

export function neg(a: MaskExpr): MaskExpr {
  const x = constValue(a);
  return typeof x === "number" ? int(-x) : { op: "neg", args: [a] };
}

export function abs(a: MaskExpr): MaskExpr {
  const x = constValue(a);
  return typeof x === "number" ? int(Math.abs(x)) : { op: "abs", args: [a] };
}

export function select(c: MaskExpr, a: MaskExpr, b: MaskExpr): MaskExpr {
  const v = constValue(c);
  if (typeof v === "boolean") return v ? a : b;
  if (canonical(a) === canonical(b)) return a;
  if (typeOf(a) === "bool") return or(and(c, a), and(not(c), b)); // keeps boolean logic in and/or form
  return { op: "select", args: [c, a, b] };
}

// ---- canonical form and hash ------------------------------------------------------------------------

const COMMUTATIVE = new Set(["and", "or", "add", "mul", "min", "max", "eq", "ne"]);
const canonicalCache = new WeakMap<MaskExpr, string>();

/**
 * A canonical S-expression: commutative operands sorted, so `a and b` and `b and a` print (and hash)
 * the same. Used for caching and for deduplication in the constructors.
 */
export function canonical(e: MaskExpr): string {
  const hit = canonicalCache.get(e);
  if (hit !== undefined) return hit;
  let s: string;
  switch (e.op) {
    case "int":
    case "bool":
      s = String(e.value);
      break;
    case "coord":
      s = `${e.side}.${e.coord}`;
      break;
    case "text":
      s = `${e.side}.text`;
      break;
    default: {
      const parts = e.args.map(canonical);
      if (COMMUTATIVE.has(e.op)) parts.sort();
      s = `(${e.op} ${parts.join(" ")})`;
    }
  }
  canonicalCache.set(e, s);
  return s;
}

export function maskHash(e: MaskExpr): string {
  return sha256Hex(canonical(e));
}

/** Which coordinates of each side the mask reads: the planner only distinguishes blocks by these. */
export function usedCoords(e: MaskExpr): { q: Set<Coord | "text">; k: Set<Coord | "text"> } {
  const used = { q: new Set<Coord | "text">(), k: new Set<Coord | "text">() };
  const walk = (x: MaskExpr): void => {
    if (x.op === "coord") used[x.side].add(x.coord);
    else if (x.op === "text") used[x.side].add("text");
    else args(x).forEach(walk);
  };
  walk(e);
  return used;
}

/**
 * A renderer over the expression DAG that handles each shared node once (code generators name a
 * node's value on first use and refer to it after): `render` gets the node and this same memoized
 * renderer for its operands.
 */
export function memoRenderer<T>(render: (x: MaskExpr, sub: (y: MaskExpr) => T) => T): (x: MaskExpr) => T {
  const memo = new Map<MaskExpr, T>();
  const sub = (x: MaskExpr): T => {
    if (memo.has(x)) return memo.get(x)!;
    const v = render(x, sub);
    memo.set(x, v);
    return v;
  };
  return sub;
}

export function nodeCount(e: MaskExpr): number {
  let n = 1;
  for (const a of args(e)) n += nodeCount(a);
  return n;
}

// ---- readable infix print (for headers, plans and error messages) ------------------------------------

const INFIX: Record<string, [string, number]> = {
  or: ["or", 1],
  and: ["and", 2],
  eq: ["==", 4],
  ne: ["!=", 4],
  lt: ["<", 4],
  le: ["<=", 4],
  gt: [">", 4],
  ge: [">=", 4],
  add: ["+", 5],
  sub: ["-", 5],
  mul: ["*", 6],
  div: ["/", 6],
  mod: ["%", 6],
};

export function show(e: MaskExpr, parent = 0): string {
  switch (e.op) {
    case "int":
    case "bool":
      return String(e.value);
    case "coord":
      return `${e.side}.${e.coord}`;
    case "text":
      return `${e.side}.text`;
    case "not":
      return wrap(`not ${show(e.args[0]!, 3)}`, 3, parent);
    case "neg":
      return `-${show(e.args[0]!, 7)}`;
    case "abs":
    case "min":
    case "max":
      return `${e.op}(${e.args.map((a) => show(a)).join(", ")})`;
    case "select":
      return wrap(`if ${show(e.args[0]!)} then ${show(e.args[1]!)} else ${show(e.args[2]!)}`, 0.5, parent);
    default: {
      const [sym, prec] = INFIX[e.op]!;
      // Left-associative: the right operand of a non-associative op needs parentheses at equal precedence.
      const parts = e.args.map((a, i) =>
        show(a, i === 0 || e.op === "and" || e.op === "or" ? prec : prec + 0.5),
      );
      return wrap(parts.join(` ${sym} `), prec, parent);
    }
  }
}

function wrap(s: string, prec: number, parent: number): string {
  return prec < parent ? `(${s})` : s;
}
