// NCCL, loaded at run time with dlopen like the driver: communicators built from a unique id that
// one process creates and the others receive, grouped point-to-point transfers (NCCL has no
// all-to-all primitive; ncclSend/ncclRecv inside ncclGroupStart/End is how one is written),
// all-gather and all-reduce on device buffers, enqueued on the caller's stream.
//
// Which file to load is decided in TypeScript (runtime/parallel/nccl.ts: $NCCL_LIBRARY, the system
// library, PyTorch's bundled nvidia/nccl), which passes the candidates here in order.
#include <dlfcn.h>

#include <cstring>
#include <mutex>
#include <vector>

#include "common.h"

namespace tilec {
namespace {

// ABI-compatible subset of nccl.h (enums are int-sized; the unique id is 128 opaque bytes passed
// by value).
typedef int ncclResult_t;
typedef struct ncclComm* ncclComm_t;
constexpr size_t kUniqueIdBytes = 128;
struct ncclUniqueId {
  char internal[kUniqueIdBytes];
};
enum : int { ncclSuccess = 0, ncclInProgress = 7 };

struct Nccl {
  ncclResult_t (*ncclGetVersion)(int*);
  const char* (*ncclGetErrorString)(ncclResult_t);
  // Optional (NCCL >= 2.13): the last error's detail ("peer 3 closed the connection" ...).
  const char* (*ncclGetLastError)(ncclComm_t);
  ncclResult_t (*ncclGetUniqueId)(ncclUniqueId*);
  ncclResult_t (*ncclCommInitRank)(ncclComm_t*, int, ncclUniqueId, int);
  ncclResult_t (*ncclCommDestroy)(ncclComm_t);
  ncclResult_t (*ncclCommAbort)(ncclComm_t);
  ncclResult_t (*ncclCommGetAsyncError)(ncclComm_t, ncclResult_t*);
  ncclResult_t (*ncclCommCuDevice)(ncclComm_t, int*);
  ncclResult_t (*ncclAllGather)(const void*, void*, size_t, int, ncclComm_t, CUstream);
  ncclResult_t (*ncclAllReduce)(const void*, void*, size_t, int, int, ncclComm_t, CUstream);
  ncclResult_t (*ncclSend)(const void*, size_t, int, int, ncclComm_t, CUstream);
  ncclResult_t (*ncclRecv)(void*, size_t, int, int, ncclComm_t, CUstream);
  ncclResult_t (*ncclGroupStart)();
  ncclResult_t (*ncclGroupEnd)();
};

std::mutex loadMutex;
Nccl nccl;
const Nccl* ncclPtr = nullptr;
std::string loadedFrom;

template <typename Fn>
bool resolve(void* lib, Fn& slot, const char* name, std::string& missing) {
  void* p = dlsym(lib, name);
  if (!p) {
    missing = name;
    return false;
  }
  slot = reinterpret_cast<Fn>(p);
  return true;
}

// Tries each candidate in order; the first library that opens and has every symbol wins and is
// kept for the process. A failure is not remembered, so a later call with other candidates
// (e.g. after setting $NCCL_LIBRARY) can still succeed.
const Nccl* loadNccl(const std::vector<std::string>& candidates, std::string& reason) {
  std::lock_guard<std::mutex> lock(loadMutex);
  if (ncclPtr) return ncclPtr;
  std::string errors;
  for (const std::string& path : candidates) {
    void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      const char* e = dlerror();
      errors += "\n  " + path + ": " + (e ? e : "dlopen failed");
      continue;
    }
    Nccl n{};
    std::string missing;
    bool ok = resolve(lib, n.ncclGetVersion, "ncclGetVersion", missing) &&
              resolve(lib, n.ncclGetErrorString, "ncclGetErrorString", missing) &&
              resolve(lib, n.ncclGetUniqueId, "ncclGetUniqueId", missing) &&
              resolve(lib, n.ncclCommInitRank, "ncclCommInitRank", missing) &&
              resolve(lib, n.ncclCommDestroy, "ncclCommDestroy", missing) &&
              resolve(lib, n.ncclCommAbort, "ncclCommAbort", missing) &&
              resolve(lib, n.ncclCommGetAsyncError, "ncclCommGetAsyncError", missing) &&
              resolve(lib, n.ncclCommCuDevice, "ncclCommCuDevice", missing) &&
              resolve(lib, n.ncclAllGather, "ncclAllGather", missing) &&
              resolve(lib, n.ncclAllReduce, "ncclAllReduce", missing) &&
              resolve(lib, n.ncclSend, "ncclSend", missing) &&
              resolve(lib, n.ncclRecv, "ncclRecv", missing) &&
              resolve(lib, n.ncclGroupStart, "ncclGroupStart", missing) &&
              resolve(lib, n.ncclGroupEnd, "ncclGroupEnd", missing);
    if (!ok) {
      // ncclSend/ncclRecv arrived in NCCL 2.7.
      errors += "\n  " + path + ": lacks symbol " + missing + " (NCCL older than 2.7?)";
      dlclose(lib);
      continue;
    }
    std::string ignored;
    if (!resolve(lib, n.ncclGetLastError, "ncclGetLastError", ignored)) n.ncclGetLastError = nullptr;
    nccl = n;
    ncclPtr = &nccl;
    loadedFrom = path;
    return ncclPtr;
  }
  reason = candidates.empty() ? "no NCCL library candidates were given" : "libnccl not found; tried:" + errors;
  return nullptr;
}

const Nccl& ncclOrThrow(Napi::Env env) {
  std::lock_guard<std::mutex> lock(loadMutex);
  if (!ncclPtr) throwError(env, "NCCL is not loaded: call ncclLoad(candidates) first", "TILEC_NO_NCCL");
  return *ncclPtr;
}

const char* resultName(ncclResult_t r) {
  switch (r) {
    case 1: return "ncclUnhandledCudaError";
    case 2: return "ncclSystemError";
    case 3: return "ncclInternalError";
    case 4: return "ncclInvalidArgument";
    case 5: return "ncclInvalidUsage";
    case 6: return "ncclRemoteError";
    case 7: return "ncclInProgress";
    default: return "ncclError";
  }
}

// "<ncclName> in <call>: <ncclGetErrorString> (<ncclGetLastError>)", with `code` (the result's
// name), `call` and `ncclResult` properties, like the driver's errors.
Napi::Error ncclError(Napi::Env env, const Nccl& n, ncclResult_t r, const std::string& call,
                      ncclComm_t comm = nullptr) {
  std::string msg = std::string(resultName(r)) + " in " + call;
  if (const char* s = n.ncclGetErrorString(r)) msg += ": " + std::string(s);
  if (n.ncclGetLastError) {
    const char* last = n.ncclGetLastError(comm);
    if (last && *last) msg += " (" + std::string(last) + ")";
  }
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("code", Napi::String::New(env, resultName(r)));
  e.Set("call", Napi::String::New(env, call));
  e.Set("ncclResult", Napi::Number::New(env, r));
  return e;
}

void checkNccl(Napi::Env env, const Nccl& n, ncclResult_t r, const std::string& call, ncclComm_t comm = nullptr) {
  if (r != ncclSuccess) throw ncclError(env, n, r, call, comm);
}

struct CommState {
  ncclComm_t comm = nullptr;
  int nranks = 0;
  int rank = 0;
  // A dropped communicator is aborted, not destroyed: abort never waits on peers that may be gone.
  ~CommState() {
    if (comm && ncclPtr && ctxNoThrow()) ncclPtr->ncclCommAbort(comm);
  }
};

const napi_type_tag kCommTag = {0x7469'6c65'635f'6e63ULL, 0x636c'0000'0000'0005ULL};

std::shared_ptr<CommState> argComm(const Napi::CallbackInfo& info, size_t i) {
  auto c = unwrapHandle<CommState>(info[i], &kCommTag, "NCCL communicator");
  if (!c->comm) throwError(info.Env(), "the NCCL communicator was destroyed", "TILEC_NCCL_DESTROYED");
  return c;
}

int argInt(const Napi::CallbackInfo& info, size_t i, const char* name) {
  size_t v = argSize(info, i, name);
  if (v > 0x7fffffff) throw Napi::RangeError::New(info.Env(), std::string(name) + " exceeds int32");
  return static_cast<int>(v);
}

// ncclLoad(candidates: string[]) → {ok, path?, version?, reason?}; never throws for a missing library.
Napi::Value Load(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsArray()) throw Napi::TypeError::New(env, "candidates must be an array of paths");
  auto arr = info[0].As<Napi::Array>();
  std::vector<std::string> candidates;
  for (uint32_t i = 0; i < arr.Length(); i++) candidates.push_back(arr.Get(i).ToString().Utf8Value());
  std::string reason;
  const Nccl* n = loadNccl(candidates, reason);
  Napi::Object o = Napi::Object::New(env);
  o.Set("ok", n != nullptr);
  if (!n) {
    o.Set("reason", reason);
    return o;
  }
  int version = 0;
  n->ncclGetVersion(&version);
  o.Set("path", loadedFrom);
  o.Set("version", version);
  return o;
}

// ncclGetUniqueId() → Buffer of 128 bytes. NCCL's bootstrap root listens in the calling process,
// so the process that creates the id must stay alive until every rank has initialized.
Napi::Value GetUniqueId(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Nccl& n = ncclOrThrow(env);
  ncclUniqueId id;
  checkNccl(env, n, n.ncclGetUniqueId(&id), "ncclGetUniqueId");
  return Napi::Buffer<char>::Copy(env, id.internal, kUniqueIdBytes);
}

// ncclCommInitRank(nranks, id, rank) → Promise<comm>. Initialization blocks until every rank has
// joined, so it runs on the thread pool with the device's context bound there: the event loop
// stays free (IPC from the launcher, timers) while peers start.
class InitWorker : public Napi::AsyncWorker {
 public:
  InitWorker(Napi::Env env, const Nccl& n, int nranks, const ncclUniqueId& id, int rank)
      : Napi::AsyncWorker(env, "tilec.ncclCommInitRank"), n_(n), nranks_(nranks), id_(id), rank_(rank),
        deferred_(env) {}
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override {
    if (!ctxNoThrow()) {
      bound_ = false;
      return;
    }
    result_ = n_.ncclCommInitRank(&comm_, nranks_, id_, rank_);
  }
  void OnOK() override {
    Napi::Env env = Env();
    if (!bound_) {
      Napi::Error e = Napi::Error::New(env, "CUDA is not initialized: call init(ordinal) before ncclCommInitRank");
      e.Set("code", "TILEC_NOT_INITIALIZED");
      deferred_.Reject(e.Value());
      return;
    }
    if (result_ != ncclSuccess) {
      std::string call = "ncclCommInitRank(nranks " + std::to_string(nranks_) + ", rank " + std::to_string(rank_) + ")";
      deferred_.Reject(ncclError(env, n_, result_, call).Value());
      return;
    }
    auto state = std::make_shared<CommState>();
    state->comm = comm_;
    state->nranks = nranks_;
    state->rank = rank_;
    deferred_.Resolve(wrapHandle(env, state, &kCommTag));
  }

 private:
  const Nccl& n_;
  int nranks_;
  ncclUniqueId id_;
  int rank_;
  bool bound_ = true;
  ncclResult_t result_ = ncclSuccess;
  ncclComm_t comm_ = nullptr;
  Napi::Promise::Deferred deferred_;
};

Napi::Value CommInitRank(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Nccl& n = ncclOrThrow(env);
  int nranks = argInt(info, 0, "nranks");
  Bytes idBytes = argBytes(info, 1, "id");
  int rank = argInt(info, 2, "rank");
  if (nranks < 1) throw Napi::RangeError::New(env, "nranks must be at least 1");
  if (rank >= nranks)
    throw Napi::RangeError::New(env, "rank " + std::to_string(rank) + " outside 0.." + std::to_string(nranks - 1));
  if (idBytes.length != kUniqueIdBytes)
    throw Napi::RangeError::New(env, "an NCCL unique id is 128 bytes, got " + std::to_string(idBytes.length));
  ctx(env);  // throws here, with the usual message, if CUDA was never initialized
  ncclUniqueId id;
  std::memcpy(id.internal, idBytes.data, kUniqueIdBytes);
  auto* w = new InitWorker(env, n, nranks, id, rank);
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

// ncclCommDestroy(comm): idempotent. ncclCommAbort(comm): the same without waiting for pending work.
Napi::Value CommRelease(const Napi::CallbackInfo& info, bool abort) {
  Napi::Env env = info.Env();
  auto c = unwrapHandle<CommState>(info[0], &kCommTag, "NCCL communicator");
  if (!c->comm) return env.Undefined();
  const Nccl& n = ncclOrThrow(env);
  ctx(env);
  ncclComm_t comm = c->comm;
  c->comm = nullptr;
  if (abort) checkNccl(env, n, n.ncclCommAbort(comm), "ncclCommAbort");
  else checkNccl(env, n, n.ncclCommDestroy(comm), "ncclCommDestroy");
  return env.Undefined();
}
Napi::Value CommDestroy(const Napi::CallbackInfo& info) { return CommRelease(info, false); }
Napi::Value CommAbort(const Napi::CallbackInfo& info) { return CommRelease(info, true); }

// ncclCommInfo(comm) → {rank, nranks, device}.
Napi::Value CommInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto c = argComm(info, 0);
  const Nccl& n = ncclOrThrow(env);
  int dev = -1;
  checkNccl(env, n, n.ncclCommCuDevice(c->comm, &dev), "ncclCommCuDevice", c->comm);
  Napi::Object o = Napi::Object::New(env);
  o.Set("rank", c->rank);
  o.Set("nranks", c->nranks);
  o.Set("device", dev);
  return o;
}

// ncclCommCheck(comm): throws the communicator's asynchronous error (a peer failed, a network
// error) if there is one.
Napi::Value CommCheck(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto c = argComm(info, 0);
  const Nccl& n = ncclOrThrow(env);
  ncclResult_t async = ncclSuccess;
  checkNccl(env, n, n.ncclCommGetAsyncError(c->comm, &async), "ncclCommGetAsyncError", c->comm);
  if (async != ncclSuccess && async != ncclInProgress)
    throw ncclError(env, n, async, "an earlier NCCL operation (ncclCommGetAsyncError)", c->comm);
  return env.Undefined();
}

// ncclAllGather(comm, send, recv, countPerRank, dtype, stream).
Napi::Value AllGather(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto c = argComm(info, 0);
  CUdeviceptr send = argPtr(info, 1, "send");
  CUdeviceptr recv = argPtr(info, 2, "recv");
  size_t count = argSize(info, 3, "count");
  int dtype = argInt(info, 4, "dtype");
  CUstream stream = argStream(info, 5);
  const Nccl& n = ncclOrThrow(env);
  ctx(env);
  checkNccl(env, n,
            n.ncclAllGather(reinterpret_cast<const void*>(send), reinterpret_cast<void*>(recv), count, dtype,
                            c->comm, stream),
            "ncclAllGather", c->comm);
  return env.Undefined();
}

// ncclAllReduce(comm, send, recv, count, dtype, op, stream); op: 0 sum, 1 prod, 2 max, 3 min, 4 avg.
Napi::Value AllReduce(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto c = argComm(info, 0);
  CUdeviceptr send = argPtr(info, 1, "send");
  CUdeviceptr recv = argPtr(info, 2, "recv");
  size_t count = argSize(info, 3, "count");
  int dtype = argInt(info, 4, "dtype");
  int op = argInt(info, 5, "op");
  CUstream stream = argStream(info, 6);
  const Nccl& n = ncclOrThrow(env);
  ctx(env);
  checkNccl(env, n,
            n.ncclAllReduce(reinterpret_cast<const void*>(send), reinterpret_cast<void*>(recv), count, dtype, op,
                            c->comm, stream),
            "ncclAllReduce", c->comm);
  return env.Undefined();
}

struct P2pOp {
  bool recv;
  int peer;
  CUdeviceptr ptr;
  size_t count;
};

// ncclGroupSendRecv(comm, ops: {recv, peer, ptr, count}[], dtype, stream): every op inside one
// ncclGroupStart/End, so sends and receives to all peers progress together (an all-to-all).
// Everything is validated before the group opens; a failing op still closes the group.
Napi::Value GroupSendRecv(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto c = argComm(info, 0);
  if (!info[1].IsArray()) throw Napi::TypeError::New(env, "ops must be an array");
  auto arr = info[1].As<Napi::Array>();
  int dtype = argInt(info, 2, "dtype");
  CUstream stream = argStream(info, 3);
  std::vector<P2pOp> ops;
  ops.reserve(arr.Length());
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value v = arr.Get(i);
    if (!v.IsObject()) throw Napi::TypeError::New(env, "ops[" + std::to_string(i) + "] must be an object");
    auto o = v.As<Napi::Object>();
    Napi::Value peer = o.Get("peer"), ptr = o.Get("ptr"), count = o.Get("count");
    if (!peer.IsNumber() || !ptr.IsBigInt() || !count.IsNumber())
      throw Napi::TypeError::New(env, "ops[" + std::to_string(i) + "] needs peer: number, ptr: bigint, count: number");
    P2pOp op;
    op.recv = o.Get("recv").ToBoolean().Value();
    op.peer = peer.As<Napi::Number>().Int32Value();
    bool lossless = false;
    op.ptr = ptr.As<Napi::BigInt>().Uint64Value(&lossless);
    double n = count.As<Napi::Number>().DoubleValue();
    if (op.peer < 0 || op.peer >= c->nranks)
      throw Napi::RangeError::New(env, "ops[" + std::to_string(i) + "].peer " + std::to_string(op.peer) +
                                           " outside 0.." + std::to_string(c->nranks - 1));
    if (!(n >= 0) || n > 9007199254740991.0 || n != static_cast<double>(static_cast<size_t>(n)))
      throw Napi::RangeError::New(env, "ops[" + std::to_string(i) + "].count must be a non-negative integer");
    op.count = static_cast<size_t>(n);
    ops.push_back(op);
  }
  const Nccl& n = ncclOrThrow(env);
  ctx(env);
  checkNccl(env, n, n.ncclGroupStart(), "ncclGroupStart", c->comm);
  ncclResult_t failed = ncclSuccess;
  std::string failedCall;
  for (const P2pOp& op : ops) {
    ncclResult_t r = op.recv ? n.ncclRecv(reinterpret_cast<void*>(op.ptr), op.count, dtype, op.peer, c->comm, stream)
                             : n.ncclSend(reinterpret_cast<const void*>(op.ptr), op.count, dtype, op.peer,
                                          c->comm, stream);
    if (r != ncclSuccess) {
      failed = r;
      failedCall = std::string(op.recv ? "ncclRecv" : "ncclSend") + "(peer " + std::to_string(op.peer) +
                   ", count " + std::to_string(op.count) + ")";
      break;
    }
  }
  ncclResult_t end = n.ncclGroupEnd();
  if (failed != ncclSuccess) throw ncclError(env, n, failed, failedCall, c->comm);
  checkNccl(env, n, end, "ncclGroupEnd (" + std::to_string(ops.size()) + " sends/receives)", c->comm);
  return env.Undefined();
}

}  // namespace

void initNccl(Napi::Env env, Napi::Object exports) {
  exports.Set("ncclLoad", Napi::Function::New(env, Load, "ncclLoad"));
  exports.Set("ncclGetUniqueId", Napi::Function::New(env, GetUniqueId, "ncclGetUniqueId"));
  exports.Set("ncclCommInitRank", Napi::Function::New(env, CommInitRank, "ncclCommInitRank"));
  exports.Set("ncclCommDestroy", Napi::Function::New(env, CommDestroy, "ncclCommDestroy"));
  exports.Set("ncclCommAbort", Napi::Function::New(env, CommAbort, "ncclCommAbort"));
  exports.Set("ncclCommInfo", Napi::Function::New(env, CommInfo, "ncclCommInfo"));
  exports.Set("ncclCommCheck", Napi::Function::New(env, CommCheck, "ncclCommCheck"));
  exports.Set("ncclAllGather", Napi::Function::New(env, AllGather, "ncclAllGather"));
  exports.Set("ncclAllReduce", Napi::Function::New(env, AllReduce, "ncclAllReduce"));
  exports.Set("ncclGroupSendRecv", Napi::Function::New(env, GroupSendRecv, "ncclGroupSendRecv"));
}

}  // namespace tilec
