// MaskExpr → JavaScript functions, by rendering source text (a tiny backend of its own): one for
// evaluating the mask at a point (the oracle, the reference, witness search) and one for evaluating it
// over coordinate intervals (the symbolic block classifier). Generated code is straight-line, so V8
// compiles it to a few dozen machine instructions — thousands of times faster than walking the tree.
import { floorDiv, floorMod, memoRenderer, type MaskExpr } from "./maskExpr.ts";

/** Point inputs, in this order: q.frame, q.row, q.col, q.index, q.text (0/1), then the same for k. */
export type PointFn = (p: Int32Array | Float64Array | number[]) => boolean;

/**
 * Interval inputs: lo/hi pairs for each of the 10 point inputs (20 numbers). The result is written to
 * out[0] (lo) and out[1] (hi); booleans are 0/1, so [0,1] means "sometimes true".
 */
export type IntervalFn = (iv: Float64Array, out: Float64Array) => void;

const SLOT: Record<string, number> = { frame: 0, row: 1, col: 2, index: 3, text: 4 };

function slot(side: "q" | "k", field: string): number {
  return (side === "q" ? 0 : 5) + SLOT[field]!;
}

const pointCache = new WeakMap<MaskExpr, PointFn>();
const intervalCache = new WeakMap<MaskExpr, IntervalFn>();

export function compilePoint(e: MaskExpr): PointFn {
  const hit = pointCache.get(e);
  if (hit) return hit;
  const lines: string[] = [];
  let n = 0;
  const emit = memoRenderer<string>((x, emit) => {
    let v: string;
    switch (x.op) {
      case "int":
        v = String(x.value);
        break;
      case "bool":
        v = x.value ? "1" : "0";
        break;
      case "coord":
        v = `p[${slot(x.side, x.coord)}]`;
        break;
      case "text":
        v = `p[${slot(x.side, "text")}]`;
        break;
      default: {
        const a = x.args.map(emit);
        const expr = pointOp(x.op, a);
        v = `t${n++}`;
        lines.push(`const ${v} = ${expr};`);
      }
    }
    return v;
  });
  const result = emit(e);
  const fn = new Function(
    "floorDiv",
    "floorMod",
    `return function mask(p) {\n${lines.join("\n")}\nreturn ${result} !== 0; }`,
  )(floorDiv, floorMod) as PointFn;
  pointCache.set(e, fn);
  return fn;
}

function pointOp(op: string, a: string[]): string {
  switch (op) {
    case "add":
      return `${a[0]} + ${a[1]}`;
    case "sub":
      return `${a[0]} - ${a[1]}`;
    case "mul":
      return `${a[0]} * ${a[1]}`;
    case "div":
      return `floorDiv(${a[0]}, ${a[1]})`;
    case "mod":
      return `floorMod(${a[0]}, ${a[1]})`;
    case "neg":
      return `-${a[0]}`;
    case "abs":
      return `Math.abs(${a[0]})`;
    case "min":
      return `Math.min(${a[0]}, ${a[1]})`;
    case "max":
      return `Math.max(${a[0]}, ${a[1]})`;
    case "select":
      return `(${a[0]} !== 0 ? ${a[1]} : ${a[2]})`;
    case "and":
      return a.map((x) => `${x} !== 0`).join(" && ") + " ? 1 : 0";
    case "or":
      return "(" + a.map((x) => `${x} !== 0`).join(" || ") + ") ? 1 : 0";
    case "not":
      return `${a[0]} !== 0 ? 0 : 1`;
    default: {
      const sym = { eq: "===", ne: "!==", lt: "<", le: "<=", gt: ">", ge: ">=" }[op];
      if (!sym) throw new Error(`jsEval: unknown op ${op}`);
      return `${a[0]} ${sym} ${a[1]} ? 1 : 0`;
    }
  }
}

export function compileInterval(e: MaskExpr): IntervalFn {
  const hit = intervalCache.get(e);
  if (hit) return hit;
  const lines: string[] = [];
  let n = 0;
  const emit = memoRenderer<[string, string]>((x, emit) => {
    let r: [string, string];
    if (x.op === "int" || x.op === "bool") {
      const v = x.op === "int" ? String(x.value) : x.value ? "1" : "0";
      r = [v, v];
    } else if (x.op === "coord" || x.op === "text") {
      const s = slot(x.side, x.op === "coord" ? x.coord : "text");
      r = [`iv[${2 * s}]`, `iv[${2 * s + 1}]`];
    } else {
      const a = x.args.map(emit);
      const lo = `l${n}`;
      const hi = `h${n++}`;
      lines.push(`let ${lo}, ${hi};`, intervalOp(x.op, a, lo, hi));
      r = [lo, hi];
    }
    return r;
  });
  const [lo, hi] = emit(e);
  const fn = new Function(
    "floorDiv",
    "floorMod",
    `return function maskInterval(iv, out) {\n${lines.join("\n")}\nout[0] = ${lo}; out[1] = ${hi}; }`,
  )(floorDiv, floorMod) as IntervalFn;
  intervalCache.set(e, fn);
  return fn;
}

// Sound interval rules; exact whenever the inputs are points, which is what makes bisection terminate.
function intervalOp(op: string, a: [string, string][], lo: string, hi: string): string {
  const [x, y, z] = a;
  switch (op) {
    case "add":
      return `${lo} = ${x![0]} + ${y![0]}; ${hi} = ${x![1]} + ${y![1]};`;
    case "sub":
      return `${lo} = ${x![0]} - ${y![1]}; ${hi} = ${x![1]} - ${y![0]};`;
    case "mul":
      return `{ const p1 = ${x![0]} * ${y![0]}, p2 = ${x![0]} * ${y![1]}, p3 = ${x![1]} * ${y![0]}, p4 = ${x![1]} * ${y![1]};
        ${lo} = Math.min(p1, p2, p3, p4); ${hi} = Math.max(p1, p2, p3, p4); }`;
    case "div": // divisor is a positive constant: floor division is monotone
      return `${lo} = floorDiv(${x![0]}, ${y![0]}); ${hi} = floorDiv(${x![1]}, ${y![0]});`;
    case "mod":
      return `if (floorDiv(${x![0]}, ${y![0]}) === floorDiv(${x![1]}, ${y![0]})) { ${lo} = floorMod(${x![0]}, ${y![0]}); ${hi} = floorMod(${x![1]}, ${y![0]}); } else { ${lo} = 0; ${hi} = ${y![0]} - 1; }`;
    case "neg":
      return `${lo} = -${x![1]}; ${hi} = -${x![0]};`;
    case "abs":
      return `if (${x![0]} >= 0) { ${lo} = ${x![0]}; ${hi} = ${x![1]}; } else if (${x![1]} <= 0) { ${lo} = -${x![1]}; ${hi} = -${x![0]}; } else { ${lo} = 0; ${hi} = Math.max(-${x![0]}, ${x![1]}); }`;
    case "min":
      return `${lo} = Math.min(${x![0]}, ${y![0]}); ${hi} = Math.min(${x![1]}, ${y![1]});`;
    case "max":
      return `${lo} = Math.max(${x![0]}, ${y![0]}); ${hi} = Math.max(${x![1]}, ${y![1]});`;
    case "select":
      return `if (${x![0]} === 1) { ${lo} = ${y![0]}; ${hi} = ${y![1]}; } else if (${x![1]} === 0) { ${lo} = ${z![0]}; ${hi} = ${z![1]}; } else { ${lo} = Math.min(${y![0]}, ${z![0]}); ${hi} = Math.max(${y![1]}, ${z![1]}); }`;
    case "and":
      return `${lo} = ${a.map((v) => v[0]).join(" & ")}; ${hi} = ${a.map((v) => v[1]).join(" & ")};`;
    case "or":
      return `${lo} = ${a.map((v) => v[0]).join(" | ")}; ${hi} = ${a.map((v) => v[1]).join(" | ")};`;
    case "not":
      return `${lo} = 1 - ${x![1]}; ${hi} = 1 - ${x![0]};`;
    case "eq":
      return `if (${x![1]} < ${y![0]} || ${y![1]} < ${x![0]}) { ${lo} = 0; ${hi} = 0; } else if (${x![0]} === ${x![1]} && ${y![0]} === ${y![1]}) { ${lo} = 1; ${hi} = 1; } else { ${lo} = 0; ${hi} = 1; }`;
    case "ne":
      return `if (${x![1]} < ${y![0]} || ${y![1]} < ${x![0]}) { ${lo} = 1; ${hi} = 1; } else if (${x![0]} === ${x![1]} && ${y![0]} === ${y![1]}) { ${lo} = 0; ${hi} = 0; } else { ${lo} = 0; ${hi} = 1; }`;
    case "lt":
      return cmp(x!, y!, lo, hi, "<");
    case "le":
      return cmp(x!, y!, lo, hi, "<=");
    case "gt":
      return cmp(y!, x!, lo, hi, "<");
    case "ge":
      return cmp(y!, x!, lo, hi, "<=");
    default:
      throw new Error(`jsEval: unknown op ${op}`);
  }
}

// x < y (or <=) over intervals: certainly true when x's top beats y's bottom, certainly false when
// x's bottom fails against y's top.
function cmp(x: [string, string], y: [string, string], lo: string, hi: string, sym: "<" | "<="): string {
  return `if (${x[1]} ${sym} ${y[0]}) { ${lo} = 1; ${hi} = 1; } else if (!(${x[0]} ${sym} ${y[1]})) { ${lo} = 0; ${hi} = 0; } else { ${lo} = 0; ${hi} = 1; }`;
}
