// float32 <-> bf16/fp16 bit conversion. Done in C++ because tensors for
// attention kernels are tens of millions of elements and the JS equivalent
// (DataView bit twiddling) is several times slower.
#include <cstring>

#include "common.h"

namespace tilec {
namespace {

// Round to nearest even; NaN stays NaN (quieted, sign and top payload kept).
inline uint16_t f32ToBf16(uint32_t x) {
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((x >> 16) | 0x0040u);
  return static_cast<uint16_t>((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
}

inline uint16_t f32ToF16(uint32_t x) {
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t exp = (x >> 23) & 0xFFu;
  uint32_t mant = x & 0x7FFFFFu;
  if (exp == 0xFF) return static_cast<uint16_t>(sign | 0x7C00u | (mant ? 0x0200u | (mant >> 13) : 0));
  int e = static_cast<int>(exp) - 127 + 15;
  if (e >= 31) return static_cast<uint16_t>(sign | 0x7C00u);  // overflow -> inf
  if (e <= 0) {
    // Subnormal result: value = m * 2^-24 with m = (1.mant) >> (14 - e).
    if (e < -10) return static_cast<uint16_t>(sign);
    uint32_t m = mant | 0x800000u;
    uint32_t shift = static_cast<uint32_t>(14 - e);
    uint32_t h = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1);
    uint32_t halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (h & 1u))) h++;
    return static_cast<uint16_t>(sign | h);
  }
  uint32_t h = sign | (static_cast<uint32_t>(e) << 10) | (mant >> 13);
  uint32_t rem = mant & 0x1FFFu;
  // A carry out of the mantissa correctly bumps the exponent (up to inf).
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
  return static_cast<uint16_t>(h);
}

inline uint32_t f16ToF32(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t mant = h & 0x3FFu;
  if (exp == 0x1F) return sign | 0x7F800000u | (mant << 13);
  if (exp == 0) {
    if (!mant) return sign;
    int s = 0;
    while (!(mant & 0x400u)) {
      mant <<= 1;
      s++;
    }
    return sign | (static_cast<uint32_t>(113 - s) << 23) | ((mant & 0x3FFu) << 13);
  }
  return sign | ((exp + 112u) << 23) | (mant << 13);
}

bool parseHalfDtype(const Napi::CallbackInfo& info, size_t i) {
  std::string d = info[i].IsString() ? info[i].As<Napi::String>().Utf8Value() : "";
  if (d == "bf16") return true;
  if (d == "fp16") return false;
  throw Napi::TypeError::New(info.Env(), "dtype must be 'bf16' or 'fp16'");
}

// f32ToHalfBits(Float32Array, dtype) → Uint16Array
Napi::Value F32ToHalfBits(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
    throw Napi::TypeError::New(env, "expected a Float32Array");
  }
  bool bf16 = parseHalfDtype(info, 1);
  auto src = info[0].As<Napi::Float32Array>();
  size_t n = src.ElementLength();
  auto out = Napi::Uint16Array::New(env, n);
  const float* s = src.Data();
  uint16_t* d = out.Data();
  for (size_t k = 0; k < n; k++) {
    uint32_t x;
    std::memcpy(&x, s + k, 4);
    d[k] = bf16 ? f32ToBf16(x) : f32ToF16(x);
  }
  return out;
}

// halfBitsToF32(Uint16Array, dtype) → Float32Array (exact: every half value
// is representable in float32).
Napi::Value HalfBitsToF32(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint16_array) {
    throw Napi::TypeError::New(env, "expected a Uint16Array");
  }
  bool bf16 = parseHalfDtype(info, 1);
  auto src = info[0].As<Napi::Uint16Array>();
  size_t n = src.ElementLength();
  auto out = Napi::Float32Array::New(env, n);
  const uint16_t* s = src.Data();
  float* d = out.Data();
  for (size_t k = 0; k < n; k++) {
    uint32_t x = bf16 ? static_cast<uint32_t>(s[k]) << 16 : f16ToF32(s[k]);
    std::memcpy(d + k, &x, 4);
  }
  return out;
}

}  // namespace

void initHalf(Napi::Env env, Napi::Object exports) {
  exports.Set("f32ToHalfBits", Napi::Function::New(env, F32ToHalfBits, "f32ToHalfBits"));
  exports.Set("halfBitsToF32", Napi::Function::New(env, HalfBitsToF32, "halfBitsToF32"));
}

}  // namespace tilec
