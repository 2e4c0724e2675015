import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { compileSpec } from "../../compiler/pipeline.ts";
import { parse, renderDiagnostic } from "../../grammar/index.ts";

function errors(text: string) {
  return compileSpec(text, "bad.tile").diagnostics.map((d) => ({
    at: `${d.span.line}:${d.span.col}`,
    message: d.message,
    hint: d.hint,
  }));
}

const LAYOUT = "layout L { video 4 x 3 x 5 heads 2 head_dim 16 }\n";

describe("the examples", () => {
  const files = readdirSync("examples", { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile() && e.name.endsWith(".tile"))
    .map((e) => join(e.parentPath, e.name));
  it.each(files)("%s compiles without diagnostics", (f) => {
    expect(errors(readFileSync(f, "utf8"))).toEqual([]);
  });
});

describe("syntax errors", () => {
  it("report file:line:col with a caret and a hint", () => {
    const text = "layout L {\n  video 8 x 45\n  heds 24\n}\n";
    const r = compileSpec(text, "x.tile");
    const first = r.diagnostics[0]!;
    expect(first.span.line).toBe(3);
    expect(first.span.col).toBe(3);
    const shown = renderDiagnostic(first, r.sources);
    expect(shown).toContain("x.tile:3:3: error:");
    expect(shown).toContain("  heds 24");
    expect(shown).toMatch(/\n {2}\| {3}\^{4}\n/);
    expect(shown).toContain("hint: layout fields are");
  });
  it("recover and report every error in one run", () => {
    const text = `${LAYOUT}mask a = q.frame == == 1\nmask b = (q.row <\nkernel k { layout L mask full block 128 x }\nmask c = k.col @ 3\n`;
    const ds = errors(text);
    const lines = new Set(ds.map((d) => d.at.split(":")[0]));
    expect(ds.length).toBeGreaterThanOrEqual(4);
    for (const line of ["2", "4", "5"]) expect(lines.has(line)).toBe(true);
    expect(ds.some((d) => d.message.includes("unexpected character '@'"))).toBe(true);
  });
  it("name what the user would type", () => {
    const ds = errors("layout L { video 8 x 45 x 80 heads 24 head_dim 96 dtype bf16");
    expect(ds[0]!.message).toBe("expected '}' but found end of input");
  });
  it("reject huge integers", () => {
    expect(errors(`${LAYOUT}kernel k { layout L mask q.frame < 99999999999999999999 }`)[0]!.message).toMatch(
      /too large/,
    );
  });
});

describe("name, type and range errors", () => {
  const cases: [string, string, RegExp, RegExp?][] = [
    [
      "unknown mask",
      "kernel k { layout L mask attention_tiles(2) }",
      /unknown mask 'attention_tiles'/,
      /did you mean 'attention_tile'/,
    ],
    [
      "unknown name",
      "kernel k { layout L mask q.frame == frmes }",
      /unknown name 'frmes'/,
      /did you mean 'frames'/,
    ],
    ["unknown layout", "kernel k { layout M mask full }", /unknown layout 'M'/, /did you mean 'L'/],
    [
      "bad field",
      "kernel k { layout L mask q.frames == 0 }",
      /tokens have no field 'frames'/,
      /frame, row, col/,
    ],
    ["bare token", "kernel k { layout L mask q == k }", /'q' is a token/, /q\.frame/],
    ["type: and of int", "kernel k { layout L mask q.frame and true }", /'and' needs a boolean/],
    ["type: int mask", "kernel k { layout L mask q.frame + 1 }", /must be a boolean expression/],
    ["arity", "kernel k { layout L mask attention_tile(1, 2) }", /takes 1 argument \(n\), but 2 were given/],
    ["division by zero", "kernel k { layout L mask q.frame / 0 == 1 }", /divisor of '\/' must be positive/],
    [
      "non-constant divisor",
      "kernel k { layout L mask q.frame / k.frame == 1 }",
      /divisor of '\/' must be a constant/,
    ],
    ["recursion", "mask r(n) = r(n)\nkernel k { layout L mask r(1) }", /calls itself/],
    ["block size", "kernel k { layout L mask full block 100 x 128 }", /multiple of 16/],
    ["target", "kernel k { layout L mask full targets metal }", /unknown target 'metal'/, /cuda, wgsl, cpu/],
    ["quantifier range", "kernel k { layout L mask any i in 0 .. 100000: q.frame == i }", /more than 4096/],
    ["tile shape", "kernel k { layout L mask q.tile(2x2).frame == 0 }", /needs a shape of 3 sizes/],
    ["shadowing stdlib", "mask full = true", /already defined by tilec's standard library/],
    ["duplicate", "mask a = true\nmask a = false", /declared twice/],
    ["missing layers", "model m { layer 0 use x }", /does not say how many layers/],
    [
      "model gap",
      "kernel f { layout L mask full }\nmodel m { layers 4 layer 0..2 use f }",
      /assigns no kernel to layer 3/,
    ],
    [
      "model overlap",
      "kernel f { layout L mask full }\nmodel m { layers 4 layer 0..2 use f layer 2..3 use f }",
      /layer 2 is assigned twice/,
    ],
    ["model range", "kernel f { layout L mask full }\nmodel m { layers 4 layer 0..4 use f }", /outside 0..3/],
    [
      "step rule without steps",
      "kernel f { layout L mask full }\nmodel m { layers 1 layer 0 use f step 0..1 layer all use f }",
      /needs the model's step count/,
    ],
  ];
  it.each(cases)("%s", (_, body, message, hint) => {
    const ds = errors(LAYOUT + body);
    const d = ds.find((x) => message.test(x.message));
    expect(d, JSON.stringify(ds)).toBeDefined();
    if (hint) expect(d!.hint).toMatch(hint);
  });
  it("layout checks", () => {
    const ds = errors(
      "layout A { video 8 x 0 x 2 heads 6 kv_heads 4 head_dim 64 dtype int8 }\nlayout B { heads 1 }",
    );
    const messages = ds.map((d) => d.message).join("\n");
    expect(messages).toMatch(/every video size must be between 1/);
    expect(messages).toMatch(/kv_heads \(4\) must divide heads \(6\)/);
    expect(messages).toMatch(/unknown dtype 'int8'/);
    expect(messages).toMatch(/layout 'B' has no video shape/);
    expect(messages).toMatch(/layout 'B' has no 'head_dim'/);
  });
});

describe("parse", () => {
  it("keeps `k` usable as a parameter while k.frame is the key token", () => {
    const r = compileSpec(
      `${LAYOUT}mask tile(k) = q.frame == k.frame or q.frame < k\nkernel x { layout L mask tile(2) }`,
      "t",
    );
    expect(r.diagnostics).toEqual([]);
  });
  it("accepts comments, semicolons and unicode ×", () => {
    const r = parse("# c\n// d\nlayout L { video 2 × 3 × 4; heads 1; head_dim 16 }", "t");
    expect(r.diagnostics).toEqual([]);
    expect(r.ast.decls).toHaveLength(1);
  });
});
