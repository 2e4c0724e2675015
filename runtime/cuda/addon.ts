// Loads tilec's native CUDA addon (runtime/cuda/native, built by
// scripts/build-addon.mjs) and types its surface. The addon loads on any
// machine; whether CUDA is usable is answered by `available()`.
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

declare const handleKind: unique symbol;
/** Opaque native handle (a type-tagged napi External); `K` says what it refers to. */
export type NativeHandle<K extends string> = { readonly [handleKind]: K };
export type ModuleHandle = NativeHandle<"module">;
export type FunctionHandle = NativeHandle<"function">;
export type StreamHandle = NativeHandle<"stream">;
export type EventHandle = NativeHandle<"event">;

export type HalfDType = "bf16" | "fp16";
type Bytes = ArrayBuffer | ArrayBufferView;

export interface Availability {
  ok: boolean;
  /** Why CUDA can't be used, when `ok` is false. */
  reason?: string;
  deviceCount?: number;
  driverVersion?: number;
}

export interface DeviceInfo {
  ordinal: number;
  name: string;
  ccMajor: number;
  ccMinor: number;
  smCount: number;
  sharedMemPerBlockOptin: number;
  l2Bytes: number;
  totalMem: number;
  /** e.g. 12080 for CUDA 12.8. */
  driverVersion: number;
}

export interface FuncAttributes {
  numRegs: number;
  sharedSizeBytes: number;
  constSizeBytes: number;
  localSizeBytes: number;
  maxThreadsPerBlock: number;
  maxDynamicSharedSizeBytes: number;
  ptxVersion: number;
  binaryVersion: number;
}

export interface NvrtcRawOutput {
  /** NUL-terminated PTX text, when the options produced PTX. */
  ptx?: Buffer;
  /** ELF cubin, when compiling for a real architecture (sm_XX). */
  cubin?: Buffer;
  log: string;
}

/** The functions exported by tilec_cuda.node. Errors are thrown as `Error`s with `code` set. */
export interface NativeAddon {
  available(): Availability;
  init(ordinal?: number): void;
  deviceInfo(): DeviceInfo;
  synchronize(): void;
  memAlloc(bytes: number): bigint;
  memFree(ptr: bigint): void;
  /** Copies all of `src`'s bytes to `dst`. */
  memcpyHtoD(dst: bigint, src: Bytes): void;
  /** Fills all of `dst`'s bytes from `src`. */
  memcpyDtoH(dst: Bytes, src: bigint): void;
  memsetD8(ptr: bigint, value: number, count: number): void;
  memsetD32(ptr: bigint, value: number, count: number): void;
  memGetInfo(): { free: number; total: number };
  moduleLoadData(image: Bytes): ModuleHandle;
  moduleUnload(module: ModuleHandle): void;
  moduleGetFunction(module: ModuleHandle, name: string): FunctionHandle;
  setMaxDynamicSharedMemory(fn: FunctionHandle, bytes: number): void;
  funcAttributes(fn: FunctionHandle): FuncAttributes;
  launch(
    fn: FunctionHandle,
    grid: number[],
    block: number[],
    sharedBytes: number,
    stream: StreamHandle | null,
    args: ArrayBuffer,
    offsets: Uint32Array,
  ): void;
  streamCreate(): StreamHandle;
  streamSynchronize(stream: StreamHandle): void;
  streamDestroy(stream: StreamHandle): void;
  eventCreate(): EventHandle;
  eventRecord(event: EventHandle, stream: StreamHandle | null): void;
  eventSynchronize(event: EventHandle): void;
  eventElapsedMs(start: EventHandle, end: EventHandle): number;
  eventDestroy(event: EventHandle): void;
  nvrtcAvailable(): { ok: boolean; reason?: string; path?: string };
  nvrtcVersion(): { major: number; minor: number };
  nvrtcCompile(source: string, name: string, options: string[]): NvrtcRawOutput;
  nvrtcCompileAsync(source: string, name: string, options: string[]): Promise<NvrtcRawOutput>;
  /** cuTensorMapEncodeTiled: a 128-byte TMA descriptor (see runtime/cuda/native/tensormap.cc). */
  tensorMapEncodeTiled(
    address: bigint,
    elementBytes: number,
    dims: number[],
    stridesBytes: number[],
    box: number[],
    swizzleBytes: number,
  ): Uint8Array;
  f32ToHalfBits(data: Float32Array, dtype: HalfDType): Uint16Array;
  halfBitsToF32(bits: Uint16Array, dtype: HalfDType): Float32Array;
}

export const BUILD_HINT = "run `npm run build:addon`";

/** Where the addon is loaded from ($TILEC_CUDA_ADDON overrides the default build output). */
export function addonPath(): string {
  const override = process.env.TILEC_CUDA_ADDON;
  if (override) return override;
  return fileURLToPath(new URL("./build/Release/tilec_cuda.node", import.meta.url));
}

let cached: { addon: NativeAddon } | { error: string } | undefined;

/** Loads the addon once; never throws. */
export function tryLoadAddon(): { addon: NativeAddon } | { error: string } {
  if (cached) return cached;
  const path = addonPath();
  if (!existsSync(path)) {
    cached = { error: `tilec's CUDA addon is not built: ${BUILD_HINT} (looked for ${path})` };
    return cached;
  }
  try {
    cached = { addon: createRequire(import.meta.url)(path) as NativeAddon };
  } catch (e) {
    // Typically a stale binary from another Node version or platform.
    const why = e instanceof Error ? e.message : String(e);
    cached = { error: `tilec's CUDA addon at ${path} failed to load (${why}): ${BUILD_HINT}` };
  }
  return cached;
}

/** True when the addon file exists and loads (says nothing about CUDA itself). */
export function addonBuilt(): boolean {
  return "addon" in tryLoadAddon();
}

/** The addon, or an Error telling how to build it. */
export function loadAddon(): NativeAddon {
  const r = tryLoadAddon();
  if ("error" in r) throw Object.assign(new Error(r.error), { code: "TILEC_ADDON_NOT_BUILT" });
  return r.addon;
}
