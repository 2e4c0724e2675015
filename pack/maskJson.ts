// A kernel's element mask as JSON for a package's loaders: the checked MaskExpr (compiler/maskExpr.ts)
// as a flat list of nodes, children before parents, shared sub-expressions once. The PyTorch loader
// evaluates it over token indices (a FlexAttention mask_mod, a dense [S, S] mask for references), so a
// package says exactly which pairs its kernels attend without tilec's compiler.
import type { Layout } from "../compiler/layout.ts";
import { canonical, type MaskExpr } from "../compiler/maskExpr.ts";

export type MaskNode =
  | { readonly op: "int"; readonly value: number }
  | { readonly op: "bool"; readonly value: boolean }
  | { readonly op: "coord"; readonly side: "q" | "k"; readonly coord: "frame" | "row" | "col" | "index" }
  | { readonly op: "text"; readonly side: "q" | "k" }
  | { readonly op: string; readonly args: readonly number[] };

export interface MaskJson {
  /**
   * Nodes in evaluation order; `args` are indices of earlier nodes. Integer `div`/`mod` are floor
   * division and modulo by a positive constant; `select` is (condition, then, else).
   */
  readonly nodes: readonly MaskNode[];
  readonly root: number;
}

export function maskJson(mask: MaskExpr): MaskJson {
  const nodes: MaskNode[] = [];
  const index = new Map<string, number>();
  const seen = new WeakMap<MaskExpr, number>();
  const visit = (e: MaskExpr): number => {
    const hit = seen.get(e);
    if (hit !== undefined) return hit;
    const key = canonical(e);
    let at = index.get(key);
    if (at === undefined) {
      const node: MaskNode = "args" in e ? { op: e.op, args: e.args.map(visit) } : { ...e };
      at = nodes.push(node) - 1;
      index.set(key, at);
    }
    seen.set(e, at);
    return at;
  };
  const root = visit(mask);
  return { nodes, root };
}

/** Where a token index lands: text tokens before or after frames × height × width video tokens. */
export function tokenLayout(l: Layout) {
  return {
    name: l.name,
    frames: l.frames,
    height: l.height,
    width: l.width,
    textTokens: l.textTokens,
    textPosition: l.textPosition,
  };
}
