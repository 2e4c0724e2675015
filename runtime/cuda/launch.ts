// Launching any tilec kernel from its launch description (backends/cuda/launch.ts): the struct's
// fields from their sources, the TMA descriptors from the tensors' shapes and strides, the grid from
// the call's heads and batch. The runtime's CudaAttention and the packaged TypeScript loader both go
// through packLaunch (the Python loader has the same routine in Python), so no launcher computes a
// struct offset, a stride or a grid of its own.
import type { GridDim, LaunchDescription } from "../../backends/cuda/launch.ts";
import type { StrideDim, TensorRole } from "../../backends/cuda/params.ts";
import { TENSOR_MAP_BYTES, tensorMapArgs, type TensorMapArgs } from "../../backends/cuda/tma.ts";

/** A tensor of a call: its device address and, for [batch, seq, heads, dim] tensors, strides and heads. */
export interface BoundTensor {
  readonly ptr: bigint;
  /** Element strides of batch, sequence and head. */
  readonly strides?: readonly [number, number, number];
  readonly heads?: number;
}

export interface LaunchBindings {
  readonly tensors: Partial<Record<TensorRole, BoundTensor>>;
  /** Device addresses of the plan sections (0n for empty ones). */
  readonly plan: Readonly<Record<string, bigint>>;
  readonly batch: number;
  readonly heads: number;
  readonly kvHeads: number;
  readonly seqLen: number;
  readonly headDim: number;
}

export interface PackedLaunch {
  readonly grid: [number, number, number];
  readonly block: [number, number, number];
  readonly sharedBytes: number;
  readonly args: { bytes: Uint8Array; align: number }[];
}

export type EncodeTensorMap = (address: bigint, args: TensorMapArgs) => Uint8Array;

const DIMS: Record<StrideDim, number> = { batch: 0, seq: 1, head: 2 };

/** The struct bytes, descriptors and geometry of one launch; throws naming what is missing. */
export function packLaunch(d: LaunchDescription, b: LaunchBindings, encode: EncodeTensorMap): PackedLaunch {
  const bytes = new Uint8Array(d.params.bytes);
  const view = new DataView(bytes.buffer);
  const need = (role: TensorRole, why: string): BoundTensor => {
    const t = b.tensors[role];
    if (!t) throw new Error(`${d.entry}: ${why} needs tensor '${role}', which the call did not pass`);
    return t;
  };
  for (const f of d.params.fields) {
    const s = f.source;
    let value: bigint | number;
    if ("tensor" in s) value = b.tensors[s.tensor]?.ptr ?? 0n;
    else if ("stride" in s) value = BigInt(b.tensors[s.stride]?.strides?.[DIMS[s.dim]] ?? 0);
    else if ("plan" in s) {
      const p = b.plan[s.plan];
      if (p === undefined) throw new Error(`${d.entry}: plan section '${s.plan}' was not uploaded`);
      value = p;
    } else if ("shape" in s) value = b[s.shape];
    else if ("value" in s) value = s.value;
    else throw new Error(`${d.entry}: field ${f.name} has an unresolved source ${JSON.stringify(s)}`);
    if (f.type === "ptr" || f.type === "i64") view.setBigInt64(f.offset, BigInt(value), true);
    else if (f.type === "i32") view.setInt32(f.offset, Number(value), true);
    else view.setFloat32(f.offset, Number(value), true);
  }
  const args = [{ bytes, align: 8 }];
  if (d.tensorMaps) {
    const maps = new Uint8Array(d.tensorMaps.bytes);
    d.tensorMaps.maps.forEach((m, i) => {
      const t = need(m.tensor, `tensor map '${m.name}'`);
      if (!t.strides || t.heads === undefined) throw new Error(`${d.entry}: '${m.tensor}' has no strides`);
      const a = tensorMapArgs(m, {
        batch: b.batch,
        seqLen: b.seqLen,
        heads: t.heads,
        headDim: b.headDim,
        strides: t.strides as [number, number, number],
        elementBytes: 2,
      });
      maps.set(encode(t.ptr, a), i * TENSOR_MAP_BYTES);
    });
    args.push({ bytes: maps, align: d.tensorMaps.align });
  }
  const dim = (g: GridDim) => (typeof g === "number" ? g : b[g]);
  return {
    grid: [dim(d.grid[0]), dim(d.grid[1]), dim(d.grid[2])],
    block: [...d.block] as [number, number, number],
    sharedBytes: d.sharedBytes,
    args,
  };
}

/** Element strides (batch, seq, head) of a contiguous [b, s, h, d] ("bshd") or [b, h, s, d] tensor. */
export function contiguousStrides(
  seqLen: number,
  heads: number,
  headDim: number,
  layout: "bshd" | "bhsd",
): [number, number, number] {
  return layout === "bshd"
    ? [seqLen * heads * headDim, heads * headDim, headDim]
    : [heads * seqLen * headDim, headDim, seqLen * headDim];
}
