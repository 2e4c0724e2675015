// Shared helpers for the tilec CUDA addon: error conversion, the current
// context, and type-tagged handles for modules, functions, streams, events.
#pragma once

#include <napi.h>

#include <memory>
#include <string>

#include "cuda_api.h"

namespace tilec {

// Throws a JS Error "<CUDA_ERROR_NAME> in <call>" with `code` and `call`
// properties so callers can branch on the error without parsing text.
// `detail`, when given, is appended to the message on a new line.
Napi::Error cudaError(Napi::Env env, CUresult r, const char* call, const std::string& detail = "");
[[noreturn]] void throwCuda(Napi::Env env, CUresult r, const char* call);
// Throws a plain JS Error; `code` becomes the `code` property when given.
[[noreturn]] void throwError(Napi::Env env, const std::string& msg, const char* code = nullptr);

inline void check(Napi::Env env, CUresult r, const char* call) {
  if (r != CUDA_SUCCESS) throwCuda(env, r, call);
}

// The driver, with the process's context made current on the calling thread.
// Throws if init() has not succeeded.
const CudaDriver& ctx(Napi::Env env);
// Best-effort variant for finalizers: null when CUDA was never initialized
// or the context can't be bound (errors must not escape a GC callback).
const CudaDriver* ctxNoThrow();

// Native state behind the JS handles. Destructors release the CUDA object if
// it was not released explicitly, so dropped handles don't leak.
struct ModuleState {
  CUmodule mod = nullptr;
  ~ModuleState();
};
struct FunctionState {
  // Keeps the module loaded while any of its functions is reachable.
  std::shared_ptr<ModuleState> module;
  CUfunction fn = nullptr;
  std::string name;
};
struct StreamState {
  CUstream stream = nullptr;
  ~StreamState();
};
struct EventState {
  CUevent event = nullptr;
  ~EventState();
};

// Type tags: a handle of the wrong kind (or any other value) is rejected
// with a TypeError instead of being reinterpreted as a pointer.
extern const napi_type_tag kModuleTag, kFunctionTag, kStreamTag, kEventTag;

template <typename T>
Napi::Value wrapHandle(Napi::Env env, std::shared_ptr<T> state, const napi_type_tag* tag) {
  auto* box = new std::shared_ptr<T>(std::move(state));
  auto ext = Napi::External<std::shared_ptr<T>>::New(env, box,
                                                      [](Napi::Env, std::shared_ptr<T>* b) { delete b; });
  ext.TypeTag(tag);
  return ext;
}

template <typename T>
std::shared_ptr<T> unwrapHandle(Napi::Value v, const napi_type_tag* tag, const char* what) {
  if (!v.IsExternal() || !v.As<Napi::External<std::shared_ptr<T>>>().CheckTypeTag(tag)) {
    throw Napi::TypeError::New(v.Env(), std::string("expected a ") + what + " handle");
  }
  return *v.As<Napi::External<std::shared_ptr<T>>>().Data();
}

// Argument helpers that throw TypeErrors naming the argument.
CUdeviceptr argPtr(const Napi::CallbackInfo& info, size_t i, const char* name);
size_t argSize(const Napi::CallbackInfo& info, size_t i, const char* name);
// Optional stream argument: null/undefined means the legacy default stream.
CUstream argStream(const Napi::CallbackInfo& info, size_t i);
// Bytes of an ArrayBuffer, TypedArray, DataView or Buffer.
struct Bytes {
  uint8_t* data;
  size_t length;
};
Bytes argBytes(const Napi::CallbackInfo& info, size_t i, const char* name);

// Registration functions, one per source file.
void initDevice(Napi::Env env, Napi::Object exports);
void initKernel(Napi::Env env, Napi::Object exports);
void initNvrtc(Napi::Env env, Napi::Object exports);
void initHalf(Napi::Env env, Napi::Object exports);
void initCublas(Napi::Env env, Napi::Object exports);
void initNccl(Napi::Env env, Napi::Object exports);
void initTensorMap(Napi::Env env, Napi::Object exports);

}  // namespace tilec
