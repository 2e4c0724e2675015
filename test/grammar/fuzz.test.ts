// Thousands of broken specs: the front end must never throw or hang, and every failure must be a
// diagnostic with a position inside the input.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { compileSpec, planKernel } from "../../compiler/pipeline.ts";
import { renderDiagnostic } from "../../grammar/index.ts";
import { Rng, randomLayoutSource, randomMask } from "../support/random.ts";

const seeds = [
  readFileSync("examples/efficient-vdit/osp29.tile", "utf8"),
  readFileSync("examples/cogvideox/cogvideox5b.tile", "utf8"),
  readFileSync("examples/sta/sta.tile", "utf8"),
  readFileSync("examples/causal/causal_frames.tile", "utf8"),
];
const FRAGMENTS = [
  "{",
  "}",
  "(",
  ")",
  "..",
  ".",
  ",",
  ":",
  "==",
  "and",
  "or",
  "not",
  "if",
  "then",
  "any",
  "all",
  "in",
  "mask",
  "kernel",
  "layout",
  "model",
  "use",
  "layer",
  "step",
  "x",
  "8 x 8",
  "q.",
  "k.frame",
  "0",
  "-1",
  "99999999999",
  "/",
  "%",
  "@",
  "\u0000",
  "é",
  "\n",
  "#",
  "q.tile(",
  "attention_tile(",
  "frames",
  "=",
  ";",
];

function mutate(r: Rng, text: string): string {
  let t = text;
  for (let m = r.int(1, 6); m > 0; m--) {
    const at = r.int(0, t.length);
    switch (r.int(0, 4)) {
      case 0: // delete a span
        t = t.slice(0, at) + t.slice(Math.min(t.length, at + r.int(1, 12)));
        break;
      case 1: // insert a fragment
        t = t.slice(0, at) + r.pick(FRAGMENTS) + t.slice(at);
        break;
      case 2: // duplicate a span
        t = t.slice(0, at) + t.slice(at, at + r.int(1, 40)) + t.slice(at);
        break;
      case 3: // replace a digit run
        t = t.replace(/\d+/, String(r.int(0, 300)));
        break;
      default: // truncate
        t = t.slice(0, at);
    }
  }
  return t;
}

function checkWellFormed(text: string): number {
  const r = compileSpec(text, "fuzz.tile");
  for (const d of r.diagnostics) {
    expect(d.span.line).toBeGreaterThanOrEqual(1);
    expect(d.span.col).toBeGreaterThanOrEqual(1);
    expect(d.message.length).toBeGreaterThan(0);
    if (d.span.file === "fuzz.tile") expect(d.span.start).toBeLessThanOrEqual(text.length);
    expect(renderDiagnostic(d, r.sources)).toContain(`${d.span.file}:${d.span.line}:`);
  }
  if (!r.spec) expect(r.diagnostics.some((d) => d.severity === "error")).toBe(true);
  else {
    // Specs that check must plan (small ones; large mutated layouts are planned symbolically anyway).
    for (const k of r.spec.kernels.values()) {
      const n = k.layout.textTokens + k.layout.frames * k.layout.height * k.layout.width;
      if ((n / k.blockQ) * (n / k.blockKv) < 20_000) planKernel(k);
    }
  }
  return r.diagnostics.length;
}

describe("fuzzing the front end", () => {
  it("survives 3000 mutated example specs", () => {
    const r = new Rng(7);
    let rejected = 0;
    for (let i = 0; i < 3000; i++) {
      const text = mutate(r, r.pick(seeds));
      try {
        if (checkWellFormed(text)) rejected++;
      } catch (e) {
        throw new Error(`mutant ${i} failed: ${(e as Error).message}\n---\n${text}`);
      }
    }
    expect(rejected).toBeGreaterThan(1000);
  });
  it("survives 2000 random token soups and random generated specs", () => {
    const r = new Rng(99);
    for (let i = 0; i < 2000; i++) {
      const text =
        i % 2 === 0
          ? Array.from({ length: r.int(0, 40) }, () => r.pick(FRAGMENTS)).join(r.pick([" ", "", "\n"]))
          : `${randomLayoutSource(r)}\nkernel k { layout L mask ${mutate(r, randomMask(r))} block ${r.pick([16, 32, 17])} x 32 }`;
      try {
        checkWellFormed(text);
      } catch (e) {
        throw new Error(`input ${i} failed: ${(e as Error).message}\n---\n${text}`);
      }
    }
  });
  it("handles deep nesting without blowing the stack", () => {
    const deep =
      "layout L { video 1 x 1 x 2 heads 1 head_dim 16 }\nkernel k { layout L mask " +
      "(".repeat(400) +
      "true" +
      ")".repeat(400) +
      " }";
    expect(() => compileSpec(deep, "deep.tile")).not.toThrow();
  });
});

describe("limits", () => {
  const L = "layout L { video 1 x 1 x 2 heads 1 head_dim 16 }\n";
  it("rejects absurd nesting with a diagnostic instead of a stack overflow", () => {
    for (const body of ["(".repeat(50_000) + "true" + ")".repeat(50_000), "not ".repeat(50_000) + "true"]) {
      const r = compileSpec(`${L}kernel k { layout L mask ${body} }`, "deep.tile");
      expect(r.spec).toBeUndefined();
      expect(r.diagnostics[0]!.message).toMatch(/nested more than \d+ levels/);
    }
  });
  it("rejects plans too large to hold", () => {
    const r = compileSpec(
      "layout L { video 4096 x 4096 x 1 heads 1 head_dim 16 }\nkernel k { layout L mask full block 16 x 16 }",
      "big.tile",
    );
    expect(r.diagnostics.map((d) => d.message).join()).toMatch(/block pairs, more than the planner's limit/);
  });
  it("stops quantifier explosions", () => {
    const r = compileSpec(
      `${L}kernel k { layout L mask any i in 0 .. 4000: any j in 0 .. 4000: q.index == i + j }`,
      "q.tile",
    );
    expect(r.diagnostics.map((d) => d.message).join()).toMatch(/too large after expansion/);
  });
});
