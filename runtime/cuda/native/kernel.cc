// Modules, kernel functions, launches, streams and events.
#include <cstring>
#include <vector>

#include "common.h"

namespace tilec {

ModuleState::~ModuleState() {
  if (!mod) return;
  if (const CudaDriver* d = ctxNoThrow()) d->cuModuleUnload(mod);
}
StreamState::~StreamState() {
  if (!stream) return;
  if (const CudaDriver* d = ctxNoThrow()) d->cuStreamDestroy(stream);
}
EventState::~EventState() {
  if (!event) return;
  if (const CudaDriver* d = ctxNoThrow()) d->cuEventDestroy(event);
}

namespace {

bool startsWith(const Bytes& b, const char* magic, size_t n) {
  return b.length >= n && std::memcmp(b.data, magic, n) == 0;
}

// moduleLoadData(image): cubin (ELF), fatbin, or PTX text. PTX must be
// NUL-terminated for the driver, so unterminated text is copied and
// terminated here rather than making every caller remember it.
Napi::Value ModuleLoadData(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Bytes image = argBytes(info, 0, "image");
  if (image.length == 0) throw Napi::RangeError::New(env, "module image is empty");
  const CudaDriver& d = ctx(env);
  bool binary = startsWith(image, "\x7f" "ELF", 4) || startsWith(image, "\x50\xed\x55\xba", 4);
  std::vector<char> ptx;
  const void* data = image.data;
  if (!binary && image.data[image.length - 1] != 0) {
    ptx.assign(image.data, image.data + image.length);
    ptx.push_back(0);
    data = ptx.data();
  }
  // Capture the JIT logs: a PTX that fails to assemble otherwise reports a
  // bare CUDA_ERROR_INVALID_PTX with no line number.
  std::vector<char> errLog(16384, 0), infoLog(16384, 0);
  int opts[] = {CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES, CU_JIT_INFO_LOG_BUFFER,
                CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES};
  void* vals[] = {errLog.data(), reinterpret_cast<void*>(static_cast<uintptr_t>(errLog.size() - 1)),
                  infoLog.data(), reinterpret_cast<void*>(static_cast<uintptr_t>(infoLog.size() - 1))};
  auto state = std::make_shared<ModuleState>();
  CUresult r = d.cuModuleLoadDataEx(&state->mod, data, 4, opts, vals);
  if (r != CUDA_SUCCESS) {
    state->mod = nullptr;
    std::string log(errLog.data());
    Napi::Error e = cudaError(env, r, "cuModuleLoadDataEx", log);
    e.Set("log", log);
    throw e;
  }
  return wrapHandle(env, state, &kModuleTag);
}

Napi::Value ModuleUnload(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto m = unwrapHandle<ModuleState>(info[0], &kModuleTag, "module");
  if (m->mod) {
    CUmodule mod = m->mod;
    m->mod = nullptr;  // idempotent even if the driver call fails
    check(env, ctx(env).cuModuleUnload(mod), "cuModuleUnload");
  }
  return env.Undefined();
}

std::shared_ptr<FunctionState> argFunction(const Napi::CallbackInfo& info, size_t i) {
  auto f = unwrapHandle<FunctionState>(info[i], &kFunctionTag, "function");
  if (!f->module->mod) throwError(info.Env(), "kernel " + f->name + " belongs to an unloaded module");
  return f;
}

Napi::Value ModuleGetFunction(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto m = unwrapHandle<ModuleState>(info[0], &kModuleTag, "module");
  if (!info[1].IsString()) throw Napi::TypeError::New(env, "kernel name must be a string");
  std::string name = info[1].As<Napi::String>();
  if (!m->mod) throwError(env, "module is unloaded");
  auto f = std::make_shared<FunctionState>();
  f->module = m;
  f->name = name;
  CUresult r = ctx(env).cuModuleGetFunction(&f->fn, m->mod, name.c_str());
  if (r != CUDA_SUCCESS) {
    throw cudaError(env, r, "cuModuleGetFunction", "kernel '" + name + "' (is it declared extern \"C\"?)");
  }
  return wrapHandle(env, f, &kFunctionTag);
}

// setMaxDynamicSharedMemory(fn, bytes): needed before launching with more
// than 48 KiB of dynamic shared memory.
Napi::Value SetMaxDynamicSharedMemory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto f = argFunction(info, 0);
  size_t bytes = argSize(info, 1, "bytes");
  check(env,
        ctx(env).cuFuncSetAttribute(f->fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                    static_cast<int>(bytes)),
        "cuFuncSetAttribute");
  return env.Undefined();
}

Napi::Value FuncAttributes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto f = argFunction(info, 0);
  const CudaDriver& d = ctx(env);
  Napi::Object o = Napi::Object::New(env);
  auto get = [&](const char* key, int attr) {
    int v = 0;
    check(env, d.cuFuncGetAttribute(&v, attr, f->fn), "cuFuncGetAttribute");
    o.Set(key, v);
  };
  get("numRegs", CU_FUNC_ATTRIBUTE_NUM_REGS);
  get("sharedSizeBytes", CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES);
  get("constSizeBytes", CU_FUNC_ATTRIBUTE_CONST_SIZE_BYTES);
  get("localSizeBytes", CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES);
  get("maxThreadsPerBlock", CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK);
  get("maxDynamicSharedSizeBytes", CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES);
  get("ptxVersion", CU_FUNC_ATTRIBUTE_PTX_VERSION);
  get("binaryVersion", CU_FUNC_ATTRIBUTE_BINARY_VERSION);
  return o;
}

void argDim3(const Napi::CallbackInfo& info, size_t i, const char* name, unsigned out[3]) {
  if (!info[i].IsArray()) throw Napi::TypeError::New(info.Env(), std::string(name) + " must be an array");
  auto a = info[i].As<Napi::Array>();
  if (a.Length() < 1 || a.Length() > 3) {
    throw Napi::RangeError::New(info.Env(), std::string(name) + " must have 1 to 3 entries");
  }
  for (uint32_t k = 0; k < 3; k++) {
    out[k] = 1;
    if (k >= a.Length()) continue;
    Napi::Value v = a.Get(k);
    double x = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
    if (!(x >= 1) || x > 4294967295.0 || x != static_cast<double>(static_cast<uint64_t>(x))) {
      throw Napi::RangeError::New(info.Env(), std::string(name) + " entries must be positive integers");
    }
    out[k] = static_cast<unsigned>(x);
  }
}

// launch(fn, grid, block, sharedBytes, stream, args, offsets): `args` holds
// every kernel argument packed with natural alignment (done in TypeScript);
// `offsets` (Uint32Array) gives each argument's byte offset in it.
// cuLaunchKernel copies the argument values before returning, so the
// buffer only has to live for this call.
Napi::Value Launch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto f = argFunction(info, 0);
  unsigned grid[3], block[3];
  argDim3(info, 1, "grid", grid);
  argDim3(info, 2, "block", block);
  size_t shared = argSize(info, 3, "sharedBytes");
  if (shared > 0xFFFFFFFFull) throw Napi::RangeError::New(env, "sharedBytes exceeds 32 bits");
  CUstream stream = argStream(info, 4);
  Bytes args = argBytes(info, 5, "args");
  if (!info[6].IsTypedArray() || info[6].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array) {
    throw Napi::TypeError::New(env, "offsets must be a Uint32Array");
  }
  auto offsets = info[6].As<Napi::Uint32Array>();
  std::vector<void*> params(offsets.ElementLength());
  for (size_t k = 0; k < params.size(); k++) {
    uint32_t off = offsets[k];
    if (off >= args.length) throw Napi::RangeError::New(env, "argument offset outside the args buffer");
    params[k] = args.data + off;
  }
  check(env,
        ctx(env).cuLaunchKernel(f->fn, grid[0], grid[1], grid[2], block[0], block[1], block[2],
                                static_cast<unsigned>(shared), stream,
                                params.empty() ? nullptr : params.data(), nullptr),
        "cuLaunchKernel");
  return env.Undefined();
}

// Streams are created blocking (flags 0) on purpose: the synchronous
// memcpy calls run on the legacy default stream and must wait for kernels
// queued on our streams.
Napi::Value StreamCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto s = std::make_shared<StreamState>();
  check(env, ctx(env).cuStreamCreate(&s->stream, 0), "cuStreamCreate");
  return wrapHandle(env, s, &kStreamTag);
}

Napi::Value StreamSynchronize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto s = unwrapHandle<StreamState>(info[0], &kStreamTag, "stream");
  if (!s->stream) throwError(env, "stream is destroyed");
  check(env, ctx(env).cuStreamSynchronize(s->stream), "cuStreamSynchronize");
  return env.Undefined();
}

Napi::Value StreamDestroy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto s = unwrapHandle<StreamState>(info[0], &kStreamTag, "stream");
  if (s->stream) {
    CUstream h = s->stream;
    s->stream = nullptr;
    check(env, ctx(env).cuStreamDestroy(h), "cuStreamDestroy_v2");
  }
  return env.Undefined();
}

std::shared_ptr<EventState> argEvent(const Napi::CallbackInfo& info, size_t i) {
  auto e = unwrapHandle<EventState>(info[i], &kEventTag, "event");
  if (!e->event) throwError(info.Env(), "event is destroyed");
  return e;
}

Napi::Value EventCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto e = std::make_shared<EventState>();
  check(env, ctx(env).cuEventCreate(&e->event, 0), "cuEventCreate");
  return wrapHandle(env, e, &kEventTag);
}

Napi::Value EventRecord(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto e = argEvent(info, 0);
  CUstream s = argStream(info, 1);
  check(env, ctx(env).cuEventRecord(e->event, s), "cuEventRecord");
  return env.Undefined();
}

Napi::Value EventSynchronize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  check(env, ctx(env).cuEventSynchronize(argEvent(info, 0)->event), "cuEventSynchronize");
  return env.Undefined();
}

Napi::Value EventElapsedMs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto start = argEvent(info, 0);
  auto end = argEvent(info, 1);
  float ms = 0;
  check(env, ctx(env).cuEventElapsedTime(&ms, start->event, end->event), "cuEventElapsedTime");
  return Napi::Number::New(env, ms);
}

Napi::Value EventDestroy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto e = unwrapHandle<EventState>(info[0], &kEventTag, "event");
  if (e->event) {
    CUevent h = e->event;
    e->event = nullptr;
    check(env, ctx(env).cuEventDestroy(h), "cuEventDestroy_v2");
  }
  return env.Undefined();
}

}  // namespace

void initKernel(Napi::Env env, Napi::Object exports) {
  exports.Set("moduleLoadData", Napi::Function::New(env, ModuleLoadData, "moduleLoadData"));
  exports.Set("moduleUnload", Napi::Function::New(env, ModuleUnload, "moduleUnload"));
  exports.Set("moduleGetFunction", Napi::Function::New(env, ModuleGetFunction, "moduleGetFunction"));
  exports.Set("setMaxDynamicSharedMemory",
              Napi::Function::New(env, SetMaxDynamicSharedMemory, "setMaxDynamicSharedMemory"));
  exports.Set("funcAttributes", Napi::Function::New(env, FuncAttributes, "funcAttributes"));
  exports.Set("launch", Napi::Function::New(env, Launch, "launch"));
  exports.Set("streamCreate", Napi::Function::New(env, StreamCreate, "streamCreate"));
  exports.Set("streamSynchronize", Napi::Function::New(env, StreamSynchronize, "streamSynchronize"));
  exports.Set("streamDestroy", Napi::Function::New(env, StreamDestroy, "streamDestroy"));
  exports.Set("eventCreate", Napi::Function::New(env, EventCreate, "eventCreate"));
  exports.Set("eventRecord", Napi::Function::New(env, EventRecord, "eventRecord"));
  exports.Set("eventSynchronize", Napi::Function::New(env, EventSynchronize, "eventSynchronize"));
  exports.Set("eventElapsedMs", Napi::Function::New(env, EventElapsedMs, "eventElapsedMs"));
  exports.Set("eventDestroy", Napi::Function::New(env, EventDestroy, "eventDestroy"));
}

}  // namespace tilec
