// tilec CUDA addon: entry point, error conversion, context, device queries
// and device memory. Kernels/streams/events live in kernel.cc, NVRTC in
// nvrtc.cc, half-precision conversion in half.cc.
#include <atomic>
#include <cmath>
#include <mutex>

#include "common.h"

namespace tilec {

const napi_type_tag kModuleTag = {0x7469'6c65'635f'6d6fULL, 0x6475'6c65'0000'0001ULL};
const napi_type_tag kFunctionTag = {0x7469'6c65'635f'6675ULL, 0x6e63'0000'0000'0002ULL};
const napi_type_tag kStreamTag = {0x7469'6c65'635f'7374ULL, 0x7265'616d'0000'0003ULL};
const napi_type_tag kEventTag = {0x7469'6c65'635f'6576ULL, 0x656e'7400'0000'0004ULL};

namespace {

// One primary context per process: tilec drives a single GPU, and the
// primary context is the one the runtime API and other libraries share.
std::mutex initMutex;
const CudaDriver* drv = nullptr;
std::atomic<CUcontext> primaryCtx{nullptr};
CUdevice device = 0;
int deviceOrdinal = -1;
// Contexts are current per OS thread; worker threads bind on first use.
thread_local CUcontext boundCtx = nullptr;

std::string errorName(const CudaDriver* d, CUresult r) {
  const char* name = nullptr;
  if (d && d->cuGetErrorName(r, &name) == CUDA_SUCCESS && name) return name;
  return "CUDA_ERROR_" + std::to_string(r);
}

}  // namespace

Napi::Error cudaError(Napi::Env env, CUresult r, const char* call, const std::string& detail) {
  std::string err;
  const CudaDriver* d = drv ? drv : loadDriver(err);
  std::string name = errorName(d, r);
  std::string msg = name + " in " + call;
  const char* desc = nullptr;
  if (d && d->cuGetErrorString(r, &desc) == CUDA_SUCCESS && desc) msg += std::string(" (") + desc + ")";
  if (!detail.empty()) msg += "\n" + detail;
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("code", Napi::String::New(env, name));
  e.Set("call", Napi::String::New(env, call));
  e.Set("cuResult", Napi::Number::New(env, r));
  return e;
}

void throwCuda(Napi::Env env, CUresult r, const char* call) { throw cudaError(env, r, call); }

void throwError(Napi::Env env, const std::string& msg, const char* code) {
  Napi::Error e = Napi::Error::New(env, msg);
  if (code) e.Set("code", Napi::String::New(env, code));
  throw e;
}

const CudaDriver& ctx(Napi::Env env) {
  CUcontext c = primaryCtx.load();
  if (!c) throwError(env, "CUDA is not initialized: call init(ordinal) first", "TILEC_NOT_INITIALIZED");
  if (boundCtx != c) {
    check(env, drv->cuCtxSetCurrent(c), "cuCtxSetCurrent");
    boundCtx = c;
  }
  return *drv;
}

const CudaDriver* ctxNoThrow() {
  CUcontext c = primaryCtx.load();
  if (!c) return nullptr;
  if (boundCtx != c) {
    if (drv->cuCtxSetCurrent(c) != CUDA_SUCCESS) return nullptr;
    boundCtx = c;
  }
  return drv;
}

CUdeviceptr argPtr(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (!info[i].IsBigInt()) throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a bigint");
  bool lossless = false;
  uint64_t v = info[i].As<Napi::BigInt>().Uint64Value(&lossless);
  if (!lossless) throw Napi::RangeError::New(info.Env(), std::string(name) + " is not a valid pointer");
  return static_cast<CUdeviceptr>(v);
}

size_t argSize(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (!info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a number");
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (!(v >= 0) || v > 9007199254740991.0 || std::floor(v) != v) {
    throw Napi::RangeError::New(info.Env(), std::string(name) + " must be a non-negative integer");
  }
  return static_cast<size_t>(v);
}

CUstream argStream(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() <= i || info[i].IsNull() || info[i].IsUndefined()) return nullptr;
  CUstream s = unwrapHandle<StreamState>(info[i], &kStreamTag, "stream")->stream;
  // A destroyed stream must not silently become the default stream.
  if (!s) throwError(info.Env(), "stream is destroyed");
  return s;
}

Bytes argBytes(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = info[i];
  if (v.IsArrayBuffer()) {
    auto ab = v.As<Napi::ArrayBuffer>();
    return {static_cast<uint8_t*>(ab.Data()), ab.ByteLength()};
  }
  if (v.IsTypedArray()) {
    auto ta = v.As<Napi::TypedArray>();
    auto* base = static_cast<uint8_t*>(ta.ArrayBuffer().Data());
    return {base + ta.ByteOffset(), ta.ByteLength()};
  }
  if (v.IsDataView()) {
    auto dv = v.As<Napi::DataView>();
    return {static_cast<uint8_t*>(dv.Data()), dv.ByteLength()};
  }
  throw Napi::TypeError::New(info.Env(), std::string(name) + " must be an ArrayBuffer or a view of one");
}

namespace {

// available(): never throws; loads the driver and checks for a device.
Napi::Value Available(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  std::string reason;
  const CudaDriver* d = loadDriver(reason);
  auto fail = [&](const std::string& why) {
    out.Set("ok", false);
    out.Set("reason", why);
    return out;
  };
  if (!d) return fail(reason);
  CUresult r = d->cuInit(0);
  if (r != CUDA_SUCCESS) return fail("cuInit failed: " + errorName(d, r));
  int count = 0;
  r = d->cuDeviceGetCount(&count);
  if (r != CUDA_SUCCESS) return fail("cuDeviceGetCount failed: " + errorName(d, r));
  if (count == 0) return fail("no CUDA devices found");
  int version = 0;
  d->cuDriverGetVersion(&version);
  out.Set("ok", true);
  out.Set("deviceCount", count);
  out.Set("driverVersion", version);
  return out;
}

// init(ordinal): retains the device's primary context and makes it current.
// Repeating it with the same ordinal is a no-op.
Napi::Value Init(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int ordinal = info.Length() > 0 ? static_cast<int>(argSize(info, 0, "ordinal")) : 0;
  std::lock_guard<std::mutex> lock(initMutex);
  if (primaryCtx.load()) {
    if (ordinal != deviceOrdinal) {
      throwError(env,
                 "CUDA already initialized on device " + std::to_string(deviceOrdinal) +
                     "; tilec drives one device per process",
                 "TILEC_DEVICE_MISMATCH");
    }
    ctx(env);
    return env.Undefined();
  }
  std::string reason;
  const CudaDriver* d = loadDriver(reason);
  if (!d) throwError(env, reason, "TILEC_NO_DRIVER");
  drv = d;
  check(env, d->cuInit(0), "cuInit");
  int count = 0;
  check(env, d->cuDeviceGetCount(&count), "cuDeviceGetCount");
  if (ordinal >= count) {
    throwError(env, "CUDA device " + std::to_string(ordinal) + " requested but " + std::to_string(count) +
                        " device(s) present", "TILEC_NO_DEVICE");
  }
  CUdevice dev = 0;
  check(env, d->cuDeviceGet(&dev, ordinal), "cuDeviceGet");
  CUcontext c = nullptr;
  check(env, d->cuDevicePrimaryCtxRetain(&c, dev), "cuDevicePrimaryCtxRetain");
  check(env, d->cuCtxSetCurrent(c), "cuCtxSetCurrent");
  boundCtx = c;
  device = dev;
  deviceOrdinal = ordinal;
  primaryCtx.store(c);
  return env.Undefined();
}

Napi::Value DeviceInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const CudaDriver& d = ctx(env);
  char name[256] = {0};
  check(env, d.cuDeviceGetName(name, sizeof(name) - 1, device), "cuDeviceGetName");
  auto attr = [&](int a) {
    int v = 0;
    check(env, d.cuDeviceGetAttribute(&v, a, device), "cuDeviceGetAttribute");
    return v;
  };
  size_t total = 0;
  check(env, d.cuDeviceTotalMem(&total, device), "cuDeviceTotalMem_v2");
  int version = 0;
  check(env, d.cuDriverGetVersion(&version), "cuDriverGetVersion");
  Napi::Object o = Napi::Object::New(env);
  o.Set("ordinal", deviceOrdinal);
  o.Set("name", name);
  o.Set("ccMajor", attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR));
  o.Set("ccMinor", attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR));
  o.Set("smCount", attr(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT));
  o.Set("sharedMemPerBlockOptin", attr(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN));
  o.Set("l2Bytes", attr(CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE));
  o.Set("totalMem", static_cast<double>(total));
  o.Set("driverVersion", version);
  return o;
}

Napi::Value Synchronize(const Napi::CallbackInfo& info) {
  check(info.Env(), ctx(info.Env()).cuCtxSynchronize(), "cuCtxSynchronize");
  return info.Env().Undefined();
}

Napi::Value MemAlloc(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t bytes = argSize(info, 0, "bytes");
  CUdeviceptr p = 0;
  check(env, ctx(env).cuMemAlloc(&p, bytes), "cuMemAlloc_v2");
  return Napi::BigInt::New(env, static_cast<uint64_t>(p));
}

Napi::Value MemFree(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CUdeviceptr p = argPtr(info, 0, "ptr");
  check(env, ctx(env).cuMemFree(p), "cuMemFree_v2");
  return env.Undefined();
}

// memcpyHtoD(dst, src): copies all of src's bytes (views honour byteOffset).
Napi::Value MemcpyHtoD(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CUdeviceptr dst = argPtr(info, 0, "dst");
  Bytes src = argBytes(info, 1, "src");
  if (src.length) check(env, ctx(env).cuMemcpyHtoD(dst, src.data, src.length), "cuMemcpyHtoD_v2");
  return env.Undefined();
}

// memcpyDtoH(dst, src): fills all of dst's bytes from device memory.
Napi::Value MemcpyDtoH(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Bytes dst = argBytes(info, 0, "dst");
  CUdeviceptr src = argPtr(info, 1, "src");
  if (dst.length) check(env, ctx(env).cuMemcpyDtoH(dst.data, src, dst.length), "cuMemcpyDtoH_v2");
  return env.Undefined();
}

uint32_t argU32(const Napi::CallbackInfo& info, size_t i, const char* name) {
  size_t v = argSize(info, i, name);
  if (v > 0xFFFFFFFFull) throw Napi::RangeError::New(info.Env(), std::string(name) + " exceeds 32 bits");
  return static_cast<uint32_t>(v);
}

// memsetD8(ptr, byteValue, count) / memsetD32(ptr, u32Value, count):
// used to poison outputs so unwritten elements read back as NaN.
Napi::Value MemsetD8(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CUdeviceptr p = argPtr(info, 0, "ptr");
  uint32_t v = argU32(info, 1, "value");
  size_t n = argSize(info, 2, "count");
  check(env, ctx(env).cuMemsetD8(p, static_cast<unsigned char>(v & 0xFF), n), "cuMemsetD8_v2");
  return env.Undefined();
}

Napi::Value MemsetD32(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CUdeviceptr p = argPtr(info, 0, "ptr");
  uint32_t v = argU32(info, 1, "value");
  size_t n = argSize(info, 2, "count");
  check(env, ctx(env).cuMemsetD32(p, v, n), "cuMemsetD32_v2");
  return env.Undefined();
}

Napi::Value MemGetInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t freeB = 0, totalB = 0;
  check(env, ctx(env).cuMemGetInfo(&freeB, &totalB), "cuMemGetInfo_v2");
  Napi::Object o = Napi::Object::New(env);
  o.Set("free", static_cast<double>(freeB));
  o.Set("total", static_cast<double>(totalB));
  return o;
}

}  // namespace

void initDevice(Napi::Env env, Napi::Object exports) {
  exports.Set("available", Napi::Function::New(env, Available, "available"));
  exports.Set("init", Napi::Function::New(env, Init, "init"));
  exports.Set("deviceInfo", Napi::Function::New(env, DeviceInfo, "deviceInfo"));
  exports.Set("synchronize", Napi::Function::New(env, Synchronize, "synchronize"));
  exports.Set("memAlloc", Napi::Function::New(env, MemAlloc, "memAlloc"));
  exports.Set("memFree", Napi::Function::New(env, MemFree, "memFree"));
  exports.Set("memcpyHtoD", Napi::Function::New(env, MemcpyHtoD, "memcpyHtoD"));
  exports.Set("memcpyDtoH", Napi::Function::New(env, MemcpyDtoH, "memcpyDtoH"));
  exports.Set("memsetD8", Napi::Function::New(env, MemsetD8, "memsetD8"));
  exports.Set("memsetD32", Napi::Function::New(env, MemsetD32, "memsetD32"));
  exports.Set("memGetInfo", Napi::Function::New(env, MemGetInfo, "memGetInfo"));
}

}  // namespace tilec

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) {
  tilec::initDevice(env, exports);
  tilec::initKernel(env, exports);
  tilec::initNvrtc(env, exports);
  tilec::initHalf(env, exports);
  tilec::initCublas(env, exports);
  tilec::initNccl(env, exports);
  tilec::initTensorMap(env, exports);
  return exports;
}

NODE_API_MODULE(tilec_cuda, InitAddon)
