// One C-style renderer for the element mask, shared by every target; each target is a small table
// of spellings (tinygrad's renderer pattern). The mask becomes a function of two token indices that
// decodes only the coordinates the mask reads.
import type { TokenDecode } from "../compiler/lower.ts";
import { canonical, memoRenderer, type MaskExpr } from "../compiler/maskExpr.ts";

export interface CTarget {
  /** `int` / `i32` */
  readonly int: string;
  readonly bool: string;
  /** Declares an immutable local: (type, name, value) → statement. */
  readonly let: (type: string, name: string, value: string) => string;
  /** Function signature for (q, k) → bool. */
  readonly signature: (name: string) => string;
  readonly select: (c: string, a: string, b: string) => string;
  readonly min: string;
  readonly max: string;
  readonly abs: string;
  /** Helper definitions the rendered expressions call (floor division and modulo). */
  readonly helpers: string;
  /**
   * `x ∈ {constants in 0..63}` as one bit test, where the target has 64-bit integers: the Attention
   * Tile mask's `f == 0 || f == 2 || … || f == 22` becomes a shift and a mask instead of 12 compares.
   */
  readonly bitTest?: (x: string, bits: bigint) => string;
}

export const CUDA_C: CTarget = {
  int: "int",
  bool: "bool",
  let: (t, n, v) => `const ${t} ${n} = ${v};`,
  signature: (n) => `__device__ __forceinline__ bool ${n}(int q, int k)`,
  select: (c, a, b) => `(${c} ? ${a} : ${b})`,
  min: "min",
  max: "max",
  abs: "abs",
  helpers: `// Floor division and modulo by a positive constant (C's / and % truncate toward zero).
__device__ __forceinline__ int tilec_floordiv(int a, int b) { return a >= 0 ? a / b : -((b - 1 - a) / b); }
__device__ __forceinline__ int tilec_floormod(int a, int b) { return a - tilec_floordiv(a, b) * b; }
// Set membership of small integers as a bit test.
__device__ __forceinline__ bool tilec_in_set(int x, unsigned long long set) { return (unsigned)x < 64u && ((set >> x) & 1ull); }`,
  bitTest: (x, bits) => `tilec_in_set(${x}, 0x${bits.toString(16)}ull)`,
};

export const WGSL: CTarget = {
  int: "i32",
  bool: "bool",
  let: (t, n, v) => `let ${n}: ${t} = ${v};`,
  signature: (n) => `fn ${n}(q: i32, k: i32) -> bool`,
  select: (c, a, b) => `select(${b}, ${a}, ${c})`,
  min: "min",
  max: "max",
  abs: "abs",
  helpers: `// Floor division and modulo by a positive constant (WGSL's / and % truncate toward zero).
fn tilec_floordiv(a: i32, b: i32) -> i32 { if (a >= 0) { return a / b; } return -((b - 1 - a) / b); }
fn tilec_floormod(a: i32, b: i32) -> i32 { return a - tilec_floordiv(a, b) * b; }
// Set membership of small integers as a bit test over two 32-bit words (WGSL has no 64-bit ints).
fn tilec_in_set(x: i32, lo: u32, hi: u32) -> bool {
  if (x < 0 || x >= 64) { return false; }
  if (x < 32) { return ((lo >> u32(x)) & 1u) != 0u; }
  return ((hi >> u32(x - 32)) & 1u) != 0u;
}`,
  bitTest: (x, bits) => `tilec_in_set(${x}, ${bits & 0xffffffffn}u, ${bits >> 32n}u)`,
};

/** Renders `bool NAME(int q, int k)` for a mask. */
export function renderMaskFunction(name: string, mask: MaskExpr, decode: TokenDecode, t: CTarget): string {
  const lines: string[] = [];
  for (const side of ["q", "k"] as const) {
    const used = decode[side];
    if (used.size === 0) continue;
    const needVideo = used.has("frame") || used.has("row") || used.has("col") || used.has("text");
    if (!needVideo) continue;
    lines.push(t.let(t.int, `${side}_v`, decode.videoStart ? `${side} - ${decode.videoStart}` : side));
    lines.push(t.let(t.bool, `${side}_text`, `${side}_v < 0 || ${side}_v >= ${decode.videoTokens}`));
    if (used.has("frame"))
      lines.push(
        t.let(t.int, `${side}_frame`, t.select(`${side}_text`, "-1", `${side}_v / ${decode.frameTokens}`)),
      );
    if (used.has("row"))
      lines.push(
        t.let(
          t.int,
          `${side}_row`,
          t.select(`${side}_text`, "-1", `(${side}_v / ${decode.width}) % ${decode.height}`),
        ),
      );
    if (used.has("col"))
      lines.push(t.let(t.int, `${side}_col`, t.select(`${side}_text`, "-1", `${side}_v % ${decode.width}`)));
  }
  const body: string[] = [];
  let n = 0;
  const emit = memoRenderer<string>((x, emit) => {
    let v: string;
    switch (x.op) {
      case "int":
        v = String(x.value);
        break;
      case "bool":
        v = x.value ? "true" : "false";
        break;
      case "coord":
        v = x.coord === "index" ? x.side : `${x.side}_${x.coord}`;
        break;
      case "text":
        v = `${x.side}_text`;
        break;
      default: {
        const a = x.op === "or" && t.bitTest ? orWithSets(x.args, emit, t.bitTest) : x.args.map(emit);
        const expr = op(x.op, a, t);
        // Name shared subexpressions; inline the rest so the output reads like the spec.
        v = `(${expr})`;
        if (x.args.length > 2 || expr.length > 60) {
          const isBool = ["and", "or", "not", "eq", "ne", "lt", "le", "gt", "ge"].includes(x.op);
          const name = `t${n++}`;
          body.push(t.let(isBool ? t.bool : t.int, name, expr));
          v = name;
        }
      }
    }
    return v;
  });
  const result = emit(mask);
  return `${t.signature(name)} {\n${[...lines, ...body].map((l) => `  ${l}`).join("\n")}${lines.length + body.length ? "\n" : ""}  return ${result};\n}`;
}

/** Renders an `or`'s operands, folding `e == c` terms over one `e` (c in 0..63) into set tests. */
function orWithSets(
  args: readonly MaskExpr[],
  emit: (x: MaskExpr) => string,
  bitTest: (x: string, bits: bigint) => string,
): string[] {
  const sets = new Map<string, { e: MaskExpr; bits: bigint; count: number }>();
  const rest: MaskExpr[] = [];
  for (const a of args) {
    const m =
      a.op === "eq" ? (memberOf(a.args[0]!, a.args[1]!) ?? memberOf(a.args[1]!, a.args[0]!)) : undefined;
    if (!m) {
      rest.push(a);
      continue;
    }
    const key = canonical(m.e);
    const s = sets.get(key) ?? { e: m.e, bits: 0n, count: 0 };
    s.bits |= 1n << BigInt(m.c);
    s.count++;
    sets.set(key, s);
  }
  const out: string[] = [];
  for (const s of sets.values()) {
    if (s.count < 2) {
      // A single comparison reads better as itself.
      const c = Math.log2(Number(s.bits));
      out.push(`${emit(s.e)} == ${c}`);
    } else out.push(bitTest(emit(s.e), s.bits));
  }
  return [...out, ...rest.map(emit)];
}

function memberOf(e: MaskExpr, c: MaskExpr): { e: MaskExpr; c: number } | undefined {
  return c.op === "int" && c.value >= 0 && c.value < 64 && e.op !== "int" ? { e, c: c.value } : undefined;
}

function op(name: string, a: string[], t: CTarget): string {
  switch (name) {
    case "add":
      return `${a[0]} + ${a[1]}`;
    case "sub":
      return `${a[0]} - ${a[1]}`;
    case "mul":
      return `${a[0]} * ${a[1]}`;
    case "div":
      return `tilec_floordiv(${a[0]}, ${a[1]})`;
    case "mod":
      return `tilec_floormod(${a[0]}, ${a[1]})`;
    case "neg":
      return `-${a[0]}`;
    case "abs":
      return `${t.abs}(${a[0]})`;
    case "min":
      return `${t.min}(${a[0]}, ${a[1]})`;
    case "max":
      return `${t.max}(${a[0]}, ${a[1]})`;
    case "select":
      return t.select(a[0]!, a[1]!, a[2]!);
    case "and":
      return a.join(" && ");
    case "or":
      return a.join(" || ");
    case "not":
      return `!${a[0]}`;
    default: {
      const sym = { eq: "==", ne: "!=", lt: "<", le: "<=", gt: ">", ge: ">=" }[name];
      if (!sym) throw new Error(`cexpr: unknown op ${name}`);
      return `${a[0]} ${sym} ${a[1]}`;
    }
  }
}
