// The mask as a function of two token indices — for the CPU reference, tests, and the brute-force
// oracle. Coordinates are tabulated once per layout so each call is a few array reads.
import { compilePoint } from "./jsEval.ts";
import { seqLen, tokenCoords, type Layout } from "./layout.ts";
import type { MaskExpr } from "./maskExpr.ts";

export type ElementMask = (q: number, k: number) => boolean;

export function elementMask(layout: Layout, mask: MaskExpr): ElementMask {
  const n = seqLen(layout);
  const table = new Int32Array(n * 5);
  const c = { frame: 0, row: 0, col: 0, text: false };
  for (let t = 0; t < n; t++) {
    tokenCoords(layout, t, c);
    table.set([c.frame, c.row, c.col, t, c.text ? 1 : 0], t * 5);
  }
  const point = compilePoint(mask);
  const p = new Int32Array(10);
  return (q, k) => {
    p.set(table.subarray(q * 5, q * 5 + 5), 0);
    p.set(table.subarray(k * 5, k * 5 + 5), 5);
    return point(p);
  };
}
