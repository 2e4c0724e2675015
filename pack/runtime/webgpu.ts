/// <reference types="@webgpu/types" />
// tilec package loader, WebGPU (copied verbatim into every `tilec build` output as tilec-webgpu.ts).
// Self-contained: plain WebGPU (a browser's navigator.gpu, or Dawn's `webgpu` package in Node) and
// the package's files; no tilec code at run time. The manifest carries the bindings, the dispatch
// and the parameter block precomputed for both tensor layouts.

export type Layout = "bshd" | "bhsd";

/** A kernel's WGSL section of manifest.json. */
export interface WgslManifest {
  readonly entry: string;
  readonly files: { source: string; plan: string };
  readonly features: readonly string[];
  readonly storage: "f32" | "f16";
  readonly dispatch: [number, number, number];
  readonly bindings: readonly { binding: number; type: GPUBufferBindingType }[];
  /** struct Params as u32 words, per layout, with and without an lse output. */
  readonly params: { bytes: number; words: Record<Layout, { lse: number[]; noLse: number[] }> };
}

export interface PackageManifest {
  readonly kernels: Record<string, { wgsl?: WgslManifest }>;
}

/** Bytes of a package file: fs for file: URLs (Node), fetch otherwise (browsers, http). */
export async function readPackageFile(url: URL): Promise<Uint8Array<ArrayBuffer>> {
  if (url.protocol === "file:") {
    const fs = await import("node:fs/promises");
    return new Uint8Array(await fs.readFile(url));
  }
  const r = await fetch(url);
  if (!r.ok) throw new Error(`cannot fetch ${url}: ${r.status}`);
  return new Uint8Array(await r.arrayBuffer());
}

export class PackagedWgslKernel {
  private readonly paramBuffers = new Map<string, GPUBuffer>();

  private constructor(
    readonly device: GPUDevice,
    readonly wgsl: WgslManifest,
    private readonly pipeline: GPUComputePipeline,
    private readonly layout: GPUBindGroupLayout,
    private readonly plan: GPUBuffer,
    private readonly noLse: GPUBuffer,
  ) {}

  static async load(
    dir: URL,
    name: string,
    wgsl: WgslManifest,
    device: GPUDevice,
  ): Promise<PackagedWgslKernel> {
    const missing = wgsl.features.filter((f) => !device.features.has(f));
    if (missing.length) throw new Error(`kernel '${name}' needs device features ${missing.join(", ")}`);
    const code = new TextDecoder().decode(await readPackageFile(new URL(wgsl.files.source, dir)));
    const module = device.createShaderModule({ label: name, code });
    const layout = device.createBindGroupLayout({
      label: name,
      entries: wgsl.bindings.map((b) => ({
        binding: b.binding,
        visibility: GPUShaderStage.COMPUTE,
        buffer: { type: b.type },
      })),
    });
    const pipeline = await device.createComputePipelineAsync({
      label: name,
      layout: device.createPipelineLayout({ bindGroupLayouts: [layout] }),
      compute: { module, entryPoint: wgsl.entry },
    });
    const planBytes = await readPackageFile(new URL(wgsl.files.plan, dir));
    const storage = (data: Uint8Array<ArrayBuffer>, label: string) => {
      const b = device.createBuffer({
        label,
        size: Math.max(4, Math.ceil(data.byteLength / 4) * 4),
        usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
      });
      if (data.byteLength) device.queue.writeBuffer(b, 0, data);
      return b;
    };
    return new PackagedWgslKernel(
      device,
      wgsl,
      pipeline,
      layout,
      storage(planBytes, `${name} plan`),
      storage(new Uint8Array(4), "no lse"),
    );
  }

  private params(layout: Layout, lse: boolean): GPUBuffer {
    const key = `${layout}${lse}`;
    let b = this.paramBuffers.get(key);
    if (!b) {
      const words = this.wgsl.params.words[layout][lse ? "lse" : "noLse"];
      b = this.device.createBuffer({
        size: this.wgsl.params.bytes,
        usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
      });
      this.device.queue.writeBuffer(b, 0, Uint32Array.from(words));
      this.paramBuffers.set(key, b);
    }
    return b;
  }

  /** Encodes and submits one attention call on GPU buffers holding the spec's shape. */
  run(
    q: GPUBuffer,
    k: GPUBuffer,
    v: GPUBuffer,
    out: GPUBuffer,
    options: { lse?: GPUBuffer; layout?: Layout } = {},
  ): void {
    const buffers = [
      this.params(options.layout ?? "bshd", !!options.lse),
      q,
      k,
      v,
      out,
      options.lse ?? this.noLse,
      this.plan,
    ];
    const group = this.device.createBindGroup({
      layout: this.layout,
      entries: buffers.map((buffer, binding) => ({ binding, resource: { buffer } })),
    });
    const enc = this.device.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(this.pipeline);
    pass.setBindGroup(0, group);
    pass.dispatchWorkgroups(...this.wgsl.dispatch);
    pass.end();
    this.device.queue.submit([enc.finish()]);
  }

  free(): void {
    for (const b of [...this.paramBuffers.values(), this.plan, this.noLse]) b.destroy();
  }
}

/** A package's kernels for one GPUDevice, each loaded on first use. */
export class WgslPackage<Name extends string> {
  private manifest?: Promise<PackageManifest>;
  private readonly loaded = new WeakMap<GPUDevice, Map<string, Promise<PackagedWgslKernel>>>();

  constructor(readonly dir: URL) {}

  async kernel(name: Name, device: GPUDevice): Promise<PackagedWgslKernel> {
    this.manifest ??= readPackageFile(new URL("manifest.json", this.dir)).then(
      (b) => JSON.parse(new TextDecoder().decode(b)) as PackageManifest,
    );
    const m = (await this.manifest).kernels[name]?.wgsl;
    if (!m) throw new Error(`this package has no WGSL kernel '${name}'`);
    let perDevice = this.loaded.get(device);
    if (!perDevice) this.loaded.set(device, (perDevice = new Map()));
    let k = perDevice.get(name);
    if (!k) {
      k = PackagedWgslKernel.load(this.dir, name, m, device);
      perDevice.set(name, k);
    }
    return k;
  }
}
