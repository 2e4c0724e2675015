// NVRTC bindings: compile CUDA C++ source to PTX and/or cubin.
//
// NVRTC is loaded lazily on first use and needs no GPU or driver, so kernels
// can be compiled (and cached) on a machine without a device.
#include <vector>

#include "common.h"

namespace tilec {
namespace {

struct CompileOutput {
  bool ok = false;
  std::string call;  // the failing NVRTC call, when !ok
  nvrtcResult code = 0;
  std::string log;
  std::vector<char> ptx, cubin;
};

// Pure C++ (no JS values) so it can also run on a worker thread.
CompileOutput compile(const Nvrtc& n, const std::string& src, const std::string& name,
                      const std::vector<std::string>& options) {
  CompileOutput out;
  nvrtcProgram prog = nullptr;
  auto fail = [&](nvrtcResult r, const char* call) {
    out.code = r;
    out.call = call;
    return r != 0;
  };
  if (fail(n.nvrtcCreateProgram(&prog, src.c_str(), name.c_str(), 0, nullptr, nullptr), "nvrtcCreateProgram")) {
    return out;
  }
  std::vector<const char*> opts;
  for (const std::string& o : options) opts.push_back(o.c_str());
  nvrtcResult cr = n.nvrtcCompileProgram(prog, static_cast<int>(opts.size()), opts.data());
  // The log is wanted on success too (warnings, -Xptxas -v register counts).
  size_t logSize = 0;
  if (n.nvrtcGetProgramLogSize(prog, &logSize) == 0 && logSize > 1) {
    std::vector<char> log(logSize);
    if (n.nvrtcGetProgramLog(prog, log.data()) == 0) out.log.assign(log.data());
  }
  if (!fail(cr, "nvrtcCompileProgram")) {
    // A real arch (sm_90) yields a cubin; a virtual one (compute_90) only
    // PTX. Whichever the options produced is returned; the other is skipped.
    size_t size = 0;
    if (n.nvrtcGetCUBINSize && n.nvrtcGetCUBINSize(prog, &size) == 0 && size > 0) {
      out.cubin.resize(size);
      if (n.nvrtcGetCUBIN(prog, out.cubin.data()) != 0) out.cubin.clear();
    }
    size = 0;
    if (n.nvrtcGetPTXSize(prog, &size) == 0 && size > 1) {
      out.ptx.resize(size);  // includes the NUL terminator the driver wants
      if (n.nvrtcGetPTX(prog, out.ptx.data()) != 0) out.ptx.clear();
    }
    if (out.cubin.empty() && out.ptx.empty()) fail(7 /* NVRTC_ERROR_INTERNAL_ERROR */, "nvrtcGetPTX");
    else out.ok = true;
  }
  n.nvrtcDestroyProgram(&prog);
  return out;
}

const Nvrtc& nvrtcOrThrow(Napi::Env env) {
  std::string reason;
  const Nvrtc* n = loadNvrtc(reason);
  if (!n) throwError(env, reason, "TILEC_NO_NVRTC");
  return *n;
}

struct CompileArgs {
  std::string source, name;
  std::vector<std::string> options;
};

CompileArgs parseArgs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) throw Napi::TypeError::New(env, "source must be a string");
  if (!info[1].IsString()) throw Napi::TypeError::New(env, "name must be a string");
  CompileArgs a{info[0].As<Napi::String>(), info[1].As<Napi::String>(), {}};
  if (info.Length() > 2 && !info[2].IsUndefined()) {
    if (!info[2].IsArray()) throw Napi::TypeError::New(env, "options must be an array of strings");
    auto arr = info[2].As<Napi::Array>();
    for (uint32_t i = 0; i < arr.Length(); i++) {
      Napi::Value v = arr.Get(i);
      if (!v.IsString()) throw Napi::TypeError::New(env, "options must be an array of strings");
      a.options.push_back(v.As<Napi::String>());
    }
  }
  return a;
}

// Success: {ptx?: Buffer, cubin?: Buffer, log}. Failure: an Error whose
// message is "<NVRTC_ERROR_X> in <call>" followed by the full log, with
// `log` and `code` properties.
Napi::Value toResult(Napi::Env env, const Nvrtc& n, CompileOutput& out, bool& isError) {
  if (!out.ok) {
    const char* codeName = n.nvrtcGetErrorString(out.code);
    std::string code = codeName ? codeName : "NVRTC_ERROR_" + std::to_string(out.code);
    std::string msg = code + " in " + out.call;
    if (!out.log.empty()) msg += "\n" + out.log;
    Napi::Error e = Napi::Error::New(env, msg);
    e.Set("code", code);
    e.Set("call", out.call);
    e.Set("log", out.log);
    isError = true;
    return e.Value();
  }
  isError = false;
  Napi::Object o = Napi::Object::New(env);
  if (!out.ptx.empty()) o.Set("ptx", Napi::Buffer<char>::Copy(env, out.ptx.data(), out.ptx.size()));
  if (!out.cubin.empty()) o.Set("cubin", Napi::Buffer<char>::Copy(env, out.cubin.data(), out.cubin.size()));
  o.Set("log", out.log);
  return o;
}

// nvrtcCompile(source, name, options): synchronous.
Napi::Value NvrtcCompile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CompileArgs a = parseArgs(info);
  const Nvrtc& n = nvrtcOrThrow(env);
  CompileOutput out = compile(n, a.source, a.name, a.options);
  bool isError = false;
  Napi::Value v = toResult(env, n, out, isError);
  if (isError) throw Napi::Error(env, v);
  return v;
}

// nvrtcCompileAsync(...) → Promise: compiles on the libuv thread pool so
// several kernel variants can compile in parallel (NVRTC is thread-safe
// across distinct programs) without blocking the event loop.
class CompileWorker : public Napi::AsyncWorker {
 public:
  CompileWorker(Napi::Env env, const Nvrtc& n, CompileArgs args)
      : Napi::AsyncWorker(env, "tilec.nvrtcCompile"), n_(n), args_(std::move(args)), deferred_(env) {}
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override { out_ = compile(n_, args_.source, args_.name, args_.options); }
  void OnOK() override {
    bool isError = false;
    Napi::Value v = toResult(Env(), n_, out_, isError);
    if (isError) deferred_.Reject(v);
    else deferred_.Resolve(v);
  }

 private:
  const Nvrtc& n_;
  CompileArgs args_;
  CompileOutput out_;
  Napi::Promise::Deferred deferred_;
};

Napi::Value NvrtcCompileAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CompileArgs a = parseArgs(info);
  std::string reason;
  const Nvrtc* n = loadNvrtc(reason);
  if (!n) {
    // Reject rather than throw: callers of a Promise API expect one path.
    auto d = Napi::Promise::Deferred::New(env);
    Napi::Error e = Napi::Error::New(env, reason);
    e.Set("code", "TILEC_NO_NVRTC");
    d.Reject(e.Value());
    return d.Promise();
  }
  auto* w = new CompileWorker(env, *n, std::move(a));
  Napi::Promise p = w->promise();
  w->Queue();  // the worker deletes itself after OnOK
  return p;
}

// nvrtcVersion() → {major, minor}; throws if NVRTC can't be loaded.
Napi::Value NvrtcVersion(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Nvrtc& n = nvrtcOrThrow(env);
  int major = 0, minor = 0;
  nvrtcResult r = n.nvrtcVersion(&major, &minor);
  if (r != 0) throwError(env, std::string(n.nvrtcGetErrorString(r)) + " in nvrtcVersion");
  Napi::Object o = Napi::Object::New(env);
  o.Set("major", major);
  o.Set("minor", minor);
  return o;
}

// nvrtcAvailable() → {ok, reason?, path?}; never throws.
Napi::Value NvrtcAvailable(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string reason;
  const Nvrtc* n = loadNvrtc(reason);
  Napi::Object o = Napi::Object::New(env);
  o.Set("ok", n != nullptr);
  if (n) o.Set("path", nvrtcPath());
  else o.Set("reason", reason);
  return o;
}

}  // namespace

void initNvrtc(Napi::Env env, Napi::Object exports) {
  exports.Set("nvrtcCompile", Napi::Function::New(env, NvrtcCompile, "nvrtcCompile"));
  exports.Set("nvrtcCompileAsync", Napi::Function::New(env, NvrtcCompileAsync, "nvrtcCompileAsync"));
  exports.Set("nvrtcVersion", Napi::Function::New(env, NvrtcVersion, "nvrtcVersion"));
  exports.Set("nvrtcAvailable", Napi::Function::New(env, NvrtcAvailable, "nvrtcAvailable"));
}

}  // namespace tilec
