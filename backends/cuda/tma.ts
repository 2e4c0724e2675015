// The tensor maps (TMA descriptors) an sm_90a kernel takes as its second parameter, `struct
// TilecTensorMaps` in templates/ptx_sm90.cuh: for Q, K and V, the box and swizzle the template's
// shared-memory layout needs. Launchers (runtime/attention.ts, the packaged TypeScript and Python
// loaders) encode one map per tensor and call with cuTensorMapEncodeTiled(tensorMapArgs(...)), so
// the copy engine's view of a tensor is derived here once, from the kernel, never by hand per loader.
import type { KernelIR } from "../../compiler/lower.ts";
import { templateOf, type CudaArch } from "./target.ts";

export const TENSOR_MAP_BYTES = 128;
export const TENSOR_MAPS_ALIGN = 64;

export type MappedTensor = "q" | "k" | "v" | "do";

/** One map of the struct, in struct order. */
export interface TensorMapSpec {
  /** The struct field (C identifier). */
  readonly name: string;
  readonly tensor: MappedTensor;
  /** Box elements along the head dim: one swizzle row (swizzleBytes / element bytes). */
  readonly boxCols: number;
  /** Box rows along the sequence: the kernel's query block (Q) or key tile (K, V). */
  readonly boxRows: number;
  /** The shared-memory swizzle the wgmma descriptors read: 32, 64 or 128 bytes. */
  readonly swizzleBytes: SwizzleBytes;
}

export type SwizzleBytes = 32 | 64 | 128;

/** The widest swizzle (bytes per row of a column block) whose column blocks tile `elements` 2-byte values. */
export function swizzleFor(elements: number): SwizzleBytes {
  return elements % 64 === 0 ? 128 : elements % 32 === 0 ? 64 : 32;
}

/** A map over `tensor` in the layout the templates' swizzled tiles use (box: one column block × rows). */
export function tileMap(
  name: string,
  tensor: MappedTensor,
  rows: number,
  swizzleBytes: SwizzleBytes,
): TensorMapSpec {
  return { name, tensor, boxCols: swizzleBytes / 2, boxRows: rows, swizzleBytes };
}

/** The C struct of a kernel's maps (its second parameter), in map order, with its size asserted. */
export function renderTensorMapsStruct(maps: readonly TensorMapSpec[]): string {
  return [
    `// The kernel's TMA descriptors (rendered by backends/cuda/tma.ts): ${maps.map((m) => `${m.name} over ${m.tensor}, box ${m.boxCols} x ${m.boxRows}, ${m.swizzleBytes}-byte swizzle`).join("; ")}.`,
    `struct TilecTensorMaps {`,
    `  TilecTensorMap ${maps.map((m) => m.name).join(", ")};`,
    `};`,
    `static_assert(sizeof(TilecTensorMaps) == ${maps.length * TENSOR_MAP_BYTES}, "TilecTensorMaps layout changed");`,
  ].join("\n");
}

/** The maps a kernel needs: Q, K, V for the sm_90a template, none for the others. */
export function kernelTensorMaps(
  ir: Pick<KernelIR, "dtype" | "headDim" | "blockQ" | "blockKv" | "config">,
  arch: CudaArch,
): TensorMapSpec[] {
  if (templateOf(ir, arch) !== "sm90") return [];
  // The template's SW: 128-byte rows when the head dim fills them, else 64 (head dims 64, 96, 128).
  const sw = swizzleFor(ir.headDim);
  return [
    tileMap("q", "q", ir.blockQ, sw),
    tileMap("k", "k", ir.blockKv, sw),
    tileMap("v", "v", ir.blockKv, sw),
  ];
}

/** A [batch, seq, heads, dim] tensor as a launcher sees it: element strides, head dim contiguous. */
export interface MappedTensorShape {
  readonly batch: number;
  readonly seqLen: number;
  readonly heads: number;
  readonly headDim: number;
  /** Element strides of batch, sequence and head. */
  readonly strides: readonly [number, number, number];
  readonly elementBytes: 2;
}

/** What cuTensorMapEncodeTiled is called with (element strides 1, no interleave, zero fill). */
export interface TensorMapArgs {
  /** Innermost first: head dim, sequence, heads, batch. */
  readonly dims: number[];
  /** Byte strides of dims 1.. (sequence, heads, batch). */
  readonly stridesBytes: number[];
  readonly box: number[];
  readonly swizzleBytes: SwizzleBytes;
  readonly elementBytes: number;
}

/**
 * The encoding arguments of `spec` over tensor `t`. 4-D over (dim, seq, heads, batch) rather than
 * rows of a flat matrix, so a box past the sequence end reads zeros, never the next head's rows.
 * Throws with the violated TMA rule when the tensor cannot be mapped.
 */
export function tensorMapArgs(spec: TensorMapSpec, t: MappedTensorShape): TensorMapArgs {
  const stridesBytes = [t.strides[1], t.strides[2], t.strides[0]].map((s) => s * t.elementBytes);
  for (const [i, s] of stridesBytes.entries())
    if (s % 16 !== 0 || s <= 0 || s >= 2 ** 40)
      throw new RangeError(
        `${spec.tensor}: ${["sequence", "head", "batch"][i]} stride ${s} bytes is not a positive multiple of 16 below 2^40 (TMA); make the tensor contiguous`,
      );
  if (t.headDim % spec.boxCols !== 0)
    throw new RangeError(
      `${spec.tensor}: head dim ${t.headDim} is not a multiple of the ${spec.boxCols}-element box`,
    );
  return {
    dims: [t.headDim, t.seqLen, t.heads, t.batch],
    stridesBytes,
    box: [spec.boxCols, spec.boxRows, 1, 1],
    swizzleBytes: spec.swizzleBytes,
    elementBytes: t.elementBytes,
  };
}
