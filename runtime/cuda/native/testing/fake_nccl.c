/*
 * A fake NCCL of one rank, for testing the addon's NCCL binding (nccl.cc) on machines without a GPU
 * or NCCL (test/runtime/parallel-nccl-fake.test.ts builds it beside fake_cuda.c, whose "device"
 * pointers are host pointers, and points $NCCL_LIBRARY at it). Not part of the addon.
 *
 * Grouped sends and receives are queued and matched at ncclGroupEnd as NCCL pairs them (the k-th
 * send to a peer with the k-th receive from it); with one rank every peer is this rank, so a
 * matched pair is a memcpy. Anything NCCL would reject or hang on is an error here, with a
 * message for ncclGetLastError.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int ncclResult_t;
enum { ok = 0, invalidArgument = 4, invalidUsage = 5 };
typedef struct { char internal[128]; } ncclUniqueId;
typedef struct { int nranks; int rank; int destroyed; } Comm;
enum { FAKE_VERSION = 29999 }; /* "2.99.99": the tests can tell they talk to this fake */

static char lastError[256];
static ncclResult_t fail(ncclResult_t r, const char* msg) {
  snprintf(lastError, sizeof lastError, "fake NCCL: %s", msg);
  return r;
}

static size_t typeSize(int t) {
  switch (t) {
    case 0: case 1: return 1;
    case 2: case 3: case 7: return 4;
    case 4: case 5: case 8: return 8;
    case 6: case 9: return 2;
    default: return 0;
  }
}

ncclResult_t ncclGetVersion(int* v) { *v = FAKE_VERSION; return ok; }
const char* ncclGetErrorString(ncclResult_t r) {
  switch (r) {
    case ok: return "no error";
    case invalidArgument: return "invalid argument (run with NCCL_DEBUG=WARN for details)";
    case invalidUsage: return "invalid usage (run with NCCL_DEBUG=WARN for details)";
    default: return "unknown result code";
  }
}
const char* ncclGetLastError(Comm* comm) { return lastError; }
ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  for (int i = 0; i < 128; i++) id->internal[i] = (char)(i * 7 + 1);
  return ok;
}
ncclResult_t ncclCommInitRank(Comm** comm, int nranks, ncclUniqueId id, int rank) {
  if (nranks != 1) return fail(invalidArgument, "this fake has one rank");
  if (id.internal[1] != 8) return fail(invalidArgument, "not an id from ncclGetUniqueId");
  Comm* c = calloc(1, sizeof *c);
  c->nranks = nranks;
  c->rank = rank;
  *comm = c;
  return ok;
}
ncclResult_t ncclCommDestroy(Comm* c) { free(c); return ok; }
ncclResult_t ncclCommAbort(Comm* c) { free(c); return ok; }
ncclResult_t ncclCommGetAsyncError(Comm* c, ncclResult_t* r) { *r = ok; return ok; }
ncclResult_t ncclCommCuDevice(Comm* c, int* dev) { *dev = 0; return ok; }

ncclResult_t ncclAllGather(const void* s, void* r, size_t n, int t, Comm* c, void* stream) {
  if (!typeSize(t)) return fail(invalidArgument, "unknown data type");
  memmove(r, s, n * typeSize(t));
  return ok;
}
ncclResult_t ncclAllReduce(const void* s, void* r, size_t n, int t, int op, Comm* c, void* stream) {
  if (!typeSize(t) || op < 0 || op > 4) return fail(invalidArgument, "unknown data type or operation");
  memmove(r, s, n * typeSize(t)); /* one rank: every reduction is the identity */
  return ok;
}

typedef struct { int recv; void* ptr; size_t bytes; } Op;
static Op queue[4096];
static int queued = 0;
static int groupDepth = 0;

static ncclResult_t enqueue(int recv, const void* p, size_t n, int t, int peer, Comm* c) {
  if (!groupDepth) return fail(invalidUsage, "send/recv to self outside a group would hang");
  if (peer != 0) return fail(invalidArgument, "peer out of range");
  if (!typeSize(t)) return fail(invalidArgument, "unknown data type");
  if (queued == 4096) return fail(invalidUsage, "too many operations in one group");
  queue[queued++] = (Op){recv, (void*)p, n * typeSize(t)};
  return ok;
}
ncclResult_t ncclSend(const void* p, size_t n, int t, int peer, Comm* c, void* s) { return enqueue(0, p, n, t, peer, c); }
ncclResult_t ncclRecv(void* p, size_t n, int t, int peer, Comm* c, void* s) { return enqueue(1, p, n, t, peer, c); }
ncclResult_t ncclGroupStart(void) { groupDepth++; return ok; }
ncclResult_t ncclGroupEnd(void) {
  if (groupDepth == 0) return fail(invalidUsage, "ncclGroupEnd without ncclGroupStart");
  if (--groupDepth) return ok;
  int sends = 0, recvs = 0;
  for (int i = 0; i < queued; i++) queue[i].recv ? recvs++ : sends++;
  ncclResult_t r = ok;
  if (sends != recvs) r = fail(invalidUsage, "unmatched send/recv to self");
  for (int i = 0, j = 0; r == ok && i < queued; i++) {
    if (queue[i].recv) continue;
    while (!queue[j].recv) j++;
    if (queue[i].bytes != queue[j].bytes) {
      r = fail(invalidUsage, "send and recv sizes differ");
      break;
    }
    memmove(queue[j].ptr, queue[i].ptr, queue[i].bytes);
    j++;
  }
  queued = 0;
  return r;
}
