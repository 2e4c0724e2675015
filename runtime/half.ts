// float32 ↔ bf16 / IEEE fp16 bit patterns in plain TypeScript (Node 20 has no Float16Array): round
// to nearest even, overflow to ±inf, subnormals kept, NaN stays NaN. Shared by the CUDA runtime
// (whose native addon has a faster twin) and the WebGPU runtime, so it must stay browser-safe.
export type HalfDType = "fp16" | "bf16";

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** float32 bits → bf16 bits, round to nearest even; NaN stays (quiet) NaN. */
export function f32ToBf16Bits(x: number): number {
  f32[0] = x;
  const b = u32[0];
  if ((b & 0x7fffffff) > 0x7f800000) return ((b >>> 16) | 0x0040) & 0xffff;
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

/** float32 bits → IEEE fp16 bits, round to nearest even, overflow to ±inf; NaN stays NaN. */
export function f32ToF16Bits(x: number): number {
  f32[0] = x;
  const b = u32[0];
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  const mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x0200 | (mant >>> 13) : 0);
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    const m = mant | 0x800000;
    const shift = 14 - e;
    let h = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && h & 1)) h++;
    return sign | h;
  }
  let h = sign | (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++;
  return h;
}

export function bf16BitsToF32(h: number): number {
  u32[0] = (h & 0xffff) << 16;
  return f32[0];
}

export function f16BitsToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0x1f) {
    if (!mant) return sign * Infinity;
    u32[0] = ((h & 0x8000) << 16) | 0x7f800000 | (mant << 13); // keep the NaN payload
    return f32[0];
  }
  if (exp === 0) return sign * mant * 2 ** -24;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** Pure-TypeScript reference for {@link f32ToHalfBits}. */
export function f32ToHalfBitsJs(data: Float32Array, dtype: HalfDType): Uint16Array {
  const out = new Uint16Array(data.length);
  const conv = dtype === "bf16" ? f32ToBf16Bits : f32ToF16Bits;
  for (let i = 0; i < data.length; i++) out[i] = conv(data[i]);
  return out;
}

/** Pure-TypeScript reference for {@link halfBitsToF32}. */
export function halfBitsToF32Js(bits: Uint16Array, dtype: HalfDType): Float32Array {
  const out = new Float32Array(bits.length);
  const conv = dtype === "bf16" ? bf16BitsToF32 : f16BitsToF32;
  for (let i = 0; i < bits.length; i++) out[i] = conv(bits[i]);
  return out;
}

/** float32 → bf16/fp16 bit patterns (round to nearest even, NaN preserved). */
