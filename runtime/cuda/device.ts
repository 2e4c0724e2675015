// Object API over the native addon: device, buffers, modules, kernels,
// streams and events. tilec drives one GPU per process (the addon holds one
// primary context), so buffers and modules don't carry a device reference.
import {
  loadAddon,
  type DeviceInfo,
  type EventHandle,
  type FuncAttributes,
  type FunctionHandle,
  type ModuleHandle,
  type NativeAddon,
  type StreamHandle,
} from "./addon.ts";
import { packArgs, type KernelArg } from "./args.ts";
import { DTYPE_BYTES, hostArrayCtor, isHalf, type DType, type HostArray } from "./dtype.ts";

export type { DeviceInfo, FuncAttributes, KernelArg, DType, HostArray };

function native(): NativeAddon {
  return loadAddon();
}

// Device memory dropped without free() is released when its DeviceBuffer is
// collected. The held value is the raw pointer (the buffer itself must not
// be referenced from here or it would never be collected).
const registry = new FinalizationRegistry<bigint>((ptr) => {
  try {
    native().memFree(ptr);
  } catch {
    // The context may already be gone at exit; nothing useful to do.
  }
});

/** A device allocation with an element type. `free()` is idempotent. */
export class DeviceBuffer<D extends DType = DType> {
  readonly bytes: number;
  readonly dtype: D;
  /** Number of elements of `dtype`. */
  readonly length: number;
  #ptr: bigint | null;

  private constructor(ptr: bigint, bytes: number, dtype: D) {
    this.#ptr = ptr;
    this.bytes = bytes;
    this.dtype = dtype;
    this.length = bytes / DTYPE_BYTES[dtype];
    if (ptr !== 0n) registry.register(this, ptr, this);
  }

  /** Allocates `bytes` bytes (a multiple of the dtype's size). Zero bytes is allowed and allocates nothing. */
  static alloc<D extends DType>(bytes: number, dtype: D): DeviceBuffer<D> {
    const size = DTYPE_BYTES[dtype];
    if (size === undefined) throw new TypeError(`unknown dtype ${String(dtype)}`);
    if (!Number.isSafeInteger(bytes) || bytes < 0 || bytes % size !== 0) {
      throw new RangeError(`buffer size ${bytes} is not a non-negative multiple of ${size} (${dtype})`);
    }
    return new DeviceBuffer(bytes === 0 ? 0n : native().memAlloc(bytes), bytes, dtype);
  }

  /** The device address; throws once freed so stale pointers never reach a kernel. */
  get ptr(): bigint {
    if (this.#ptr === null) throw new Error(`DeviceBuffer (${this.bytes} bytes ${this.dtype}) was freed`);
    return this.#ptr;
  }

  get freed(): boolean {
    return this.#ptr === null;
  }

  /** Address of element `index` (for sub-views passed to kernels). */
  ptrAt(index: number): bigint {
    if (!Number.isInteger(index) || index < 0 || index > this.length) {
      throw new RangeError(`element ${index} outside buffer of ${this.length}`);
    }
    return this.ptr + BigInt(index * DTYPE_BYTES[this.dtype]);
  }

  /** Uploads host data at element offset `at`; float dtypes convert from float32 (RNE). */
  upload(data: HostArray<D>, at = 0): this {
    const ctor = hostArrayCtor(this.dtype);
    if (!(data instanceof ctor)) throw new TypeError(`${this.dtype} buffers upload from ${ctor.name}`);
    this.checkRange(at, data.length);
    const bits = isHalf(this.dtype) ? native().f32ToHalfBits(data as Float32Array, this.dtype) : data;
    if (data.length) native().memcpyHtoD(this.ptrAt(at), bits);
    return this;
  }

  /** Uploads raw bytes at byte offset `byteOffset` (no conversion). */
  uploadBytes(data: ArrayBuffer | ArrayBufferView, byteOffset = 0): this {
    const n = data.byteLength;
    if (!Number.isInteger(byteOffset) || byteOffset < 0 || byteOffset + n > this.bytes) {
      throw new RangeError(`${n} bytes at ${byteOffset} overflow a ${this.bytes}-byte buffer`);
    }
    if (n) native().memcpyHtoD(this.ptr + BigInt(byteOffset), data);
    return this;
  }

  /** Downloads `count` elements from element `at` (default: all); float dtypes come back as float32. */
  download(at = 0, count = this.length - at): HostArray<D> {
    this.checkRange(at, count);
    const ctor = isHalf(this.dtype) ? Uint16Array : hostArrayCtor(this.dtype);
    const host = new ctor(count);
    if (count) native().memcpyDtoH(host, this.ptrAt(at));
    const out = isHalf(this.dtype) ? native().halfBitsToF32(host as Uint16Array, this.dtype) : host;
    return out as HostArray<D>;
  }

  /** All bytes, unconverted. */
  downloadBytes(): Uint8Array {
    const host = new Uint8Array(this.bytes);
    if (this.bytes) native().memcpyDtoH(host, this.ptr);
    return host;
  }

  /**
   * Fills with all-ones bits: NaN for fp32 (0xFFFFFFFF), fp16 and bf16
   * (0xFFFF), so elements a kernel fails to write show up as NaN.
   */
  poison(): this {
    return this.fill(0xff);
  }

  zero(): this {
    return this.fill(0);
  }

  private fill(byte: number): this {
    if (this.bytes === 0) return this;
    // memsetD32 is the faster path; D8 covers odd sizes (u8 buffers).
    if (this.bytes % 4 === 0) native().memsetD32(this.ptr, (byte * 0x01010101) >>> 0, this.bytes / 4);
    else native().memsetD8(this.ptr, byte, this.bytes);
    return this;
  }

  free(): void {
    const p = this.#ptr;
    if (p === null) return;
    this.#ptr = null;
    if (p === 0n) return;
    registry.unregister(this);
    native().memFree(p);
  }

  private checkRange(at: number, count: number): void {
    if (
      !Number.isInteger(at) ||
      !Number.isInteger(count) ||
      at < 0 ||
      count < 0 ||
      at + count > this.length
    ) {
      throw new RangeError(`elements [${at}, ${at + count}) outside buffer of ${this.length} ${this.dtype}`);
    }
  }
}

/** A CUDA stream; blocking w.r.t. the default stream, so plain copies see its kernels' results. */
export class Stream {
  /** @internal */ readonly handle: StreamHandle;
  private constructor(handle: StreamHandle) {
    this.handle = handle;
  }
  static create(): Stream {
    return new Stream(native().streamCreate());
  }
  synchronize(): void {
    native().streamSynchronize(this.handle);
  }
  /** Idempotent; also happens when the Stream is garbage-collected. */
  destroy(): void {
    native().streamDestroy(this.handle);
  }
}

/** A timing event. Exported from the package index as both `CudaEvent` and `Event`. */
export class CudaEvent {
  /** @internal */ readonly handle: EventHandle;
  private constructor(handle: EventHandle) {
    this.handle = handle;
  }
  static create(): CudaEvent {
    return new CudaEvent(native().eventCreate());
  }
  record(stream: Stream | null = null): this {
    native().eventRecord(this.handle, stream?.handle ?? null);
    return this;
  }
  synchronize(): void {
    native().eventSynchronize(this.handle);
  }
  /** Milliseconds from `start` to this event (both recorded; this one complete). */
  elapsedSince(start: CudaEvent): number {
    return native().eventElapsedMs(start.handle, this.handle);
  }
  static elapsedMs(start: CudaEvent, end: CudaEvent): number {
    return end.elapsedSince(start);
  }
  destroy(): void {
    native().eventDestroy(this.handle);
  }
}

/** Times GPU work enqueued by `fn` on `stream` with a pair of events; returns milliseconds. */
export function timeMs(fn: () => void, stream: Stream | null = null): number {
  const start = CudaEvent.create();
  const end = CudaEvent.create();
  try {
    start.record(stream);
    fn();
    end.record(stream);
    end.synchronize();
    return end.elapsedSince(start);
  } finally {
    start.destroy();
    end.destroy();
  }
}

/**
 * Device-event timing of consecutive phases of work on one stream: each mark(phase) records an
 * event, and the time since the previous mark (or the start) counts towards that phase, summed over
 * repeats (a DiT's 32 layers). finish() waits for the last event and returns milliseconds per phase.
 */
export class PhaseTimer {
  private readonly marks: { phase: string; event: CudaEvent }[] = [];

  constructor(private readonly stream: Stream | null = null) {
    this.marks.push({ phase: "", event: CudaEvent.create().record(stream) });
  }

  mark(phase: string): void {
    this.marks.push({ phase, event: CudaEvent.create().record(this.stream) });
  }

  finish(): Record<string, number> {
    const ms: Record<string, number> = {};
    if (!this.marks.length) return ms; // finished before
    try {
      this.marks[this.marks.length - 1]!.event.synchronize();
      for (let i = 1; i < this.marks.length; i++) {
        const { phase, event } = this.marks[i]!;
        ms[phase] = (ms[phase] ?? 0) + event.elapsedSince(this.marks[i - 1]!.event);
      }
    } finally {
      for (const m of this.marks) m.event.destroy();
      this.marks.length = 0;
    }
    return ms;
  }
}

export type Dim3 = number | readonly [number] | readonly [number, number] | readonly [number, number, number];

export interface LaunchConfig {
  grid: Dim3;
  block: Dim3;
  /** Dynamic shared memory in bytes (default 0). */
  sharedBytes?: number;
  /** null/undefined: the legacy default stream. */
  stream?: Stream | null;
}

const DEFAULT_DYNAMIC_SHARED = 48 * 1024;

export class CudaKernel {
  readonly name: string;
  readonly module: CudaModule; // keeps the module reachable while the kernel is
  /** @internal */ readonly handle: FunctionHandle;
  #maxDynamicShared = DEFAULT_DYNAMIC_SHARED;

  /** @internal */
  constructor(module: CudaModule, name: string, handle: FunctionHandle) {
    this.module = module;
    this.name = name;
    this.handle = handle;
  }

  attributes(): FuncAttributes {
    return native().funcAttributes(this.handle);
  }

  /** Opts in to more than 48 KiB of dynamic shared memory (up to the device's per-block opt-in limit). */
  setMaxDynamicSharedMemory(bytes: number): this {
    native().setMaxDynamicSharedMemory(this.handle, bytes);
    this.#maxDynamicShared = bytes;
    return this;
  }

  launch(config: LaunchConfig, args: readonly KernelArg[]): void {
    const shared = config.sharedBytes ?? 0;
    // Launches above 48 KiB fail unless the kernel opted in; doing it here
    // means callers only state how much they need.
    if (shared > this.#maxDynamicShared) this.setMaxDynamicSharedMemory(shared);
    const { buffer, offsets } = packArgs(args);
    native().launch(
      this.handle,
      toDims(config.grid),
      toDims(config.block),
      shared,
      config.stream?.handle ?? null,
      buffer,
      offsets,
    );
  }
}

function toDims(d: Dim3): number[] {
  return typeof d === "number" ? [d] : [...d];
}

export class CudaModule {
  /** @internal */ readonly handle: ModuleHandle;
  #kernels = new Map<string, CudaKernel>();

  private constructor(handle: ModuleHandle) {
    this.handle = handle;
  }

  /** Loads a cubin, fatbin or PTX (bytes or text; NUL termination is handled). */
  static load(image: Uint8Array | ArrayBuffer | string): CudaModule {
    const bytes = typeof image === "string" ? new TextEncoder().encode(image) : image;
    return new CudaModule(native().moduleLoadData(bytes));
  }

  /** The `extern "C"` kernel `name` (cached per name). */
  getKernel(name: string): CudaKernel {
    let k = this.#kernels.get(name);
    if (!k) {
      k = new CudaKernel(this, name, native().moduleGetFunction(this.handle, name));
      this.#kernels.set(name, k);
    }
    return k;
  }

  /** Idempotent; kernels of an unloaded module throw on launch instead of crashing. */
  unload(): void {
    this.#kernels.clear();
    native().moduleUnload(this.handle);
  }
}

const opened = new Map<number, CudaDevice>();

export class CudaDevice {
  readonly ordinal: number;
  readonly info: DeviceInfo;

  private constructor(ordinal: number) {
    native().init(ordinal);
    this.ordinal = ordinal;
    this.info = native().deviceInfo();
  }

  /**
   * Initializes CUDA on device `ordinal`; throws (with the reason) if CUDA is unusable. Without an
   * ordinal it returns the device this process already drives (a rank of `tilec launch` opens its
   * GPU first, then the compiler, DiT and tuner open "the" device), else device 0.
   */
  static open(ordinal?: number): CudaDevice {
    ordinal ??= opened.values().next().value?.ordinal ?? 0;
    let d = opened.get(ordinal);
    if (!d) {
      d = new CudaDevice(ordinal);
      opened.set(ordinal, d);
    }
    return d;
  }

  /** e.g. "sm_90" (NVRTC's -arch for this device). */
  get arch(): string {
    return `sm_${this.info.ccMajor}${this.info.ccMinor}`;
  }

  alloc<D extends DType>(bytes: number, dtype: D): DeviceBuffer<D> {
    return DeviceBuffer.alloc(bytes, dtype);
  }

  allocElements<D extends DType>(dtype: D, length: number): DeviceBuffer<D> {
    return DeviceBuffer.alloc(length * DTYPE_BYTES[dtype], dtype);
  }

  /** Allocates a buffer of `dtype` and uploads `data` into it. */
  fromHost<D extends DType>(data: HostArray<D>, dtype: D): DeviceBuffer<D> {
    const buf = this.allocElements(dtype, data.length);
    try {
      return buf.upload(data);
    } catch (e) {
      buf.free();
      throw e;
    }
  }

  memInfo(): { free: number; total: number } {
    return native().memGetInfo();
  }

  synchronize(): void {
    native().synchronize();
  }

  loadModule(image: Uint8Array | ArrayBuffer | string): CudaModule {
    return CudaModule.load(image);
  }

  createStream(): Stream {
    return Stream.create();
  }

  createEvent(): CudaEvent {
    return CudaEvent.create();
  }

  /**
   * A TMA descriptor (CUtensorMap, 128 bytes) for device memory at `address`, to pass by value as a
   * kernel argument ({ bytes, align: 64 }). `args` come from backends/cuda/tma.ts's tensorMapArgs.
   */
  encodeTensorMap(
    address: bigint,
    args: {
      readonly elementBytes: number;
      readonly dims: readonly number[];
      readonly stridesBytes: readonly number[];
      readonly box: readonly number[];
      readonly swizzleBytes: number;
    },
  ): Uint8Array {
    return native().tensorMapEncodeTiled(
      address,
      args.elementBytes,
      [...args.dims],
      [...args.stridesBytes],
      [...args.box],
      args.swizzleBytes,
    );
  }
}
