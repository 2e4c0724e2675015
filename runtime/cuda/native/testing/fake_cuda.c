/*
 * A fake CUDA driver and NVRTC backed by host memory, for testing the addon
 * on machines without a GPU (test/runtime/cuda-fake.test.ts builds it and
 * points $TILEC_LIBCUDA_PATH / $TILEC_NVRTC_PATH at it). It is not part of
 * the addon.
 *
 * "Device" pointers are host pointers, modules ignore their image, and the
 * kernels used by cuda-gpu.test.ts are C functions that read their
 * arguments from kernelParams exactly as the GPU would, so argument
 * packing, handles, error naming and memory accounting are all exercised.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef int CUresult;
typedef unsigned long long CUdeviceptr;

enum { INVALID_VALUE = 1, OUT_OF_MEMORY = 2, INVALID_DEVICE = 101, INVALID_PTX = 218, NOT_FOUND = 500 };
static const size_t TOTAL = 80ull << 30;
static const int SMEM_OPTIN = 232448;
/* Distinctive, so the test can tell it is talking to this fake. */
enum { FAKE_DRIVER_VERSION = 99990 };
static size_t used = 0;

static const char* errName(CUresult r) {
  switch (r) {
    case INVALID_VALUE: return "CUDA_ERROR_INVALID_VALUE";
    case OUT_OF_MEMORY: return "CUDA_ERROR_OUT_OF_MEMORY";
    case INVALID_DEVICE: return "CUDA_ERROR_INVALID_DEVICE";
    case INVALID_PTX: return "CUDA_ERROR_INVALID_PTX";
    case NOT_FOUND: return "CUDA_ERROR_NOT_FOUND";
    default: return NULL;
  }
}

CUresult cuInit(unsigned flags) { return 0; }
CUresult cuDriverGetVersion(int* v) { *v = FAKE_DRIVER_VERSION; return 0; }
/* TILEC_FAKE_DEVICE_COUNT GPUs (default 1), for tests of a rank that drives device 1. */
static int deviceCount(void) {
  const char* n = getenv("TILEC_FAKE_DEVICE_COUNT");
  return n && atoi(n) > 0 ? atoi(n) : 1;
}
CUresult cuDeviceGetCount(int* c) { *c = deviceCount(); return 0; }
CUresult cuDeviceGet(int* d, int ordinal) {
  *d = ordinal;
  return ordinal >= 0 && ordinal < deviceCount() ? 0 : INVALID_DEVICE;
}
CUresult cuDeviceGetName(char* name, int len, int d) { snprintf(name, len, "Fake GPU"); return 0; }
CUresult cuDeviceGetAttribute(int* v, int attr, int d) {
  switch (attr) {
    case 16: *v = 132; return 0;        /* SM count */
    case 38: *v = 50 << 20; return 0;   /* L2 bytes */
    case 75: *v = 9; return 0;          /* cc major */
    case 76: *v = 0; return 0;          /* cc minor */
    case 97: *v = SMEM_OPTIN; return 0; /* shared memory per block, opt-in */
    default: return INVALID_VALUE;
  }
}
CUresult cuDeviceTotalMem_v2(size_t* t, int d) { *t = TOTAL; return 0; }
CUresult cuDevicePrimaryCtxRetain(void** c, int d) { *c = (void*)0x1; return 0; }
CUresult cuCtxSetCurrent(void* c) { return 0; }
CUresult cuCtxSynchronize(void) { return 0; }
CUresult cuGetErrorName(CUresult r, const char** s) { *s = errName(r); return *s ? 0 : INVALID_VALUE; }
CUresult cuGetErrorString(CUresult r, const char** s) { *s = errName(r) ? "fake driver error" : NULL; return *s ? 0 : INVALID_VALUE; }

/* Allocations carry their size in a header so cuMemGetInfo can account. */
CUresult cuMemAlloc_v2(CUdeviceptr* p, size_t n) {
  if (n == 0) return INVALID_VALUE;
  if (n > TOTAL - used) return OUT_OF_MEMORY;
  size_t* b = malloc(n + 16);
  if (!b) return OUT_OF_MEMORY;
  b[0] = n;
  used += n;
  *p = (CUdeviceptr)(b + 2);
  return 0;
}
CUresult cuMemFree_v2(CUdeviceptr p) {
  if (p < 4096) return INVALID_VALUE;
  size_t* b = (size_t*)p - 2;
  used -= b[0];
  free(b);
  return 0;
}
CUresult cuMemGetInfo_v2(size_t* f, size_t* t) { *f = TOTAL - used; *t = TOTAL; return 0; }
CUresult cuMemcpyHtoD_v2(CUdeviceptr d, const void* s, size_t n) { memcpy((void*)d, s, n); return 0; }
CUresult cuMemcpyDtoH_v2(void* d, CUdeviceptr s, size_t n) { memcpy(d, (void*)s, n); return 0; }
CUresult cuMemsetD8_v2(CUdeviceptr d, unsigned char v, size_t n) { memset((void*)d, v, n); return 0; }
CUresult cuMemsetD32_v2(CUdeviceptr d, unsigned v, size_t n) {
  for (size_t i = 0; i < n; i++) ((unsigned*)d)[i] = v;
  return 0;
}

typedef void (*KernelFn)(unsigned threads, void** p);
typedef struct { const char* name; KernelFn run; int maxDynamicShared; } Function;

static void axpy(unsigned threads, void** p) {
  float a = *(float*)p[0];
  const float* x = *(float**)p[1];
  float* y = *(float**)p[2];
  int n = *(int*)p[3];
  for (int i = 0; i < n && (unsigned)i < threads; i++) y[i] = a * x[i] + y[i];
}
static void scalars(unsigned threads, void** p) {
  float* o = *(float**)p[0];
  o[0] = (float)*(int*)p[1];
  o[1] = (float)*(unsigned*)p[2];
  o[2] = *(float*)p[3];
  o[3] = (float)*(long long*)p[4];
  o[4] = (float)*(double*)p[5];
}
static void bigShared(unsigned threads, void** p) { (*(float**)p[0])[0] = (float)(*(int*)p[1] - 1); }
static void spin(unsigned threads, void** p) {
  usleep((useconds_t)(*(long long*)p[0] / 2000)); /* "cycles" at ~2 GHz */
  **(int**)p[1] += 1;
}
static Function functions[] = {
    {"axpy", axpy, 48 << 10}, {"scalars", scalars, 48 << 10}, {"bigShared", bigShared, 48 << 10}, {"spin", spin, 48 << 10}};

CUresult cuModuleLoadDataEx(void** m, const void* image, unsigned n, int* opts, void** vals) {
  const char* s = image;
  if (memcmp(s, "\x7f" "ELF", 4) == 0 || strstr(s, ".entry")) {
    *m = malloc(1);
    return 0;
  }
  for (unsigned i = 0; i < n; i++)
    if (opts[i] == 5 /* CU_JIT_ERROR_LOG_BUFFER */) snprintf(vals[i], 64, "ptxas fatal: fake driver rejects this image");
  return INVALID_PTX;
}
CUresult cuModuleGetFunction(void** f, void* m, const char* name) {
  for (size_t i = 0; i < sizeof functions / sizeof *functions; i++) {
    if (!strcmp(functions[i].name, name)) {
      *f = &functions[i];
      return 0;
    }
  }
  return NOT_FOUND;
}
CUresult cuModuleUnload(void* m) { free(m); return 0; }
CUresult cuFuncSetAttribute(void* f, int attr, int v) {
  if (attr != 8 || v > SMEM_OPTIN) return INVALID_VALUE;
  ((Function*)f)->maxDynamicShared = v;
  return 0;
}
CUresult cuFuncGetAttribute(int* v, int attr, void* f) {
  *v = attr == 8 ? ((Function*)f)->maxDynamicShared : attr == 0 ? 1024 : 32;
  return 0;
}
CUresult cuLaunchKernel(void* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned shared, void* stream, void** params, void** extra) {
  Function* fn = f;
  if ((unsigned long long)bx * by * bz > 1024 || shared > (unsigned)fn->maxDynamicShared) return INVALID_VALUE;
  fn->run(gx * gy * gz * bx * by * bz, params);
  return 0;
}
CUresult cuStreamCreate(void** s, unsigned flags) { *s = malloc(1); return 0; }
CUresult cuStreamSynchronize(void* s) { return 0; }
CUresult cuStreamDestroy_v2(void* s) { free(s); return 0; }
CUresult cuEventCreate(void** e, unsigned flags) { *e = calloc(1, sizeof(double)); return 0; }
CUresult cuEventRecord(void* e, void* stream) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  *(double*)e = t.tv_sec * 1e3 + t.tv_nsec / 1e6;
  return 0;
}
CUresult cuEventSynchronize(void* e) { return 0; }
CUresult cuEventElapsedTime(float* ms, void* start, void* end) { *ms = (float)(*(double*)end - *(double*)start); return 0; }
CUresult cuEventDestroy_v2(void* e) { free(e); return 0; }

/* TMA descriptor: the real one is opaque; this one spells its arguments out so the test can check
 * the addon's marshalling. Bytes 0-7 address; 8-27 u32 dataType, rank, swizzle, l2Promotion,
 * oobFill; 28-47 u32 dims; 48-57 u16 box; 64-95 u64 strides of dims 1... The driver's rules the
 * test relies on are enforced: 16-byte aligned address and strides, box 1..256, element strides 1. */
CUresult cuTensorMapEncodeTiled(void* map, int dataType, unsigned rank, void* address, const unsigned long long* dims,
                                const unsigned long long* strides, const unsigned* box, const unsigned* elementStrides,
                                int interleave, int swizzle, int l2Promotion, int oobFill) {
  unsigned char* m = map;
  unsigned long long a = (unsigned long long)address;
  unsigned hdr[5] = {(unsigned)dataType, rank, (unsigned)swizzle, (unsigned)l2Promotion, (unsigned)oobFill};
  if (rank < 1 || rank > 5 || (a & 15) || interleave != 0) return INVALID_VALUE;
  memset(m, 0, 128);
  memcpy(m, &a, 8);
  memcpy(m + 8, hdr, sizeof hdr);
  for (unsigned i = 0; i < rank; ++i) {
    unsigned dim = (unsigned)dims[i];
    unsigned short b = (unsigned short)box[i];
    if (box[i] < 1 || box[i] > 256 || elementStrides[i] != 1) return INVALID_VALUE;
    if (i > 0 && (strides[i - 1] & 15)) return INVALID_VALUE;
    memcpy(m + 28 + i * 4, &dim, 4);
    memcpy(m + 48 + i * 2, &b, 2);
    if (i > 0) memcpy(m + 64 + (i - 1) * 8, &strides[i - 1], 8);
  }
  return 0;
}

/* NVRTC: "compiles" anything; sources mentioning undeclared_thing or
 * nonsense fail. compute_XX targets yield PTX, sm_XX a fake ELF cubin. */
typedef struct { char* source; char name[128]; char log[320]; int virtualArch; } Program;
enum { NVRTC_ERROR_INVALID_INPUT = 3, NVRTC_ERROR_COMPILATION = 6 };
static const char PTX[] = ".version 8.0\n.target sm_90\n.visible .entry axpy()\n{\n}\n";

const char* nvrtcGetErrorString(int r) { return r == NVRTC_ERROR_COMPILATION ? "NVRTC_ERROR_COMPILATION" : "NVRTC_ERROR_FAKE"; }
int nvrtcVersion(int* major, int* minor) { *major = 12; *minor = 8; return 0; }
int nvrtcCreateProgram(Program** p, const char* src, const char* name, int n, const char* const* h, const char* const* i) {
  *p = calloc(1, sizeof(Program));
  (*p)->source = strdup(src);
  snprintf((*p)->name, sizeof (*p)->name, "%s", name ? name : "default_program");
  return 0;
}
int nvrtcDestroyProgram(Program** p) {
  free((*p)->source);
  free(*p);
  *p = NULL;
  return 0;
}
int nvrtcCompileProgram(Program* p, int n, const char* const* opts) {
  const char* name = p->name;
  p->log[0] = 0;
  for (int i = 0; i < n; i++)
    if (strstr(opts[i], "compute_")) p->virtualArch = 1;
  if (strstr(p->source, "undeclared_thing")) {
    snprintf(p->log, sizeof p->log, "%s(1): error: identifier \"undeclared_thing\" is undefined\n", name);
    return NVRTC_ERROR_COMPILATION;
  }
  if (strstr(p->source, "nonsense")) {
    snprintf(p->log, sizeof p->log, "%s(1): error: expected a declaration\n", name);
    return NVRTC_ERROR_COMPILATION;
  }
  return 0;
}
int nvrtcGetProgramLogSize(Program* p, size_t* s) { *s = strlen(p->log) + 1; return 0; }
int nvrtcGetProgramLog(Program* p, char* out) { strcpy(out, p->log); return 0; }
int nvrtcGetPTXSize(Program* p, size_t* s) {
  if (!p->virtualArch) return NVRTC_ERROR_INVALID_INPUT;
  *s = sizeof PTX;
  return 0;
}
int nvrtcGetPTX(Program* p, char* out) { memcpy(out, PTX, sizeof PTX); return 0; }
int nvrtcGetCUBINSize(Program* p, size_t* s) {
  if (p->virtualArch) return NVRTC_ERROR_INVALID_INPUT;
  *s = 8;
  return 0;
}
int nvrtcGetCUBIN(Program* p, char* out) { memcpy(out, "\x7f" "ELFfake", 8); return 0; }
