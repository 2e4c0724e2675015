// The byte layout of `struct TilecParams` (backends/cuda/templates/ptx.cuh) as data: a build's
// manifest carries it, so the TypeScript and Python loaders pack the struct without tilec's
// compiler. test/pack checks it against the runtime's packer (CudaAttention.params).
import { PARAMS_BYTES } from "../backends/cuda/emit.ts";

export type ParamType = "ptr" | "i64" | "i32" | "f32";

export interface ParamField {
  readonly name: string;
  readonly type: ParamType;
  readonly offset: number;
}

const SIZE: Record<ParamType, number> = { ptr: 8, i64: 8, i32: 4, f32: 4 };

function layout(fields: [string, ParamType][]): ParamField[] {
  let at = 0;
  return fields.map(([name, type]) => {
    at = Math.ceil(at / SIZE[type]) * SIZE[type];
    const f = { name, type, offset: at };
    at += SIZE[type];
    return f;
  });
}

const strides = (t: string): [string, ParamType][] =>
  ["batch", "seq", "head"].map((s) => [`${t}_${s}_stride`, "i64"] as [string, ParamType]);

/** struct TilecParams, field by field, in declaration order. */
export const TILEC_PARAMS: readonly ParamField[] = layout([
  ["q", "ptr"],
  ["k", "ptr"],
  ["v", "ptr"],
  ["o", "ptr"],
  ["lse", "ptr"],
  ...strides("q"),
  ...strides("k"),
  ...strides("v"),
  ...strides("o"),
  ["seq_len", "i32"],
  ["num_heads", "i32"],
  ["num_kv_heads", "i32"],
  ["scale_log2", "f32"],
  ["full_offsets", "ptr"],
  ["full_indices", "ptr"],
  ["partial_offsets", "ptr"],
  ["partial_indices", "ptr"],
  ["q_order", "ptr"],
  ["partial_classes", "ptr"],
]);

const last = TILEC_PARAMS[TILEC_PARAMS.length - 1]!;
if (last.offset + SIZE[last.type] !== PARAMS_BYTES)
  throw new Error(
    `TILEC_PARAMS ends at ${last.offset + SIZE[last.type]} bytes, struct TilecParams is ${PARAMS_BYTES}`,
  );
