// SpecAst → CheckedSpec: names resolved, every field range-checked, each kernel's mask elaborated to a
// MaskExpr for its layout, each model's layer/step table filled in. All problems become diagnostics.
import type { Decl, KernelField, LayoutField, ModelField, RangeAst, SpecAst } from "../grammar/ast.ts";
import { error, type Diagnostic, type Span } from "../grammar/diagnostics.ts";
import { parse } from "../grammar/index.ts";
import { Elaborator, editDistance, type MaskDef } from "./elaborate.ts";
import { DTYPES, seqLen, type Dtype, type Layout } from "./layout.ts";
import { canonical, show, type MaskExpr } from "./maskExpr.ts";
import { sha256Hex } from "./hash.ts";
import { MAX_BLOCK_PAIRS } from "./plan.ts";
import { STDLIB_FILE, STDLIB_SOURCE } from "./stdlib.ts";

export type Target = "cuda" | "wgsl" | "cpu";
export const TARGETS: readonly Target[] = ["cuda", "wgsl", "cpu"];
export const MAX_SEQ_LEN = 1 << 24;
export const MIN_BLOCK = 16;
export const MAX_BLOCK = 256;

export interface KernelSpec {
  readonly name: string;
  readonly span: Span;
  readonly layout: Layout;
  readonly mask: MaskExpr;
  /** The mask as the user wrote it, for headers and tables. */
  readonly maskSource: string;
  readonly blockQ: number;
  readonly blockKv: number;
  readonly targets: readonly Target[];
  /** Stable across formatting and operand order: keys every cache. */
  readonly hash: string;
}

export interface StepOverride {
  readonly steps: readonly [number, number];
  readonly layers: readonly [number, number];
  readonly kernel: string;
}

export interface ModelSpec {
  readonly name: string;
  readonly span: Span;
  readonly layers: number;
  readonly steps?: number;
  /** Kernel name per layer (outside any step override). */
  readonly layerKernels: readonly string[];
  readonly stepOverrides: readonly StepOverride[];
}

export interface CheckedSpec {
  readonly file: string;
  readonly layouts: ReadonlyMap<string, Layout>;
  readonly masks: ReadonlyMap<string, MaskDef>;
  readonly kernels: ReadonlyMap<string, KernelSpec>;
  readonly models: ReadonlyMap<string, ModelSpec>;
}

/** The kernel a model runs at a layer and (optionally) a sampling step. */
export function kernelFor(model: ModelSpec, layer: number, step?: number): string {
  if (step !== undefined) {
    for (const o of model.stepOverrides) {
      if (step >= o.steps[0] && step <= o.steps[1] && layer >= o.layers[0] && layer <= o.layers[1])
        return o.kernel;
    }
  }
  const k = model.layerKernels[layer];
  if (k === undefined) throw new RangeError(`model ${model.name} has no layer ${layer}`);
  return k;
}

let stdlibDefs: Map<string, MaskDef> | undefined;

function stdlib(): Map<string, MaskDef> {
  if (!stdlibDefs) {
    const { ast, diagnostics } = parse(STDLIB_SOURCE, STDLIB_FILE);
    if (diagnostics.length)
      throw new Error(`tilec's standard library does not parse: ${diagnostics[0]!.message}`);
    stdlibDefs = new Map();
    for (const d of ast.decls) if (d.kind === "mask") stdlibDefs.set(d.name.name, d);
  }
  return stdlibDefs;
}

export function stdlibMasks(): ReadonlyMap<string, MaskDef> {
  return stdlib();
}

export function check(ast: SpecAst, source: string): { spec: CheckedSpec; diagnostics: Diagnostic[] } {
  return new Checker(ast.file, source).run(ast.decls);
}

class Checker {
  private readonly diagnostics: Diagnostic[] = [];
  private readonly masks = new Map<string, MaskDef>(stdlib());
  private readonly layouts = new Map<string, Layout>();
  private readonly kernels = new Map<string, KernelSpec>();
  private readonly models = new Map<string, ModelSpec>();
  /** Declared names whose declaration had errors: references to them are not reported again. */
  private readonly broken = new Set<string>();
  private readonly elaborator = new Elaborator(this.masks, this.diagnostics);

  constructor(
    private readonly file: string,
    private readonly source: string,
  ) {}

  private report(message: string, span: Span, hint?: string): void {
    this.diagnostics.push(error(message, span, hint));
  }

  run(decls: readonly Decl[]): { spec: CheckedSpec; diagnostics: Diagnostic[] } {
    // Masks first (any order of declaration works), then layouts, kernels, models.
    const seen = new Map<string, Span>();
    const unique = (kind: string, name: string, span: Span): boolean => {
      const key = `${kind}:${name}`;
      const prev = seen.get(key);
      if (prev) {
        this.report(
          `${kind} '${name}' is declared twice`,
          span,
          `the first declaration is at line ${prev.line}; rename one of them`,
        );
        return false;
      }
      seen.set(key, span);
      return true;
    };
    for (const d of decls) {
      if (d.kind !== "mask" || !unique("mask", d.name.name, d.name.span)) continue;
      if (stdlib().has(d.name.name)) {
        this.report(
          `mask '${d.name.name}' is already defined by tilec's standard library`,
          d.name.span,
          "choose another name",
        );
        continue;
      }
      const params = new Set<string>();
      for (const p of d.params) {
        if (params.has(p.name)) this.report(`parameter '${p.name}' appears twice`, p.span);
        if (p.name === "q")
          this.report(`'q' cannot be a parameter name: it is the query token`, p.span, "choose another name");
        params.add(p.name);
      }
      this.masks.set(d.name.name, d);
    }
    for (const d of decls)
      if (d.kind === "mask" && this.masks.get(d.name.name) === d) this.elaborator.checkGeneric(d);
    for (const d of decls)
      if (d.kind === "layout" && unique("layout", d.name.name, d.name.span)) this.layout(d);
    for (const d of decls)
      if (d.kind === "kernel" && unique("kernel", d.name.name, d.name.span)) this.kernel(d);
    for (const d of decls) if (d.kind === "model" && unique("model", d.name.name, d.name.span)) this.model(d);
    const spec = {
      file: this.file,
      layouts: this.layouts,
      masks: this.masks,
      kernels: this.kernels,
      models: this.models,
    };
    return { spec, diagnostics: this.diagnostics };
  }

  private once<F extends { field: string; span: Span }>(fields: readonly F[], where: string): Map<string, F> {
    const byName = new Map<string, F>();
    for (const f of fields) {
      if (byName.has(f.field))
        this.report(`'${f.field}' is given twice in ${where}`, f.span, "keep one of them");
      else byName.set(f.field, f);
    }
    return byName;
  }

  private positive(value: number, span: Span, what: string, max: number): number | undefined {
    if (value < 1 || value > max) {
      this.report(`${what} must be between 1 and ${max}, but it is ${value}`, span);
      return undefined;
    }
    return value;
  }

  private layout(d: Extract<Decl, { kind: "layout" }>): void {
    const f = this.once<LayoutField>(d.fields, `layout '${d.name.name}'`);
    let ok = true;
    const need = <T>(v: T | undefined): T | undefined => {
      if (v === undefined) ok = false;
      return v;
    };
    const video = f.get("video") as Extract<LayoutField, { field: "video" }> | undefined;
    let dims: readonly number[] = [1, 1, 1];
    if (!video) {
      this.report(
        `layout '${d.name.name}' has no video shape`,
        d.name.span,
        "add `video FRAMES x HEIGHT x WIDTH`, e.g. `video 8 x 45 x 80`",
      );
      ok = false;
    } else if (video.dims.length !== 3) {
      this.report(
        `video needs 3 sizes (frames x height x width), but got ${video.dims.length}`,
        video.span,
        "e.g. `video 8 x 45 x 80`",
      );
      ok = false;
    } else {
      dims = video.dims.map((x) => need(this.positive(x, video.span, "every video size", MAX_SEQ_LEN)) ?? 1);
    }
    const num = (
      name: "batch" | "heads" | "kv_heads" | "head_dim",
      fallback: number | undefined,
      max: number,
    ) => {
      const field = f.get(name) as Extract<LayoutField, { field: typeof name }> | undefined;
      if (!field) {
        if (fallback === undefined) {
          this.report(`layout '${d.name.name}' has no '${name}'`, d.name.span, `add \`${name} N\``);
          ok = false;
        }
        return fallback ?? 1;
      }
      return need(this.positive(field.value, field.span, name, max)) ?? 1;
    };
    const heads = num("heads", undefined, 4096);
    const kvHeads = num("kv_heads", heads, 4096);
    const headDim = num("head_dim", undefined, 1024);
    const batch = num("batch", 1, 65535);
    const kvField = f.get("kv_heads");
    if (kvField && heads % kvHeads !== 0) {
      this.report(
        `kv_heads (${kvHeads}) must divide heads (${heads})`,
        kvField.span,
        "grouped-query attention shares each kv head among heads/kv_heads query heads",
      );
      ok = false;
    }
    let dtype: Dtype = "bf16";
    const dt = f.get("dtype") as Extract<LayoutField, { field: "dtype" }> | undefined;
    if (dt) {
      if ((DTYPES as readonly string[]).includes(dt.dtype.name)) dtype = dt.dtype.name as Dtype;
      else {
        this.report(`unknown dtype '${dt.dtype.name}'`, dt.dtype.span, `use one of ${DTYPES.join(", ")}`);
        ok = false;
      }
    }
    const text = f.get("text") as Extract<LayoutField, { field: "text" }> | undefined;
    if (text && text.count > MAX_SEQ_LEN) {
      this.report(`text must be at most ${MAX_SEQ_LEN} tokens`, text.span);
      ok = false;
    }
    const layout: Layout = {
      name: d.name.name,
      frames: dims[0]!,
      height: dims[1]!,
      width: dims[2]!,
      textTokens: text?.count ?? 0,
      textPosition: text?.position ?? "before",
      batch,
      heads,
      kvHeads,
      headDim,
      dtype,
      span: d.name.span,
    };
    if (ok && seqLen(layout) > MAX_SEQ_LEN) {
      this.report(
        `layout '${d.name.name}' has ${seqLen(layout)} tokens, more than tilec supports (${MAX_SEQ_LEN})`,
        video?.span ?? d.name.span,
      );
      ok = false;
    }
    if (ok) this.layouts.set(layout.name, layout);
    else this.broken.add(`layout:${layout.name}`);
  }

  private kernel(d: Extract<Decl, { kind: "kernel" }>): void {
    const f = this.once<KernelField>(d.fields, `kernel '${d.name.name}'`);
    const lf = f.get("layout") as Extract<KernelField, { field: "layout" }> | undefined;
    const mf = f.get("mask") as Extract<KernelField, { field: "mask" }> | undefined;
    let layout: Layout | undefined;
    if (!lf)
      this.report(
        `kernel '${d.name.name}' has no layout`,
        d.name.span,
        "add `layout NAME` naming one of the spec's layouts",
      );
    else {
      layout = this.layouts.get(lf.layout.name);
      if (!layout && !this.broken.has(`layout:${lf.layout.name}`))
        this.report(
          `unknown layout '${lf.layout.name}'`,
          lf.layout.span,
          this.closest(lf.layout.name, [...this.layouts.keys()], "layouts"),
        );
    }
    if (!mf)
      this.report(
        `kernel '${d.name.name}' has no mask`,
        d.name.span,
        "add e.g. `mask attention_tile(2)` or `mask full`",
      );
    const mask =
      mf && layout
        ? this.elaborator.maskBody(mf.expr, layout, new Map(), `the mask of kernel '${d.name.name}'`)
        : undefined;

    let blockQ = 128;
    let blockKv = 128;
    const bf = f.get("block") as Extract<KernelField, { field: "block" }> | undefined;
    let blockOk = true;
    if (bf) {
      if (bf.dims.length !== 2) {
        this.report(
          `block needs 2 sizes (query x key/value), but got ${bf.dims.length}`,
          bf.span,
          "e.g. `block 128 x 64`",
        );
        blockOk = false;
      } else {
        [blockQ, blockKv] = bf.dims as [number, number];
        for (const b of bf.dims) {
          if (b % MIN_BLOCK !== 0 || b < MIN_BLOCK || b > MAX_BLOCK) {
            this.report(
              `block size ${b} must be a multiple of ${MIN_BLOCK} between ${MIN_BLOCK} and ${MAX_BLOCK}`,
              bf.span,
              "tensor-core tiles are 16 wide; try 64 or 128",
            );
            blockOk = false;
          }
        }
      }
    }
    let targets: Target[] = ["cuda", "wgsl", "cpu"];
    const tf = f.get("targets") as Extract<KernelField, { field: "targets" }> | undefined;
    if (tf) {
      targets = [];
      for (const t of tf.targets) {
        if ((TARGETS as readonly string[]).includes(t.name)) targets.push(t.name as Target);
        else this.report(`unknown target '${t.name}'`, t.span, `targets are ${TARGETS.join(", ")}`);
      }
    }
    if (!layout || !mask || !mf || !blockOk) {
      this.broken.add(`kernel:${d.name.name}`);
      return;
    }
    const n = seqLen(layout);
    const pairs = Math.ceil(n / blockQ) * Math.ceil(n / blockKv);
    if (pairs > MAX_BLOCK_PAIRS) {
      this.report(
        `kernel '${d.name.name}' has ${pairs} block pairs, more than the planner's limit of ${MAX_BLOCK_PAIRS}`,
        bf?.span ?? d.name.span,
        "use larger blocks or a shorter sequence",
      );
      return;
    }
    const maskSource =
      this.source.slice(mf.expr.span.start, mf.expr.span.end).replace(/\s+/g, " ").trim() || show(mask);
    const hash = sha256Hex(
      JSON.stringify({
        layout: { ...layout, span: undefined, name: undefined },
        mask: canonical(mask),
        blockQ,
        blockKv,
      }),
    );
    this.kernels.set(d.name.name, {
      name: d.name.name,
      span: d.name.span,
      layout,
      mask,
      maskSource,
      blockQ,
      blockKv,
      targets,
      hash,
    });
  }

  private closest(name: string, known: string[], what: string): string {
    const close = known.filter((k) => editDistance(k, name) <= Math.max(1, Math.floor(name.length / 3)));
    if (close.length) return `did you mean '${close[0]}'?`;
    return known.length ? `${what} in this spec: ${known.join(", ")}` : `this spec declares no ${what}`;
  }

  private model(d: Extract<Decl, { kind: "model" }>): void {
    const counts = this.once<ModelField>(
      d.fields.filter((x) => x.field !== "rule"),
      `model '${d.name.name}'`,
    );
    type Count = Extract<ModelField, { field: "layers" | "steps" }>;
    const lc = counts.get("layers") as Count | undefined;
    const sc = counts.get("steps") as Count | undefined;
    if (!lc) {
      this.report(
        `model '${d.name.name}' does not say how many layers it has`,
        d.name.span,
        "add `layers N`",
      );
      return;
    }
    const layers = this.positive(lc.value, lc.span, "layers", 4096);
    const steps = sc ? this.positive(sc.value, sc.span, "steps", 100000) : undefined;
    if (layers === undefined || (sc && steps === undefined)) return;
    const rules = d.fields.filter((x): x is Extract<ModelField, { field: "rule" }> => x.field === "rule");
    const layerKernels: (string | undefined)[] = new Array(layers).fill(undefined);
    const ruleAt: (Span | undefined)[] = new Array(layers).fill(undefined);
    const overrides: StepOverride[] = [];
    let layoutOfModel: { layout: Layout; kernel: string } | undefined;
    let ok = true;
    const bounds = (r: RangeAst, n: number, what: string): [number, number] | undefined => {
      if (r.kind === "all") return [0, n - 1];
      if (r.lo > r.hi || r.hi >= n) {
        this.report(
          `${what} range ${r.lo}..${r.hi} is outside 0..${n - 1}`,
          r.span,
          `${what}s are numbered from 0 to ${n - 1}; ranges are inclusive and ascending`,
        );
        return undefined;
      }
      return [r.lo, r.hi];
    };
    for (const r of rules) {
      const kernel = this.kernels.get(r.kernel.name);
      if (!kernel) {
        if (!this.broken.has(`kernel:${r.kernel.name}`))
          this.report(
            `unknown kernel '${r.kernel.name}'`,
            r.kernel.span,
            this.closest(r.kernel.name, [...this.kernels.keys()], "kernels"),
          );
        ok = false;
      } else if (!layoutOfModel) layoutOfModel = { layout: kernel.layout, kernel: kernel.name };
      else if (layoutOfModel.layout.name !== kernel.layout.name) {
        this.report(
          `kernel '${kernel.name}' uses layout '${kernel.layout.name}', but '${layoutOfModel.kernel}' in the same model uses '${layoutOfModel.layout.name}'`,
          r.kernel.span,
          "all kernels of one model must share the model's token layout",
        );
        ok = false;
      }
      const lr = bounds(r.layers, layers, "layer");
      if (!lr) {
        ok = false;
        continue;
      }
      if (!r.steps) {
        for (let l = lr[0]; l <= lr[1]; l++) {
          if (ruleAt[l]) {
            this.report(
              `layer ${l} is assigned twice`,
              r.span,
              `line ${ruleAt[l]!.line} already assigns it; make the layer ranges disjoint`,
            );
            ok = false;
            break;
          }
          ruleAt[l] = r.span;
          layerKernels[l] = r.kernel.name;
        }
        continue;
      }
      if (steps === undefined) {
        this.report(`a step rule needs the model's step count`, r.steps.span, "add `steps N` to the model");
        ok = false;
        continue;
      }
      const sr = bounds(r.steps, steps, "step");
      if (!sr) {
        ok = false;
        continue;
      }
      const clash = overrides.find(
        (o) => o.steps[0] <= sr[1] && sr[0] <= o.steps[1] && o.layers[0] <= lr[1] && lr[0] <= o.layers[1],
      );
      if (clash) {
        this.report(
          `this step rule overlaps another (steps ${clash.steps[0]}..${clash.steps[1]}, layers ${clash.layers[0]}..${clash.layers[1]})`,
          r.span,
          "make step rules disjoint",
        );
        ok = false;
        continue;
      }
      overrides.push({ steps: sr, layers: lr, kernel: r.kernel.name });
    }
    const missing = layerKernels.map((k, i) => (k === undefined ? i : -1)).filter((i) => i >= 0);
    if (missing.length && ok) {
      this.report(
        `model '${d.name.name}' assigns no kernel to layer${missing.length > 1 ? "s" : ""} ${compressRanges(missing)}`,
        d.name.span,
        "add `layer A..B use KERNEL` rules that cover every layer once",
      );
      ok = false;
    }
    if (ok)
      this.models.set(d.name.name, {
        name: d.name.name,
        span: d.name.span,
        layers,
        steps,
        layerKernels: layerKernels as string[],
        stepOverrides: overrides,
      });
  }
}

export function compressRanges(xs: readonly number[]): string {
  const out: string[] = [];
  for (let i = 0; i < xs.length;) {
    let j = i;
    while (j + 1 < xs.length && xs[j + 1] === xs[j]! + 1) j++;
    out.push(i === j ? `${xs[i]}` : `${xs[i]}..${xs[j]}`);
    i = j + 1;
  }
  return out.join(", ");
}
