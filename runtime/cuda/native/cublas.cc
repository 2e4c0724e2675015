// cuBLAS, loaded at run time with dlopen like the driver and NVRTC: the DiT's matrix products
// (bf16 operands, fp32 accumulation) go through cublasGemmStridedBatchedEx. Nothing is linked at
// build time, so the addon still builds and loads where there is no CUDA toolkit; a missing
// library is reported by cublasAvailable() and by the first gemm call, with where it looked.
#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#include <vector>

#include "common.h"

namespace tilec {

namespace {

typedef struct cublasContext* cublasHandle_t;
typedef int cublasStatus_t;  // CUBLAS_STATUS_SUCCESS = 0

// Values from cublas_api.h / library_types.h (stable ABI).
enum : int { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 };
enum : int { CUDA_R_32F = 0, CUDA_R_16F = 2, CUDA_R_16BF = 14 };
enum : int { CUBLAS_COMPUTE_32F = 68 };
enum : int { CUBLAS_GEMM_DEFAULT = -1 };

struct Cublas {
  cublasStatus_t (*create)(cublasHandle_t*);
  cublasStatus_t (*setStream)(cublasHandle_t, CUstream);
  cublasStatus_t (*gemmStridedBatchedEx)(cublasHandle_t, int, int, int, int, int, const void*, const void*,
                                         int, int, long long, const void*, int, int, long long,
                                         const void*, void*, int, int, long long, int, int, int);
  const char* (*getStatusString)(cublasStatus_t);  // optional (cuBLAS >= 11.4)
  cublasStatus_t (*getVersion)(cublasHandle_t, int*);
};

std::once_flag loadOnce;
Cublas api;
bool loaded = false;
std::string loadReason;
std::string loadedFrom;
cublasHandle_t handle = nullptr;

std::vector<std::string> candidateDirs() {
  std::vector<std::string> dirs = {"", "/usr/local/cuda/lib64/", "/usr/local/cuda/targets/x86_64-linux/lib/",
                                   "/usr/lib/x86_64-linux-gnu/"};
  // PyTorch's wheels carry their own copy (nvidia/cu13/lib, nvidia/cublas/lib for CUDA 12).
  for (const char* base : {"/usr/local/lib/python3.", "/usr/lib/python3."})
    for (int minor = 14; minor >= 9; minor--)
      for (const char* site : {"/dist-packages/nvidia/", "/site-packages/nvidia/"})
        for (const char* sub : {"cu13/lib/", "cublas/lib/"})
          dirs.push_back(std::string(base) + std::to_string(minor) + site + sub);
  return dirs;
}

void doLoad() {
  std::vector<std::string> names = {"libcublas.so.13", "libcublas.so.12", "libcublas.so"};
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("TILEC_CUBLAS_PATH"); env && *env) {
    candidates.push_back(env);
  } else {
    for (const std::string& dir : candidateDirs())
      for (const std::string& n : names) candidates.push_back(dir + n);
  }
  void* lib = nullptr;
  std::string firstError;
  for (const std::string& c : candidates) {
    // libcublas needs libcublasLt of the same version; outside the loader's search path it is only
    // found when loaded first from the same directory (the loader then matches it by soname).
    size_t slash = c.rfind('/');
    if (slash != std::string::npos) {
      std::string lt = c.substr(0, slash + 1) + "libcublasLt" + c.substr(c.rfind(".so"));
      dlopen(lt.c_str(), RTLD_NOW | RTLD_LOCAL);
    }
    lib = dlopen(c.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (lib) {
      loadedFrom = c;
      break;
    }
    if (firstError.empty()) {
      const char* e = dlerror();
      firstError = e ? e : "unknown dlopen error";
    }
  }
  if (!lib) {
    loadReason =
        "libcublas not found (tried libcublas.so.13/.12 on the loader path, /usr/local/cuda and PyTorch's "
        "nvidia/cu13/lib; set TILEC_CUBLAS_PATH to the library): " +
        firstError;
    return;
  }
  auto sym = [&](const char* n) { return dlsym(lib, n); };
  api.create = reinterpret_cast<decltype(api.create)>(sym("cublasCreate_v2"));
  api.setStream = reinterpret_cast<decltype(api.setStream)>(sym("cublasSetStream_v2"));
  api.gemmStridedBatchedEx =
      reinterpret_cast<decltype(api.gemmStridedBatchedEx)>(sym("cublasGemmStridedBatchedEx"));
  api.getStatusString = reinterpret_cast<decltype(api.getStatusString)>(sym("cublasGetStatusString"));
  api.getVersion = reinterpret_cast<decltype(api.getVersion)>(sym("cublasGetVersion_v2"));
  if (!api.create || !api.setStream || !api.gemmStridedBatchedEx || !api.getVersion) {
    loadReason = loadedFrom + " lacks cublasCreate_v2/cublasSetStream_v2/cublasGemmStridedBatchedEx";
    return;
  }
  loaded = true;
}

const Cublas& load(Napi::Env env) {
  std::call_once(loadOnce, doLoad);
  if (!loaded) throwError(env, loadReason, "TILEC_NO_CUBLAS");
  return api;
}

void checkBlas(Napi::Env env, cublasStatus_t s, const char* call) {
  if (s == 0) return;
  std::string why = api.getStatusString ? api.getStatusString(s) : "status " + std::to_string(s);
  throwError(env, std::string(call) + " failed: " + why, "TILEC_CUBLAS_ERROR");
}

// One handle for the process, created on the primary context on first use.
cublasHandle_t ensureHandle(Napi::Env env) {
  const Cublas& b = load(env);
  ctx(env);
  if (!handle) checkBlas(env, b.create(&handle), "cublasCreate_v2");
  return handle;
}

Napi::Value CublasAvailable(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::call_once(loadOnce, doLoad);
  Napi::Object o = Napi::Object::New(env);
  o.Set("ok", loaded);
  if (loaded) o.Set("path", loadedFrom);
  else o.Set("reason", loadReason);
  return o;
}

int argDataType(Napi::Env env, Napi::Value v, const char* name) {
  std::string s = v.IsString() ? v.As<Napi::String>().Utf8Value() : "";
  if (s == "bf16") return CUDA_R_16BF;
  if (s == "fp16") return CUDA_R_16F;
  if (s == "fp32") return CUDA_R_32F;
  throw Napi::TypeError::New(env, std::string(name) + " must be 'bf16', 'fp16' or 'fp32'");
}

// cublasGemm(o): column-major C = alpha·op(A)·op(B) + beta·C over `batch` strided matrices, fp32
// accumulation. o = {transA, transB, m, n, k, alpha, beta, a, lda, strideA, aType, b, ldb, strideB,
// bType, c, ldc, strideC, cType, batch, stream}. The row-major translation lives in cublas.ts.
Napi::Value CublasGemm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject()) throw Napi::TypeError::New(env, "cublasGemm takes one options object");
  Napi::Object o = info[0].As<Napi::Object>();
  auto num = [&](const char* key) -> double {
    Napi::Value v = o.Get(key);
    if (!v.IsNumber()) throw Napi::TypeError::New(env, std::string(key) + " must be a number");
    return v.As<Napi::Number>().DoubleValue();
  };
  auto integer = [&](const char* key) -> long long {
    double v = num(key);
    if (!(v >= 0) || v != static_cast<double>(static_cast<long long>(v)) || v > 9007199254740991.0)
      throw Napi::RangeError::New(env, std::string(key) + " must be a non-negative integer");
    return static_cast<long long>(v);
  };
  auto ptr = [&](const char* key) -> CUdeviceptr {
    Napi::Value v = o.Get(key);
    if (!v.IsBigInt()) throw Napi::TypeError::New(env, std::string(key) + " must be a bigint pointer");
    bool lossless = false;
    uint64_t p = v.As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) throw Napi::RangeError::New(env, std::string(key) + " is not a valid pointer");
    return static_cast<CUdeviceptr>(p);
  };
  auto i32 = [&](const char* key) -> int {
    long long v = integer(key);
    if (v > 0x7fffffff) throw Napi::RangeError::New(env, std::string(key) + " exceeds int32");
    return static_cast<int>(v);
  };
  int transA = o.Get("transA").ToBoolean() ? CUBLAS_OP_T : CUBLAS_OP_N;
  int transB = o.Get("transB").ToBoolean() ? CUBLAS_OP_T : CUBLAS_OP_N;
  int m = i32("m"), n = i32("n"), k = i32("k");
  float alpha = static_cast<float>(num("alpha")), beta = static_cast<float>(num("beta"));
  int aType = argDataType(env, o.Get("aType"), "aType");
  int bType = argDataType(env, o.Get("bType"), "bType");
  int cType = argDataType(env, o.Get("cType"), "cType");
  CUstream stream = nullptr;
  Napi::Value s = o.Get("stream");
  if (!s.IsNull() && !s.IsUndefined()) {
    stream = unwrapHandle<StreamState>(s, &kStreamTag, "stream")->stream;
    if (!stream) throwError(env, "stream is destroyed");
  }
  cublasHandle_t h = ensureHandle(env);
  checkBlas(env, api.setStream(h, stream), "cublasSetStream_v2");
  checkBlas(env,
            api.gemmStridedBatchedEx(h, transA, transB, m, n, k, &alpha, reinterpret_cast<void*>(ptr("a")),
                                     aType, i32("lda"), integer("strideA"),
                                     reinterpret_cast<void*>(ptr("b")), bType, i32("ldb"),
                                     integer("strideB"), &beta, reinterpret_cast<void*>(ptr("c")), cType,
                                     i32("ldc"), integer("strideC"), i32("batch"), CUBLAS_COMPUTE_32F,
                                     CUBLAS_GEMM_DEFAULT),
            "cublasGemmStridedBatchedEx");
  return env.Undefined();
}

Napi::Value CublasVersion(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int v = 0;
  checkBlas(env, api.getVersion(ensureHandle(env), &v), "cublasGetVersion_v2");
  return Napi::Number::New(env, v);
}

}  // namespace

void initCublas(Napi::Env env, Napi::Object exports) {
  exports.Set("cublasAvailable", Napi::Function::New(env, CublasAvailable, "cublasAvailable"));
  exports.Set("cublasGemm", Napi::Function::New(env, CublasGemm, "cublasGemm"));
  exports.Set("cublasVersion", Napi::Function::New(env, CublasVersion, "cublasVersion"));
}

}  // namespace tilec
