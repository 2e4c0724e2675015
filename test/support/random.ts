// Seeded randomness for property and fuzz tests: failures reproduce from the printed seed.
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  next(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.next() * xs.length)]!;
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
}

const COORDS = ["frame", "row", "col", "index"];

/** A random integer term over token coordinates. */
function term(r: Rng, depth: number): string {
  const side = r.pick(["q", "k"]);
  const base = `${side}.${r.pick(COORDS)}`;
  switch (r.int(0, depth > 0 ? 6 : 3)) {
    case 0:
      return base;
    case 1:
      return `${base} / ${r.int(1, 5)}`;
    case 2:
      return `${base} % ${r.int(1, 6)}`;
    case 3:
      return String(r.int(-2, 6));
    case 4:
      return `abs(${term(r, depth - 1)} - ${term(r, depth - 1)})`;
    case 5:
      return `min(${term(r, depth - 1)}, ${term(r, depth - 1)}) + ${r.int(0, 3)}`;
    default:
      return `${side}.tile(${r.int(1, 3)}x${r.int(1, 3)}x${r.int(1, 4)}).${r.pick(["frame", "row", "col"])} * ${r.int(1, 3)}`;
  }
}

/** A random boolean mask expression in .tile syntax, mixing stdlib masks and raw comparisons. */
export function randomMask(r: Rng, depth = 2): string {
  const leaf = (): string => {
    switch (r.int(0, 9)) {
      case 0:
        return `attention_tile(${r.int(1, 3)})`;
      case 1:
        return `temporal_band(${r.int(0, 2)})`;
      case 2:
        return "causal_frames";
      case 3:
        return r.pick(["q.text", "k.text", "q.video", "text_joint"]);
      case 4:
        return `sliding_tile(${r.int(1, 2)}, ${r.int(1, 3)}, ${r.int(1, 3)}, ${r.int(1, 3)}, ${r.int(1, 3)}, ${r.int(1, 3)})`;
      case 5:
        return `k.index <= q.index`;
      default:
        return `${term(r, 1)} ${r.pick(["==", "!=", "<", "<=", ">", ">="])} ${term(r, 1)}`;
    }
  };
  if (depth === 0 || r.chance(0.3)) return leaf();
  switch (r.int(0, 3)) {
    case 0:
      return `(${randomMask(r, depth - 1)}) and (${randomMask(r, depth - 1)})`;
    case 1:
      return `(${randomMask(r, depth - 1)}) or (${randomMask(r, depth - 1)})`;
    case 2:
      return `not (${randomMask(r, depth - 1)})`;
    default:
      return `if ${leaf()} then ${leaf()} else (${randomMask(r, depth - 1)})`;
  }
}

export function randomLayoutSource(r: Rng, name = "L"): string {
  const text = r.chance(0.4) ? `text ${r.int(1, 40)} ${r.pick(["before", "after"])}` : "";
  return `layout ${name} { video ${r.int(1, 5)} x ${r.int(1, 7)} x ${r.int(1, 9)} ${text} heads ${r.int(1, 3)} head_dim 16 }`;
}
