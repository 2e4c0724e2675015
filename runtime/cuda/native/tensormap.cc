// TMA descriptors: cuTensorMapEncodeTiled for the sm_90a kernels' copy engine.
//
// The descriptor is 128 opaque bytes that the kernel receives by value (a __grid_constant__
// parameter), so it goes back to JavaScript as a Uint8Array and travels in the launch's argument
// buffer like any other struct. What to encode (box, swizzle, dims) is decided in TypeScript
// (backends/cuda/tma.ts); this file only checks shapes and calls the driver.
#include <cstring>
#include <vector>

#include "common.h"

namespace tilec {

namespace {

std::vector<unsigned long long> argU64List(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (!info[i].IsArray()) throw Napi::TypeError::New(info.Env(), std::string(name) + " must be an array of numbers");
  Napi::Array a = info[i].As<Napi::Array>();
  std::vector<unsigned long long> out;
  for (uint32_t k = 0; k < a.Length(); ++k) {
    Napi::Value v = a.Get(k);
    double x = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
    if (!(x >= 0) || x > 9007199254740991.0 || static_cast<double>(static_cast<unsigned long long>(x)) != x)
      throw Napi::RangeError::New(info.Env(), std::string(name) + "[" + std::to_string(k) +
                                                  "] must be a non-negative integer");
    out.push_back(static_cast<unsigned long long>(x));
  }
  return out;
}

// tensorMapEncodeTiled(address, elementBytes, dims, stridesBytes, box, swizzleBytes) → Uint8Array(128).
// dims[0] is the contiguous dimension; stridesBytes has rank - 1 entries (dims 1..rank-1); every
// element stride is 1; rows outside dims are zero-filled; L2 promotion 128 bytes.
Napi::Value TensorMapEncodeTiled(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CUdeviceptr address = argPtr(info, 0, "address");
  size_t elementBytes = argSize(info, 1, "elementBytes");
  std::vector<unsigned long long> dims = argU64List(info, 2, "dims");
  std::vector<unsigned long long> strides = argU64List(info, 3, "stridesBytes");
  std::vector<unsigned long long> box64 = argU64List(info, 4, "box");
  size_t swizzleBytes = argSize(info, 5, "swizzleBytes");
  const size_t rank = dims.size();
  if (rank < 1 || rank > 5) throw Napi::RangeError::New(env, "dims must have 1 to 5 entries");
  if (strides.size() != rank - 1) throw Napi::RangeError::New(env, "stridesBytes must have dims.length - 1 entries");
  if (box64.size() != rank) throw Napi::RangeError::New(env, "box must have dims.length entries");
  int dataType;
  if (elementBytes == 2)
    dataType = CU_TENSOR_MAP_DATA_TYPE_UINT16;
  else if (elementBytes == 4)
    dataType = CU_TENSOR_MAP_DATA_TYPE_UINT32;
  else
    throw Napi::RangeError::New(env, "elementBytes must be 2 or 4");
  int swizzle;
  switch (swizzleBytes) {
    case 0: swizzle = CU_TENSOR_MAP_SWIZZLE_NONE; break;
    case 32: swizzle = CU_TENSOR_MAP_SWIZZLE_32B; break;
    case 64: swizzle = CU_TENSOR_MAP_SWIZZLE_64B; break;
    case 128: swizzle = CU_TENSOR_MAP_SWIZZLE_128B; break;
    default: throw Napi::RangeError::New(env, "swizzleBytes must be 0, 32, 64 or 128");
  }
  std::vector<unsigned> box(rank), elementStrides(rank, 1);
  for (size_t k = 0; k < rank; ++k) {
    if (box64[k] < 1 || box64[k] > 256) throw Napi::RangeError::New(env, "box entries must be 1..256");
    box[k] = static_cast<unsigned>(box64[k]);
  }
  const CudaDriver& d = ctx(env);
  if (!d.cuTensorMapEncodeTiled)
    throwError(env, "this CUDA driver has no cuTensorMapEncodeTiled (TMA needs CUDA 12.0 or newer)");
  alignas(64) unsigned char map[128];
  std::memset(map, 0, sizeof map);
  CUresult r = d.cuTensorMapEncodeTiled(map, dataType, static_cast<unsigned>(rank), reinterpret_cast<void*>(address),
                                        dims.data(), strides.data(), box.data(), elementStrides.data(),
                                        CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle, CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
                                        CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  check(env, r, "cuTensorMapEncodeTiled");
  Napi::Uint8Array out = Napi::Uint8Array::New(env, sizeof map);
  std::memcpy(out.Data(), map, sizeof map);
  return out;
}

}  // namespace

void initTensorMap(Napi::Env env, Napi::Object exports) {
  exports.Set("tensorMapEncodeTiled", Napi::Function::New(env, TensorMapEncodeTiled, "tensorMapEncodeTiled"));
}

}  // namespace tilec
