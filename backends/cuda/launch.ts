// One launch description per CUDA kernel, derived here once from the emitted kernel: entry point,
// grid, block, shared memory, the parameter struct with the source of every field, and the TMA
// descriptors it takes. The runtime (runtime/cuda/launch.ts), the packaged TypeScript loader and the
// packaged Python loader all launch from this JSON-able value with one generic routine each; none of
// them knows which kernel it is launching. An operation (the forward, the backward) is an ordered
// list of launches plus the workspace buffers they share.
import type { KernelConstants, ParamField, ParamStruct, TensorRole } from "./params.ts";
import { resolveConstants } from "./params.ts";
import { TENSOR_MAP_BYTES, TENSOR_MAPS_ALIGN, type TensorMapSpec } from "./tma.ts";

/** A grid dimension: a number fixed by the plan, or the call's heads, kv heads or batch. */
export type GridDim = number | "heads" | "kvHeads" | "batch";

export interface LaunchDescription {
  /** Which module of the kernel's package holds the entry ("forward" or "backward"). */
  readonly module: string;
  readonly entry: string;
  readonly grid: readonly [GridDim, GridDim, GridDim];
  readonly block: readonly [number, number, number];
  readonly sharedBytes: number;
  readonly params: {
    readonly struct: string;
    readonly bytes: number;
    readonly fields: readonly ParamField[];
  };
  /**
   * sm_90a kernels: the second parameter, one cuTensorMapEncodeTiled descriptor (128 bytes) per map,
   * each over its tensor as (head dim, seq, heads, batch) with byte strides of seq, heads, batch, box
   * (boxCols, boxRows, 1, 1), the given swizzle, zero fill, 2-byte elements.
   */
  readonly tensorMaps?: {
    readonly bytes: number;
    readonly align: number;
    readonly maps: readonly TensorMapSpec[];
  };
}

/** A workspace buffer an operation allocates for its launches: fp32, batch·heads·elementsPerHead. */
export interface WorkspaceBuffer {
  readonly tensor: TensorRole;
  readonly elementsPerHead: number;
}

export interface Operation {
  readonly launches: readonly LaunchDescription[];
  readonly workspace: readonly WorkspaceBuffer[];
}

export function describeLaunch(
  module: string,
  entry: string,
  grid: readonly [GridDim, GridDim, GridDim],
  threads: number,
  sharedBytes: number,
  params: ParamStruct,
  constants: KernelConstants,
  tensorMaps: readonly TensorMapSpec[] = [],
): LaunchDescription {
  return {
    module,
    entry,
    grid,
    block: [threads, 1, 1],
    sharedBytes,
    params: { struct: params.struct, bytes: params.bytes, fields: resolveConstants(params, constants) },
    ...(tensorMaps.length
      ? {
          tensorMaps: {
            bytes: TENSOR_MAP_BYTES * tensorMaps.length,
            align: TENSOR_MAPS_ALIGN,
            maps: tensorMaps,
          },
        }
      : {}),
  };
}
