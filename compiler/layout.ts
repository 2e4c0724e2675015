// The token layout of one attention call: text tokens (optional, before or after the video) and
// video tokens frames × height × width in row-major order. This is the only place that maps a token
// index to coordinates; the planner, the reference and the generated kernels all follow it.
import type { Span } from "../grammar/diagnostics.ts";

export type Dtype = "bf16" | "fp16" | "fp32";
export const DTYPES: readonly Dtype[] = ["bf16", "fp16", "fp32"];

export interface Layout {
  readonly name: string;
  readonly frames: number;
  readonly height: number;
  readonly width: number;
  readonly textTokens: number;
  readonly textPosition: "before" | "after";
  readonly batch: number;
  readonly heads: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly dtype: Dtype;
  readonly span?: Span;
}

export function videoTokens(l: Layout): number {
  return l.frames * l.height * l.width;
}

export function seqLen(l: Layout): number {
  return l.textTokens + videoTokens(l);
}

/** First token index of the video part. */
export function videoStart(l: Layout): number {
  return l.textPosition === "before" ? l.textTokens : 0;
}

/** First token index of the text part. */
export function textStart(l: Layout): number {
  return l.textPosition === "before" ? 0 : videoTokens(l);
}

export interface TokenCoords {
  frame: number;
  row: number;
  col: number;
  text: boolean;
}

export function tokenCoords(
  l: Layout,
  index: number,
  out: TokenCoords = { frame: 0, row: 0, col: 0, text: false },
): TokenCoords {
  const v = index - videoStart(l);
  if (v < 0 || v >= videoTokens(l)) {
    out.frame = out.row = out.col = -1;
    out.text = true;
  } else {
    const perFrame = l.height * l.width;
    out.frame = Math.floor(v / perFrame);
    const inFrame = v - out.frame * perFrame;
    out.row = Math.floor(inFrame / l.width);
    out.col = inFrame - out.row * l.width;
    out.text = false;
  }
  return out;
}

/** Layout constants a mask may read by name. */
export function layoutConstants(l: Layout): Record<string, number> {
  return {
    frames: l.frames,
    height: l.height,
    width: l.width,
    text_tokens: l.textTokens,
    frame_tokens: l.height * l.width,
    video_tokens: videoTokens(l),
    tokens: seqLen(l),
  };
}

export const LAYOUT_CONSTANT_NAMES = Object.keys(
  layoutConstants({
    name: "",
    frames: 1,
    height: 1,
    width: 1,
    textTokens: 0,
    textPosition: "before",
    batch: 1,
    heads: 1,
    kvHeads: 1,
    headDim: 16,
    dtype: "fp32",
  }),
);

export function describeLayout(l: Layout): string {
  const text = l.textTokens ? ` + ${l.textTokens} text (${l.textPosition})` : "";
  return `${l.frames}×${l.height}×${l.width} video${text} = ${seqLen(l)} tokens, batch ${l.batch}, ${l.heads} heads (${l.kvHeads} kv) × ${l.headDim}, ${l.dtype}`;
}
