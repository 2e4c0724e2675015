// Run-time loading of the CUDA driver and NVRTC with dlopen.
//
// Nothing CUDA-related is linked at build time, so the addon loads (and can
// report why CUDA is unusable) on any machine.
#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#include <vector>

#include "cuda_api.h"

namespace {

std::string lastDlError() {
  const char* e = dlerror();
  return e ? std::string(e) : std::string("unknown dlopen error");
}

// Resolves `name` (or the first of `names` that exists) into `slot`.
template <typename Fn>
bool resolve(void* lib, Fn& slot, std::initializer_list<const char*> names, std::string& missing) {
  for (const char* n : names) {
    void* p = dlsym(lib, n);
    if (p) {
      slot = reinterpret_cast<Fn>(p);
      return true;
    }
  }
  missing = *names.begin();
  return false;
}

std::once_flag driverOnce;
CudaDriver driver;
const CudaDriver* driverPtr = nullptr;
std::string driverReason;

void doLoadDriver() {
  // RTLD_LOCAL: keep the driver's symbols out of the global namespace so a
  // second copy loaded by another addon (e.g. a WebGPU implementation) can't
  // clash with ours.
  // $TILEC_LIBCUDA_PATH picks a specific driver (e.g. a compat library, or
  // the fake driver the tests use to run the addon without a GPU).
  const char* env = std::getenv("TILEC_LIBCUDA_PATH");
  std::string path = env && *env ? env : "libcuda.so.1";
  void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    driverReason = path + " not found: " + lastDlError();
    return;
  }
  CudaDriver& d = driver;
  std::string missing;
  // The `_v2` names are the real exports behind the header macros since
  // CUDA 3.2/11; the plain names are kept as fallbacks for old drivers.
  bool ok = resolve(lib, d.cuInit, {"cuInit"}, missing) &&
            resolve(lib, d.cuDriverGetVersion, {"cuDriverGetVersion"}, missing) &&
            resolve(lib, d.cuDeviceGetCount, {"cuDeviceGetCount"}, missing) &&
            resolve(lib, d.cuDeviceGet, {"cuDeviceGet"}, missing) &&
            resolve(lib, d.cuDeviceGetName, {"cuDeviceGetName"}, missing) &&
            resolve(lib, d.cuDeviceGetAttribute, {"cuDeviceGetAttribute"}, missing) &&
            resolve(lib, d.cuDeviceTotalMem, {"cuDeviceTotalMem_v2", "cuDeviceTotalMem"}, missing) &&
            resolve(lib, d.cuDevicePrimaryCtxRetain, {"cuDevicePrimaryCtxRetain"}, missing) &&
            resolve(lib, d.cuCtxSetCurrent, {"cuCtxSetCurrent"}, missing) &&
            resolve(lib, d.cuCtxSynchronize, {"cuCtxSynchronize"}, missing) &&
            resolve(lib, d.cuGetErrorName, {"cuGetErrorName"}, missing) &&
            resolve(lib, d.cuGetErrorString, {"cuGetErrorString"}, missing) &&
            resolve(lib, d.cuMemAlloc, {"cuMemAlloc_v2", "cuMemAlloc"}, missing) &&
            resolve(lib, d.cuMemFree, {"cuMemFree_v2", "cuMemFree"}, missing) &&
            resolve(lib, d.cuMemGetInfo, {"cuMemGetInfo_v2", "cuMemGetInfo"}, missing) &&
            resolve(lib, d.cuMemcpyHtoD, {"cuMemcpyHtoD_v2", "cuMemcpyHtoD"}, missing) &&
            resolve(lib, d.cuMemcpyDtoH, {"cuMemcpyDtoH_v2", "cuMemcpyDtoH"}, missing) &&
            resolve(lib, d.cuMemsetD8, {"cuMemsetD8_v2", "cuMemsetD8"}, missing) &&
            resolve(lib, d.cuMemsetD32, {"cuMemsetD32_v2", "cuMemsetD32"}, missing) &&
            resolve(lib, d.cuModuleLoadDataEx, {"cuModuleLoadDataEx"}, missing) &&
            resolve(lib, d.cuModuleGetFunction, {"cuModuleGetFunction"}, missing) &&
            resolve(lib, d.cuModuleUnload, {"cuModuleUnload"}, missing) &&
            resolve(lib, d.cuFuncSetAttribute, {"cuFuncSetAttribute"}, missing) &&
            resolve(lib, d.cuFuncGetAttribute, {"cuFuncGetAttribute"}, missing) &&
            resolve(lib, d.cuLaunchKernel, {"cuLaunchKernel"}, missing) &&
            resolve(lib, d.cuStreamCreate, {"cuStreamCreate"}, missing) &&
            resolve(lib, d.cuStreamSynchronize, {"cuStreamSynchronize"}, missing) &&
            resolve(lib, d.cuStreamDestroy, {"cuStreamDestroy_v2", "cuStreamDestroy"}, missing) &&
            resolve(lib, d.cuEventCreate, {"cuEventCreate"}, missing) &&
            resolve(lib, d.cuEventRecord, {"cuEventRecord"}, missing) &&
            resolve(lib, d.cuEventSynchronize, {"cuEventSynchronize"}, missing) &&
            // _v2 exists from CUDA 12.8 and is the only one in CUDA 13 headers.
            resolve(lib, d.cuEventElapsedTime, {"cuEventElapsedTime_v2", "cuEventElapsedTime"}, missing) &&
            resolve(lib, d.cuEventDestroy, {"cuEventDestroy_v2", "cuEventDestroy"}, missing);
  if (!ok) {
    driverReason = path + " lacks symbol " + missing + " (driver too old?)";
    dlclose(lib);
    return;
  }
  std::string ignored;
  if (!resolve(lib, d.cuTensorMapEncodeTiled, {"cuTensorMapEncodeTiled"}, ignored)) d.cuTensorMapEncodeTiled = nullptr;
  driverPtr = &driver;
}

std::once_flag nvrtcOnce;
Nvrtc nvrtc;
const Nvrtc* nvrtcPtr = nullptr;
std::string nvrtcReason;
std::string nvrtcLoadedFrom;

void doLoadNvrtc() {
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("TILEC_NVRTC_PATH"); env && *env) {
    candidates.push_back(env);
  } else {
    const char* names[] = {"libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"};
    const char* dirs[] = {"", "/usr/local/cuda/lib64/", "/usr/local/cuda/targets/x86_64-linux/lib/"};
    for (const char* dir : dirs)
      for (const char* n : names) candidates.push_back(std::string(dir) + n);
  }
  void* lib = nullptr;
  std::string errors;
  for (const std::string& c : candidates) {
    lib = dlopen(c.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (lib) {
      nvrtcLoadedFrom = c;
      break;
    }
    if (errors.empty()) errors = lastDlError();  // the first error is the informative one
  }
  if (!lib) {
    nvrtcReason = "libnvrtc not found (tried libnvrtc.so.13, .so.12, .so and /usr/local/cuda): " + errors;
    return;
  }
  Nvrtc& n = nvrtc;
  std::string missing;
  bool ok = resolve(lib, n.nvrtcGetErrorString, {"nvrtcGetErrorString"}, missing) &&
            resolve(lib, n.nvrtcVersion, {"nvrtcVersion"}, missing) &&
            resolve(lib, n.nvrtcCreateProgram, {"nvrtcCreateProgram"}, missing) &&
            resolve(lib, n.nvrtcDestroyProgram, {"nvrtcDestroyProgram"}, missing) &&
            resolve(lib, n.nvrtcCompileProgram, {"nvrtcCompileProgram"}, missing) &&
            resolve(lib, n.nvrtcGetProgramLogSize, {"nvrtcGetProgramLogSize"}, missing) &&
            resolve(lib, n.nvrtcGetProgramLog, {"nvrtcGetProgramLog"}, missing) &&
            resolve(lib, n.nvrtcGetPTXSize, {"nvrtcGetPTXSize"}, missing) &&
            resolve(lib, n.nvrtcGetPTX, {"nvrtcGetPTX"}, missing);
  if (!ok) {
    nvrtcReason = nvrtcLoadedFrom + " lacks symbol " + missing;
    dlclose(lib);
    return;
  }
  std::string ignored;
  if (!resolve(lib, n.nvrtcGetCUBINSize, {"nvrtcGetCUBINSize"}, ignored) ||
      !resolve(lib, n.nvrtcGetCUBIN, {"nvrtcGetCUBIN"}, ignored)) {
    n.nvrtcGetCUBINSize = nullptr;
    n.nvrtcGetCUBIN = nullptr;
  }
  nvrtcPtr = &nvrtc;
}

}  // namespace

const CudaDriver* loadDriver(std::string& reason) {
  std::call_once(driverOnce, doLoadDriver);
  if (!driverPtr) reason = driverReason;
  return driverPtr;
}

const Nvrtc* loadNvrtc(std::string& reason) {
  std::call_once(nvrtcOnce, doLoadNvrtc);
  if (!nvrtcPtr) reason = nvrtcReason;
  return nvrtcPtr;
}

std::string nvrtcPath() { return nvrtcPtr ? nvrtcLoadedFrom : std::string(); }
