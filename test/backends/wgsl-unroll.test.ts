import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { emitWgsl } from "../../backends/wgsl/emit.ts";
import { DEFAULT_LIMITS } from "../../backends/wgsl/target.ts";
import { unrollLoops } from "../../backends/wgsl/unroll.ts";
import { kernelIR } from "../../compiler/pipeline.ts";

describe("unrollLoops", () => {
  it("copies the body once per trip with the index as a constant, each copy in its own scope", () => {
    const src = "for (var i = 0u; i < RQ; i++) {\n  let x = a[i * 2u];\n  b[i] = x + qi;\n}";
    const out = unrollLoops(src, { RQ: 2 });
    expect(out).toBe(
      "/* i < RQ, unrolled */ {\n  let x = a[0u * 2u];\n  b[0u] = x + qi;\n} {\n  let x = a[1u * 2u];\n  b[1u] = x + qi;\n}",
    );
  });

  it("unrolls nested loops and literal bounds, keeps loops with unknown or large bounds", () => {
    const src =
      "for (var d = 0u; d < D4; d++) { for (var j = 0u; j < 2u; j++) { s[j] += k[d]; } }\n" +
      "for (var e = lid; e < N; e += WG) { x[e] = 0.0; }\nfor (var t = 0u; t < BIG; t++) { y[t] = 1.0; }";
    const out = unrollLoops(src, { BIG: 64 });
    expect(out).toContain(
      "for (var d = 0u; d < D4; d++) { /* j < 2u, unrolled */ { s[0u] += k[d]; } { s[1u] += k[d]; } }",
    );
    expect(out).toContain("for (var e = lid; e < N; e += WG) { x[e] = 0.0; }");
    expect(out).toContain("for (var t = 0u; t < BIG; t++) { y[t] = 1.0; }");
  });

  it("leaves no register-tile loop in an emitted kernel: private arrays see constant indices only", () => {
    const file = "examples/efficient-vdit/osp29.tile";
    const { ir } = kernelIR(readFileSync(file, "utf8"), { kernel: "tile_2_6", file });
    const { source } = emitWgsl(ir, { f16: false, subgroups: true, limits: DEFAULT_LIMITS });
    expect(source).not.toMatch(/for \(var (i|j|jj|dd) = 0u/);
    for (const arr of ["o_acc", "m_i", "l_i", "mx", "qv", "pv"])
      for (const m of source.matchAll(new RegExp(`\\b${arr}\\[([^\\]]*)\\]`, "g")))
        expect(m[1], `${arr}[${m[1]}]`).toMatch(/^[0-9u *+A-Z]+$/);
  });
});
