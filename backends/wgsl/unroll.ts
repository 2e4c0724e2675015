// Unrolls the template's register-tile loops at emit time, so every index into an invocation's
// private arrays (scores, accumulators, row statistics) is a constant in the WGSL itself.
//
// Why: with Dawn's default robustness, Tint clamps each array index that is not a constant
// expression (`o_acc[min(i * DV + dd, 11u)]`), and the driver must then unroll and fold those
// clamps itself before it can keep the arrays in registers. Measured on an H100 through Vulkan
// (2026-11-23, osp29 tile_2_6, 2 heads): as soon as the partial-block path was live next to the
// full one, the driver stopped doing so and every block ran 4x slower (2.4 vs 10.8 TFLOP/s);
// with `disable_robustness` the same kernel ran at 11.5. Constant indices leave Tint nothing to
// clamp and the driver nothing to prove.
//
// The loops unrolled are exactly those of the form `for (var X = 0u; X < B; X++) { … }` whose bound
// B is a literal (`4u`) or one of the named tile constants given; every other loop stays a loop.
// Each copy of the body is wrapped in its own braces, so `let`s inside it do not collide.

const LOOP = /for \(var (\w+) = 0u; \1 < (\w+); \1\+\+\) \{/g;

/** The index just past the `}` matching the `{` at `open`. */
function closingBrace(src: string, open: number): number {
  let depth = 0;
  for (let i = open; i < src.length; i++) {
    const ch = src[i];
    if (ch === "{") depth++;
    else if (ch === "}" && --depth === 0) return i + 1;
  }
  throw new Error(`unbalanced braces in WGSL template after offset ${open}`);
}

function tripCount(bound: string, constants: Readonly<Record<string, number>>): number | undefined {
  const literal = /^(\d+)u$/.exec(bound);
  if (literal) return Number(literal[1]);
  return constants[bound];
}

/** Maximum copies of one loop body: beyond this a loop stays a loop (code size). */
const MAX_TRIP = 16;

export function unrollLoops(src: string, constants: Readonly<Record<string, number>>): string {
  let out = "";
  let at = 0;
  LOOP.lastIndex = 0;
  for (let m = LOOP.exec(src); m; m = LOOP.exec(src)) {
    const [head, variable, bound] = m as unknown as [string, string, string];
    const open = m.index + head.length - 1;
    const end = closingBrace(src, open);
    const body = unrollLoops(src.slice(open + 1, end - 1), constants);
    const trips = tripCount(bound, constants);
    out += src.slice(at, m.index);
    if (trips === undefined || trips > MAX_TRIP) {
      out += `${head}${body}}`;
    } else {
      const use = new RegExp(`\\b${variable}\\b`, "g");
      const copies: string[] = [];
      for (let k = 0; k < trips; k++) copies.push(`{${body.replace(use, `${k}u`)}}`);
      out += `/* ${variable} < ${bound}, unrolled */ ${copies.join(" ")}`;
    }
    at = end;
    LOOP.lastIndex = end;
  }
  return out + src.slice(at);
}
