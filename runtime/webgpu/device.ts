/// <reference types="@webgpu/types" />
// A GPUDevice (from navigator.gpu in a browser, or from Dawn's `webgpu` package in Node: node.ts)
// wrapped for tilec: the features and limits the WGSL backend needs are requested up front,
// pipelines are compiled once per shader and cached, validation errors and device loss become
// exceptions that carry the WGSL compiler's messages with line:col, and tensors upload and
// download as Float32Array. No Node APIs here, so it bundles for a browser.
import { limitsFrom, type WgslCaps, type WgslStorage } from "../../backends/wgsl/target.ts";
import { BINDINGS } from "../../backends/wgsl/emit.ts";
import { f16ToF32, f32ToF16 } from "./half.ts";

export class WebGpuError extends Error {}

/** A shader that did not compile; `messages` are `line:col: type: text` in the WGSL source. */
export class WgslCompileError extends WebGpuError {
  constructor(
    readonly label: string,
    readonly messages: string[],
  ) {
    super(`WGSL of ${label} does not compile:\n${messages.join("\n")}`);
  }
}

export class WebGpuDeviceLost extends WebGpuError {}

/** A device buffer holding `length` elements of `storage` type (f16 padded to 4 bytes). */
export interface GpuTensor {
  readonly buffer: GPUBuffer;
  readonly storage: WgslStorage;
  readonly length: number;
}

export interface CompiledShader {
  readonly module: GPUShaderModule;
  readonly pipeline: GPUComputePipeline;
  readonly warnings: string[];
}

export interface AdapterDescription {
  readonly vendor: string;
  readonly architecture: string;
  readonly device: string;
  readonly description: string;
}

/** Turns compilation messages into `line:col: type: text`, with the source line and a caret. */
export function formatCompilationMessages(
  messages: readonly GPUCompilationMessage[],
  source: string,
  label: string,
): string[] {
  const lines = source.split("\n");
  return messages.map((m) => {
    const text = lines[m.lineNum - 1];
    const where = `${label}:${m.lineNum}:${m.linePos}: ${m.type}: ${m.message}`;
    return text === undefined ? where : `${where}\n  ${text}\n  ${" ".repeat(Math.max(0, m.linePos - 1))}^`;
  });
}

export class WebGpuDevice {
  readonly caps: WgslCaps;
  /** Whether compute passes can write timestamps (the adapter offered `timestamp-query`). */
  readonly timestamps: boolean;
  /** One layout for every tilec kernel: they all bind BINDINGS. */
  readonly bindGroupLayout: GPUBindGroupLayout;
  private readonly pipelineLayout: GPUPipelineLayout;
  private readonly shaders = new Map<string, Promise<CompiledShader>>();
  private lostInfo: GPUDeviceLostInfo | undefined;
  private uncaptured: string[] = [];

  /**
   * `keepAlive` holds whatever must outlive the device (Dawn's GPU object in Node: while it is
   * referenced, Dawn's instance stays); destroy() lets it go.
   */
  constructor(
    readonly device: GPUDevice,
    readonly adapter: AdapterDescription = { vendor: "", architecture: "", device: "", description: "" },
    public keepAlive?: unknown,
  ) {
    const f = device.features;
    this.caps = {
      f16: f.has("shader-f16"),
      subgroups: f.has("subgroups"),
      limits: limitsFrom(device.limits),
    };
    this.timestamps = f.has("timestamp-query");
    void device.lost.then((info) => {
      this.lostInfo = info;
    });
    device.addEventListener("uncapturederror", (e) => {
      this.uncaptured.push((e as GPUUncapturedErrorEvent).error.message);
    });
    this.bindGroupLayout = device.createBindGroupLayout({
      label: "tilec attention",
      entries: BINDINGS.map((b) => ({
        binding: b.binding,
        visibility: GPUShaderStage.COMPUTE,
        buffer: { type: b.type },
      })),
    });
    this.pipelineLayout = device.createPipelineLayout({ bindGroupLayouts: [this.bindGroupLayout] });
  }

  /**
   * Requests a device with the features tilec uses where the adapter offers them (shader-f16,
   * subgroups, timestamp-query) and the adapter's own limits instead of the defaults.
   */
  static async fromAdapter(
    adapter: GPUAdapter,
    options: { features?: readonly GPUFeatureName[]; keepAlive?: unknown } = {},
  ): Promise<WebGpuDevice> {
    const wanted = options.features ?? (["shader-f16", "subgroups", "timestamp-query"] as GPUFeatureName[]);
    const requiredFeatures = wanted.filter((f) => adapter.features.has(f));
    const l = adapter.limits;
    const requiredLimits: Record<string, number> = {};
    for (const k of [
      "maxComputeWorkgroupStorageSize",
      "maxComputeInvocationsPerWorkgroup",
      "maxComputeWorkgroupSizeX",
      "maxStorageBuffersPerShaderStage",
      "maxComputeWorkgroupsPerDimension",
      "maxStorageBufferBindingSize",
      "maxBufferSize",
    ] as const)
      requiredLimits[k] = l[k];
    const device = await adapter.requestDevice({ requiredFeatures, requiredLimits });
    const i = adapter.info;
    return new WebGpuDevice(
      device,
      { vendor: i.vendor, architecture: i.architecture, device: i.device, description: i.description },
      options.keepAlive,
    );
  }

  /** Throws if the device has been lost (or destroyed). */
  ensureAlive(): void {
    if (this.lostInfo)
      throw new WebGpuDeviceLost(
        `WebGPU device lost (${this.lostInfo.reason}): ${this.lostInfo.message || "no message"}`,
      );
  }

  /**
   * Runs `fn` inside validation, out-of-memory and internal error scopes and throws the first error
   * any of them caught (or the device loss that happened meanwhile).
   */
  async scoped<T>(what: string, fn: () => T | Promise<T>): Promise<T> {
    this.ensureAlive();
    const d = this.device;
    d.pushErrorScope("internal");
    d.pushErrorScope("out-of-memory");
    d.pushErrorScope("validation");
    let result: T;
    let thrown: unknown;
    try {
      result = await fn();
    } catch (e) {
      thrown = e;
    }
    const errors = [await d.popErrorScope(), await d.popErrorScope(), await d.popErrorScope()];
    this.ensureAlive();
    if (thrown) throw thrown;
    const e = errors.find((x) => x);
    if (e) throw new WebGpuError(`${what}: ${e.message}`);
    return result!;
  }

  /** Compiles (once per source and entry point) a compute shader against the tilec bind-group layout. */
  shader(source: string, entry: string, label = entry): Promise<CompiledShader> {
    const key = `${entry}\n${source}`;
    let p = this.shaders.get(key);
    if (!p) {
      p = this.compile(source, entry, label);
      this.shaders.set(key, p);
      p.catch(() => this.shaders.delete(key)); // a failure is reported, not cached
    }
    return p;
  }

  private async compile(source: string, entry: string, label: string): Promise<CompiledShader> {
    return this.scoped(`compiling ${label}`, async () => {
      const module = this.device.createShaderModule({ label, code: source });
      const info = await module.getCompilationInfo();
      const errors = info.messages.filter((m) => m.type === "error");
      if (errors.length) throw new WgslCompileError(label, formatCompilationMessages(errors, source, label));
      const warnings = formatCompilationMessages(
        info.messages.filter((m) => m.type !== "error"),
        source,
        label,
      );
      let pipeline: GPUComputePipeline;
      try {
        pipeline = await this.device.createComputePipelineAsync({
          label,
          layout: this.pipelineLayout,
          compute: { module, entryPoint: entry },
        });
      } catch (e) {
        throw new WebGpuError(`creating the pipeline of ${label}: ${(e as Error).message}`);
      }
      return { module, pipeline, warnings };
    });
  }

  /** Bytes of a tensor's buffer: whole 4-byte words (WebGPU's copy and binding granularity). */
  static tensorBytes(length: number, storage: WgslStorage): number {
    return Math.max(4, Math.ceil((length * (storage === "f16" ? 2 : 4)) / 4) * 4);
  }

  /** A new tensor; `fill` (default NaN, so anything a kernel fails to write shows) sets every element. */
  empty(length: number, storage: WgslStorage, fill = NaN): GpuTensor {
    const t = this.allocate(length, storage);
    this.write(t, new Float32Array(length).fill(fill));
    return t;
  }

  upload(data: ArrayLike<number>, storage: WgslStorage): GpuTensor {
    const t = this.allocate(data.length, storage);
    this.write(t, data);
    return t;
  }

  write(t: GpuTensor, data: ArrayLike<number>): void {
    this.ensureAlive();
    if (data.length > t.length) throw new RangeError(`${data.length} values for a tensor of ${t.length}`);
    const bytes = WebGpuDevice.tensorBytes(data.length, t.storage);
    const words = new Uint8Array(bytes);
    if (t.storage === "f16") words.set(new Uint8Array(f32ToF16(data).buffer));
    else words.set(new Uint8Array(Float32Array.from(data).buffer));
    this.device.queue.writeBuffer(t.buffer, 0, words);
  }

  /** Copies a tensor back to the host (waits for the queue). */
  async download(t: GpuTensor): Promise<Float32Array> {
    const bytes = await this.readBuffer(t.buffer, WebGpuDevice.tensorBytes(t.length, t.storage));
    return t.storage === "f16"
      ? f16ToF32(new Uint16Array(bytes, 0, t.length))
      : new Float32Array(bytes, 0, t.length);
  }

  /** A storage buffer holding `data` (int32 words), e.g. a packed plan. */
  storageBuffer(data: Int32Array | Uint32Array, label?: string): GPUBuffer {
    this.ensureAlive();
    const b = this.device.createBuffer({
      label,
      size: Math.max(4, data.byteLength),
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC,
    });
    if (data.byteLength) this.device.queue.writeBuffer(b, 0, data.buffer, data.byteOffset, data.byteLength);
    return b;
  }

  /** The first `bytes` of a buffer (which needs COPY_SRC), after all submitted work. */
  async readBuffer(src: GPUBuffer, bytes: number): Promise<ArrayBuffer> {
    return this.scoped("reading a buffer back", async () => {
      const staging = this.device.createBuffer({
        size: bytes,
        usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      });
      const enc = this.device.createCommandEncoder();
      enc.copyBufferToBuffer(src, 0, staging, 0, bytes);
      this.device.queue.submit([enc.finish()]);
      await staging.mapAsync(GPUMapMode.READ);
      const out = staging.getMappedRange().slice(0);
      staging.unmap();
      staging.destroy();
      return out;
    });
  }

  /**
   * GPU nanoseconds of `reps` compute passes that `encode` records (after `warmup` untimed ones), all
   * in one submission, each pass with begin/end timestamps; needs `timestamp-query`.
   */
  async timePasses(
    encode: (pass: GPUComputePassEncoder) => void,
    options: { reps: number; warmup: number; label?: string },
  ): Promise<{ ns: number[]; medianNs: number }> {
    const timer = new PassTimer(this, options.reps);
    await this.scoped(options.label ?? "timing", () => {
      const enc = this.device.createCommandEncoder();
      for (let i = 0; i < options.warmup + options.reps; i++) {
        const t = i - options.warmup;
        const pass = enc.beginComputePass(t >= 0 ? { timestampWrites: timer.writes(t) } : {});
        encode(pass);
        pass.end();
      }
      this.device.queue.submit([enc.finish()]);
    });
    const ns = await timer.durationsNs();
    return { ns, medianNs: median(ns) };
  }

  /** Errors reported outside any error scope since the last call. */
  takeUncapturedErrors(): string[] {
    const e = this.uncaptured;
    this.uncaptured = [];
    return e;
  }

  destroy(): void {
    this.shaders.clear();
    this.device.destroy();
    this.keepAlive = undefined;
  }

  private allocate(length: number, storage: WgslStorage): GpuTensor {
    this.ensureAlive();
    const buffer = this.device.createBuffer({
      size: WebGpuDevice.tensorBytes(length, storage),
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC,
    });
    return { buffer, storage, length };
  }
}

/**
 * Begin/end timestamps of up to `reps` compute passes (pass i writes 2i and 2i + 1), then their
 * durations once the GPU has run them. The query set and resolve buffer are released after reading.
 */
export class PassTimer {
  private readonly querySet: GPUQuerySet;
  private readonly resolve: GPUBuffer;

  constructor(
    private readonly gpu: WebGpuDevice,
    readonly reps: number,
  ) {
    if (!gpu.timestamps)
      throw new WebGpuError("this device offers no timestamp-query: cannot time on the GPU");
    this.querySet = gpu.device.createQuerySet({ type: "timestamp", count: 2 * reps });
    this.resolve = gpu.device.createBuffer({
      size: 16 * reps,
      usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
    });
  }

  writes(i: number): GPUComputePassTimestampWrites {
    return { querySet: this.querySet, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 };
  }

  async durationsNs(): Promise<number[]> {
    const enc = this.gpu.device.createCommandEncoder();
    enc.resolveQuerySet(this.querySet, 0, 2 * this.reps, this.resolve, 0);
    this.gpu.device.queue.submit([enc.finish()]);
    const stamps = new BigUint64Array(await this.gpu.readBuffer(this.resolve, 16 * this.reps));
    this.querySet.destroy();
    this.resolve.destroy();
    return Array.from({ length: this.reps }, (_, i) => Number(stamps[2 * i + 1]! - stamps[2 * i]!));
  }
}

/** The median (mean of the middle two for an even count). */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}
