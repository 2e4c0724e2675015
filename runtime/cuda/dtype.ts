// Element types of device buffers and float32 <-> bf16/fp16 conversion.
//
// Conversion uses the addon (fast, for tensors of tens of millions of
// elements) when it is built, and a bit-exact TypeScript implementation
// otherwise; the tests check that the two agree.
import { tryLoadAddon, type HalfDType } from "./addon.ts";

export type { HalfDType };
export type DType = "fp32" | "fp16" | "bf16" | "i32" | "u32" | "u8";

export const DTYPE_BYTES: Readonly<Record<DType, number>> = {
  fp32: 4,
  fp16: 2,
  bf16: 2,
  i32: 4,
  u32: 4,
  u8: 1,
};

/** The host array a buffer of dtype `D` uploads from and downloads to (float dtypes go through float32). */
export type HostArray<D extends DType> = D extends "fp32" | "fp16" | "bf16"
  ? Float32Array
  : D extends "i32"
    ? Int32Array
    : D extends "u32"
      ? Uint32Array
      : Uint8Array;

export function isHalf(d: DType): d is HalfDType {
  return d === "fp16" || d === "bf16";
}

export function hostArrayCtor(d: DType) {
  switch (d) {
    case "fp32":
    case "fp16":
    case "bf16":
      return Float32Array;
    case "i32":
      return Int32Array;
    case "u32":
      return Uint32Array;
    case "u8":
      return Uint8Array;
  }
}

export {
  bf16BitsToF32,
  f16BitsToF32,
  f32ToBf16Bits,
  f32ToF16Bits,
  f32ToHalfBitsJs,
  halfBitsToF32Js,
} from "../half.ts";
import { f32ToHalfBitsJs, halfBitsToF32Js } from "../half.ts";

export function f32ToHalfBits(data: Float32Array, dtype: HalfDType): Uint16Array {
  const r = tryLoadAddon();
  return "addon" in r ? r.addon.f32ToHalfBits(data, dtype) : f32ToHalfBitsJs(data, dtype);
}

/** bf16/fp16 bit patterns → float32 (exact). */
export function halfBitsToF32(bits: Uint16Array, dtype: HalfDType): Float32Array {
  const r = tryLoadAddon();
  return "addon" in r ? r.addon.halfBitsToF32(bits, dtype) : halfBitsToF32Js(bits, dtype);
}
