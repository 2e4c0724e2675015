// The DiT's matrix product on WebGPU: a WGSL tiled kernel for C[M, N] = A[M, K] · Bᵀ (+ bias), B
// stored [N, K] like a linear layer's weight, f32 storage and accumulation.
//
// Tiling: a workgroup of 16×16 invocations computes a 64×64 tile of C, each invocation a 4×4 block
// (registers); K advances 16 at a time through workgroup-memory tiles of A (64×16) and B (64×16),
// each loaded by 256 invocations × 4 elements. Edges are masked, so any M, N, K works.
import type { WebGpuDevice, GpuTensor } from "../../webgpu/device.ts";

export const MATMUL_TILE = 64;

export const MATMUL_WGSL = /* wgsl */ `
struct Params { m: u32, n: u32, k: u32, hasBias: u32 }
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

const TILE: u32 = 64u;
const KT: u32 = 16u;
var<workgroup> as_: array<array<f32, 64>, 16>;  // [k][row]
var<workgroup> bs_: array<array<f32, 64>, 16>;  // [k][col]

@compute @workgroup_size(16, 16)
fn matmul(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let row0 = wg.y * TILE;
  let col0 = wg.x * TILE;
  let t = lid.y * 16u + lid.x;
  var acc: array<array<f32, 4>, 4>;
  for (var i = 0u; i < 4u; i++) { for (var j = 0u; j < 4u; j++) { acc[i][j] = 0.0; } }
  for (var k0 = 0u; k0 < p.k; k0 += KT) {
    // 64 rows × 16 k of A and of B: each invocation loads 4 of each (row r = t / 4, k = (t % 4) * 4 + e).
    let r = t / 4u;
    for (var e = 0u; e < 4u; e++) {
      let kk = (t % 4u) * 4u + e;
      let gk = k0 + kk;
      let ga = row0 + r;
      let gb = col0 + r;
      as_[kk][r] = select(0.0, a[ga * p.k + gk], ga < p.m && gk < p.k);
      bs_[kk][r] = select(0.0, b[gb * p.k + gk], gb < p.n && gk < p.k);
    }
    workgroupBarrier();
    for (var kk = 0u; kk < KT; kk++) {
      var av: array<f32, 4>;
      var bv: array<f32, 4>;
      for (var i = 0u; i < 4u; i++) { av[i] = as_[kk][lid.y + 16u * i]; bv[i] = bs_[kk][lid.x + 16u * i]; }
      for (var i = 0u; i < 4u; i++) { for (var j = 0u; j < 4u; j++) { acc[i][j] = fma(av[i], bv[j], acc[i][j]); } }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    let row = row0 + lid.y + 16u * i;
    for (var j = 0u; j < 4u; j++) {
      let col = col0 + lid.x + 16u * j;
      if (row < p.m && col < p.n) {
        var v = acc[i][j];
        if (p.hasBias != 0u) { v += bias[col]; }
        c[row * p.n + col] = v;
      }
    }
  }
}
`;

export class WgslMatmul {
  private constructor(
    private readonly dev: WebGpuDevice,
    private readonly pipeline: GPUComputePipeline,
    private readonly dummy: GPUBuffer,
  ) {}

  static async create(dev: WebGpuDevice): Promise<WgslMatmul> {
    const d = dev.device;
    const pipeline = await dev.scoped("compiling the WGSL matmul", async () => {
      const module = d.createShaderModule({ label: "tilec dit matmul", code: MATMUL_WGSL });
      return d.createComputePipelineAsync({
        label: "tilec dit matmul",
        layout: "auto",
        compute: { module, entryPoint: "matmul" },
      });
    });
    const dummy = dev.storageBuffer(new Int32Array(1), "no bias");
    return new WgslMatmul(dev, pipeline, dummy);
  }

  /** Enqueues c[m, n] = a[m, k] · b[n, k]ᵀ (+ bias[n]); all f32 tensors. */
  run(a: GpuTensor, b: GpuTensor, c: GpuTensor, m: number, n: number, k: number, bias?: GpuTensor): void {
    for (const [t, want, name] of [
      [a, m * k, "a"],
      [b, n * k, "b"],
      [c, m * n, "c"],
    ] as const) {
      if (t.storage !== "f32") throw new TypeError(`${name} must be f32 storage`);
      if (t.length < want) throw new RangeError(`${name} holds ${t.length} values, needs ${want}`);
    }
    if (bias && bias.length < n) throw new RangeError(`bias holds ${bias.length} values, needs ${n}`);
    const d = this.dev.device;
    const params = d.createBuffer({ size: 16, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
    d.queue.writeBuffer(params, 0, new Uint32Array([m, n, k, bias ? 1 : 0]));
    const group = d.createBindGroup({
      layout: this.pipeline.getBindGroupLayout(0),
      entries: [
        { binding: 0, resource: { buffer: a.buffer } },
        { binding: 1, resource: { buffer: b.buffer } },
        { binding: 2, resource: { buffer: bias ? bias.buffer : this.dummy } },
        { binding: 3, resource: { buffer: c.buffer } },
        { binding: 4, resource: { buffer: params } },
      ],
    });
    const enc = d.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(this.pipeline);
    pass.setBindGroup(0, group);
    pass.dispatchWorkgroups(Math.ceil(n / MATMUL_TILE), Math.ceil(m / MATMUL_TILE));
    pass.end();
    d.queue.submit([enc.finish()]);
    params.destroy();
  }

  destroy(): void {
    this.dummy.destroy();
  }
}
