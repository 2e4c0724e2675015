// NCCL from TypeScript: finding the library, communicators, and the collectives sequence
// parallelism needs (all-to-all as grouped send/receive, all-gather, all-reduce), enqueued on a
// stream of the process's one device. The native side is runtime/cuda/native/nccl.cc.
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { loadAddon, tryLoadAddon, type NativeAddon, type NativeHandle } from "../cuda/addon.ts";
import type { DeviceBuffer, Stream } from "../cuda/device.ts";
import type { DType } from "../cuda/dtype.ts";
import type { Exchange } from "./partition.ts";

export type CommHandle = NativeHandle<"nccl-comm">;

interface NcclLoadResult {
  ok: boolean;
  path?: string;
  /** e.g. 22703 for 2.27.3. */
  version?: number;
  reason?: string;
}

interface P2pOp {
  recv: boolean;
  peer: number;
  ptr: bigint;
  count: number;
}

/** The addon's NCCL functions (registered by nccl.cc). */
interface NcclAddon {
  ncclLoad(candidates: string[]): NcclLoadResult;
  ncclGetUniqueId(): Buffer;
  ncclCommInitRank(nranks: number, id: Uint8Array, rank: number): Promise<CommHandle>;
  ncclCommDestroy(comm: CommHandle): void;
  ncclCommAbort(comm: CommHandle): void;
  ncclCommInfo(comm: CommHandle): { rank: number; nranks: number; device: number };
  ncclCommCheck(comm: CommHandle): void;
  ncclAllGather(
    comm: CommHandle,
    send: bigint,
    recv: bigint,
    count: number,
    dtype: number,
    stream: unknown,
  ): void;
  ncclAllReduce(
    comm: CommHandle,
    send: bigint,
    recv: bigint,
    count: number,
    dtype: number,
    op: number,
    stream: unknown,
  ): void;
  ncclGroupSendRecv(comm: CommHandle, ops: P2pOp[], dtype: number, stream: unknown): void;
}

/** ncclDataType_t of each buffer dtype. */
const NCCL_DTYPE: Readonly<Record<DType, number>> = { u8: 1, i32: 2, u32: 3, fp16: 6, fp32: 7, bf16: 9 };
const NCCL_OP = { sum: 0, prod: 1, max: 2, min: 3, avg: 4 } as const;
export type ReduceOp = keyof typeof NCCL_OP;

export const UNIQUE_ID_BYTES = 128;

/** Python site-packages directories that may hold pip's nvidia-nccl wheel (PyTorch's NCCL). */
function sitePackages(env: NodeJS.ProcessEnv): string[] {
  const roots = ["/usr/lib", "/usr/local/lib", join(homedir(), ".local/lib")];
  for (const prefix of [env.VIRTUAL_ENV, env.CONDA_PREFIX]) if (prefix) roots.unshift(join(prefix, "lib"));
  const pyenv = join(env.PYENV_ROOT ?? join(homedir(), ".pyenv"), "versions");
  if (existsSync(pyenv)) for (const v of readdirSync(pyenv)) roots.push(join(pyenv, v, "lib"));
  const dirs: string[] = [];
  for (const root of roots) {
    if (!existsSync(root)) continue;
    for (const py of readdirSync(root).filter((n) => /^python3(\.\d+)?$/.test(n)))
      for (const kind of ["site-packages", "dist-packages"]) dirs.push(join(root, py, kind));
  }
  return dirs.filter(existsSync);
}

/** What the python3 on PATH reports (covers interpreters in unusual places); [] without one. */
function pythonSitePackages(): string[] {
  try {
    const out = execFileSync(
      "python3",
      ["-c", "import site,sys;print('\\n'.join(site.getsitepackages()+[site.getusersitepackages()]))"],
      { encoding: "utf8", timeout: 10_000, stdio: ["ignore", "pipe", "ignore"] },
    );
    return out.split("\n").filter((d) => d && existsSync(d));
  } catch {
    return [];
  }
}

function ncclInSitePackages(dirs: string[]): string[] {
  const found: string[] = [];
  for (const dir of dirs) {
    const nvidia = join(dir, "nvidia");
    if (!existsSync(nvidia)) continue;
    // nvidia-nccl-cu12 installs nvidia/nccl/lib; other wheels (nvidia/cu13/lib) are looked at too.
    for (const sub of ["nccl", ...readdirSync(nvidia).filter((n) => n !== "nccl")]) {
      const lib = join(nvidia, sub, "lib", "libnccl.so.2");
      if (existsSync(lib) && !found.includes(lib)) found.push(lib);
    }
  }
  return found;
}

/**
 * Where libnccl is looked for, in order: $NCCL_LIBRARY alone when set; else the dynamic linker's
 * search path (libnccl.so.2, libnccl.so), the CUDA toolkit, and PyTorch's bundled
 * site-packages/nvidia/nccl/lib.
 */
export function ncclLibraryCandidates(env: NodeJS.ProcessEnv = process.env): string[] {
  if (env.NCCL_LIBRARY) return [env.NCCL_LIBRARY];
  const system = [
    "libnccl.so.2",
    "libnccl.so",
    "/usr/local/cuda/lib64/libnccl.so.2",
    "/usr/lib/x86_64-linux-gnu/libnccl.so.2",
  ];
  let wheels = ncclInSitePackages(sitePackages(env));
  if (!wheels.length) wheels = ncclInSitePackages(pythonSitePackages());
  return [...system, ...wheels];
}

export interface NcclAvailability {
  ok: boolean;
  /** Why NCCL can't be used (addon not built, library not found...). */
  reason?: string;
  path?: string;
  /** "2.27.3" */
  version?: string;
}

let loaded: NcclAvailability | undefined;

function ncclAddon(): NativeAddon & NcclAddon {
  return loadAddon() as NativeAddon & NcclAddon;
}

/** Loads libnccl (once it has succeeded, for the process); never throws. */
export function available(): NcclAvailability {
  if (loaded?.ok) return loaded;
  const r = tryLoadAddon();
  if ("error" in r) return { ok: false, reason: r.error };
  const addon = r.addon as NativeAddon & Partial<NcclAddon>;
  if (!addon.ncclLoad)
    return { ok: false, reason: "tilec's CUDA addon predates NCCL support: run `npm run build:addon`" };
  const res = addon.ncclLoad(ncclLibraryCandidates());
  loaded = res.ok
    ? { ok: true, path: res.path, version: versionString(res.version ?? 0) }
    : {
        ok: false,
        reason: `${res.reason}\nset NCCL_LIBRARY to libnccl.so.2's path, or pip install nvidia-nccl-cu12`,
      };
  return loaded;
}

export function versionString(code: number): string {
  // NCCL_VERSION(X,Y,Z): X*1000+Y*100+Z before 2.9, X*10000+Y*100+Z since.
  const major = code >= 10000 ? Math.floor(code / 10000) : Math.floor(code / 1000);
  const rest = code >= 10000 ? code % 10000 : code % 1000;
  return `${major}.${Math.floor(rest / 100)}.${rest % 100}`;
}

function requireNccl(): NativeAddon & NcclAddon {
  const a = available();
  if (!a.ok) throw Object.assign(new Error(`NCCL is not available: ${a.reason}`), { code: "TILEC_NO_NCCL" });
  return ncclAddon();
}

/** A fresh NCCL unique id (128 bytes) for a new communicator; share it with every rank. */
export function uniqueId(): Uint8Array {
  return new Uint8Array(requireNccl().ncclGetUniqueId());
}

function ncclDtype(dtype: DType): number {
  const t = NCCL_DTYPE[dtype];
  if (t === undefined) throw new TypeError(`NCCL has no type for ${dtype}`);
  return t;
}

/**
 * A communicator of `size` ranks, this process being `rank`, over the device CUDA was initialized
 * on (CudaDevice.open). Operations are enqueued on the given stream (default: the legacy default
 * stream) and complete asynchronously like kernels.
 */
export class NcclComm {
  #handle: CommHandle | null;

  private constructor(
    handle: CommHandle,
    readonly rank: number,
    readonly size: number,
  ) {
    this.#handle = handle;
  }

  /** Blocks (off the event loop) until all `size` ranks have called it with the same id. */
  static async init(size: number, id: Uint8Array, rank: number): Promise<NcclComm> {
    if (id.byteLength !== UNIQUE_ID_BYTES)
      throw new RangeError(`an NCCL unique id is ${UNIQUE_ID_BYTES} bytes, got ${id.byteLength}`);
    const addon = requireNccl();
    // NCCL reads its environment at initialization. NVLink multicast (NVLS) only serves collectives
    // tilec does not use, and on shared hosts a program using it can take the GPUs out of service.
    process.env.NCCL_NVLS_ENABLE ??= "0";
    const handle = await addon.ncclCommInitRank(size, id, rank);
    return new NcclComm(handle, rank, size);
  }

  private get handle(): CommHandle {
    if (!this.#handle) throw new Error(`NCCL communicator (rank ${this.rank} of ${this.size}) was destroyed`);
    return this.#handle;
  }

  /** The CUDA device ordinal NCCL bound the communicator to. */
  get device(): number {
    return ncclAddon().ncclCommInfo(this.handle).device;
  }

  /** recv[r·n .. (r+1)·n) = rank r's send[0 .. n), n = send.length (or `count`), on every rank. */
  allGather(
    send: DeviceBuffer,
    recv: DeviceBuffer,
    options: { count?: number; stream?: Stream | null } = {},
  ): void {
    const count = options.count ?? send.length;
    sameDtype(send, recv, "allGather");
    if (count > send.length || count * this.size > recv.length)
      throw new RangeError(
        `allGather of ${count} elements over ${this.size} ranks needs send ≥ ${count} and recv ≥ ${count * this.size} elements (have ${send.length}, ${recv.length})`,
      );
    ncclAddon().ncclAllGather(
      this.handle,
      send.ptr,
      recv.ptr,
      count,
      ncclDtype(send.dtype),
      options.stream?.handle ?? null,
    );
  }

  allReduce(
    send: DeviceBuffer,
    recv: DeviceBuffer,
    op: ReduceOp = "sum",
    stream: Stream | null = null,
  ): void {
    sameDtype(send, recv, "allReduce");
    if (recv.length < send.length)
      throw new RangeError(`allReduce: recv holds ${recv.length} < ${send.length}`);
    ncclAddon().ncclAllReduce(
      this.handle,
      send.ptr,
      recv.ptr,
      send.length,
      ncclDtype(send.dtype),
      NCCL_OP[op],
      stream?.handle ?? null,
    );
  }

  /**
   * Runs an exchange plan (partition.ts): every send and receive inside one NCCL group, so all
   * peers progress together. Offsets and counts are in elements of the buffers' dtype.
   */
  exchange(plan: Exchange, send: DeviceBuffer, recv: DeviceBuffer, stream: Stream | null = null): void {
    this.exchangeAll([{ plan, send, recv }], stream);
  }

  /** Several exchanges of one dtype (e.g. q, k and v) in a single NCCL group. */
  exchangeAll(
    items: readonly { plan: Exchange; send: DeviceBuffer; recv: DeviceBuffer }[],
    stream: Stream | null = null,
  ): void {
    if (!items.length) return;
    const dtype = items[0]!.send.dtype;
    const ops: P2pOp[] = [];
    for (const { plan, send, recv } of items) {
      sameDtype(send, recv, "exchange");
      if (send.dtype !== dtype) throw new TypeError(`exchangeAll mixes ${dtype} and ${send.dtype} buffers`);
      for (const t of plan.sends)
        ops.push({ recv: false, peer: t.peer, ptr: at(send, t.offset, t.count), count: t.count });
      for (const t of plan.recvs)
        ops.push({ recv: true, peer: t.peer, ptr: at(recv, t.offset, t.count), count: t.count });
    }
    ncclAddon().ncclGroupSendRecv(this.handle, ops, ncclDtype(dtype), stream?.handle ?? null);
  }

  /** Equal split: send chunk p (send.length / size elements) goes to rank p's recv chunk `rank`. */
  allToAll(send: DeviceBuffer, recv: DeviceBuffer, stream: Stream | null = null): void {
    if (send.length % this.size !== 0 || recv.length !== send.length)
      throw new RangeError(
        `allToAll needs equal send and recv sizes divisible by ${this.size} ranks (have ${send.length}, ${recv.length})`,
      );
    const chunk = send.length / this.size;
    const peers = Array.from({ length: this.size }, (_, p) => ({ peer: p, offset: p * chunk, count: chunk }));
    this.exchange({ sends: peers, recvs: peers }, send, recv, stream);
  }

  /** Throws a pending asynchronous error (e.g. a peer that failed). */
  check(): void {
    ncclAddon().ncclCommCheck(this.handle);
  }

  /** Waits for pending work and frees the communicator; idempotent. */
  destroy(): void {
    const h = this.#handle;
    this.#handle = null;
    if (h) ncclAddon().ncclCommDestroy(h);
  }

  /** Frees the communicator without waiting for peers (after a failure); idempotent. */
  abort(): void {
    const h = this.#handle;
    this.#handle = null;
    if (h) ncclAddon().ncclCommAbort(h);
  }
}

function sameDtype(a: DeviceBuffer, b: DeviceBuffer, what: string): void {
  if (a.dtype !== b.dtype) throw new TypeError(`${what}: send is ${a.dtype} but recv is ${b.dtype}`);
}

function at(buf: DeviceBuffer, offset: number, count: number): bigint {
  if (offset + count > buf.length)
    throw new RangeError(`transfer of ${count} elements at ${offset} overruns a buffer of ${buf.length}`);
  return buf.ptrAt(offset);
}
