// float32 ↔ IEEE fp16 for f16 storage buffers, through the shared browser-safe conversions.
import { f32ToHalfBitsJs, halfBitsToF32Js } from "../half.ts";

export function f32ToF16(x: ArrayLike<number>): Uint16Array {
  return f32ToHalfBitsJs(x instanceof Float32Array ? x : Float32Array.from(x), "fp16");
}

export function f16ToF32(h: Uint16Array): Float32Array {
  return halfBitsToF32Js(h, "fp16");
}

/** Values as fp16 would hold them (for references that must see what the GPU sees). */
export function roundToF16(x: ArrayLike<number>): Float32Array {
  return f16ToF32(f32ToF16(x));
}
