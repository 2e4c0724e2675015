// Packs typed kernel arguments into one buffer for cuLaunchKernel.
//
// The addon builds `void** kernelParams` from the packed buffer and the
// per-argument byte offsets, so one ArrayBuffer crosses into C++ instead of
// one JS value per argument. Each argument sits at its natural alignment.

/** Anything with a device pointer, e.g. a DeviceBuffer. */
export interface HasDevicePtr {
  readonly ptr: bigint;
}

export type KernelArg =
  | { ptr: HasDevicePtr | bigint }
  | { i32: number }
  | { u32: number }
  | { f32: number }
  | { i64: bigint }
  | { u64: bigint }
  | { f64: number }
  /** A struct passed by value (e.g. a 64-byte-aligned CUtensorMap), copied verbatim. */
  | { bytes: Uint8Array; align?: number };

export interface PackedArgs {
  buffer: ArrayBuffer;
  /** Byte offset of each argument in `buffer`, in argument order. */
  offsets: Uint32Array;
}

function alignUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

function fail(i: number, msg: string): never {
  throw new TypeError(`kernel argument ${i}: ${msg}`);
}

function checkInt(i: number, v: number, lo: number, hi: number, kind: string): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < lo || v > hi) {
    fail(i, `${kind} must be an integer in [${lo}, ${hi}], got ${String(v)}`);
  }
  return v;
}

function checkBig(i: number, v: bigint, bits: 64, signed: boolean, kind: string): bigint {
  if (typeof v !== "bigint") fail(i, `${kind} must be a bigint, got ${typeof v}`);
  const wrapped = signed ? BigInt.asIntN(bits, v) : BigInt.asUintN(bits, v);
  if (wrapped !== v) fail(i, `${kind} ${v} does not fit in ${bits} bits`);
  return v;
}

/** Size and alignment of one argument. */
function layoutOf(a: KernelArg, i: number): { size: number; align: number } {
  if ("bytes" in a) {
    const align = a.align ?? 8;
    if (!(a.bytes instanceof Uint8Array)) fail(i, "bytes must be a Uint8Array");
    // C++ has no zero-sized parameters, and an empty one would sit at the
    // buffer's end, outside the bounds the addon checks.
    if (a.bytes.byteLength === 0) fail(i, "bytes must not be empty");
    if (!Number.isInteger(align) || align < 1 || (align & (align - 1)) !== 0) {
      fail(i, `align must be a power of two, got ${align}`);
    }
    return { size: a.bytes.byteLength, align };
  }
  if ("ptr" in a || "i64" in a || "u64" in a || "f64" in a) return { size: 8, align: 8 };
  if ("i32" in a || "u32" in a || "f32" in a) return { size: 4, align: 4 };
  return fail(i, `unknown argument kind ${JSON.stringify(Object.keys(a ?? {}))}`);
}

/** Lays out and writes `args` (little-endian, natural alignment). Pure: no addon needed. */
export function packArgs(args: readonly KernelArg[]): PackedArgs {
  const offsets = new Uint32Array(args.length);
  let end = 0;
  let maxAlign = 8;
  args.forEach((a, i) => {
    const { size, align } = layoutOf(a, i);
    offsets[i] = alignUp(end, align);
    end = offsets[i] + size;
    maxAlign = Math.max(maxAlign, align);
  });
  // At least one byte so a launch without arguments still passes a valid buffer.
  const buffer = new ArrayBuffer(alignUp(Math.max(end, 1), maxAlign));
  const view = new DataView(buffer);
  args.forEach((a, i) => {
    const o = offsets[i];
    if ("ptr" in a) {
      const p = typeof a.ptr === "bigint" ? a.ptr : a.ptr?.ptr;
      view.setBigUint64(o, checkBig(i, p as bigint, 64, false, "ptr"), true);
    } else if ("i32" in a) view.setInt32(o, checkInt(i, a.i32, -(2 ** 31), 2 ** 31 - 1, "i32"), true);
    else if ("u32" in a) view.setUint32(o, checkInt(i, a.u32, 0, 2 ** 32 - 1, "u32"), true);
    else if ("f32" in a) {
      if (typeof a.f32 !== "number") fail(i, "f32 must be a number");
      view.setFloat32(o, a.f32, true);
    } else if ("f64" in a) {
      if (typeof a.f64 !== "number") fail(i, "f64 must be a number");
      view.setFloat64(o, a.f64, true);
    } else if ("i64" in a) view.setBigInt64(o, checkBig(i, a.i64, 64, true, "i64"), true);
    else if ("u64" in a) view.setBigUint64(o, checkBig(i, a.u64, 64, false, "u64"), true);
    else new Uint8Array(buffer, o, a.bytes.byteLength).set(a.bytes);
  });
  return { buffer, offsets };
}
