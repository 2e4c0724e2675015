// CUDA runtime tests on a real GPU. Skipped (with the reason in the suite
// name) where CUDA is unavailable; the NVRTC parts also need libnvrtc.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  available,
  compileNvrtc,
  compileNvrtcAsync,
  compileNvrtcCached,
  CudaDevice,
  CudaEvent,
  CudaModule,
  nvrtcAvailable,
  nvrtcVersion,
  PhaseTimer,
  ptxText,
  timeMs,
  type CudaKernel,
} from "../../runtime/cuda/index.ts";

const cuda = available();
const nvrtc = nvrtcAvailable();
// cuda-fake.test.ts re-runs this suite against a fake driver.
const target = process.env.TILEC_FAKE_CUDA ? "CUDA on the fake driver" : "CUDA on a GPU";
const gpuSuite = cuda.ok ? target : `${target} (skipped: ${cuda.reason})`;
const noNvrtc = !nvrtc.ok;
// cuTensorMapEncodeTiled needs compute capability 9.0 (the fake driver has it too).
const tmaDevice = cuda.ok && (process.env.TILEC_FAKE_CUDA || CudaDevice.open().info.ccMajor >= 9);
const nvrtcNote = nvrtc.ok ? "" : ` (skipped: ${nvrtc.reason})`;

const KERNELS = String.raw`
extern "C" __global__ void axpy(float a, const float* x, float* y, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = a * x[i] + y[i];
}
// Writes the sum of all scalar kinds so the packing of each is checked on the device.
extern "C" __global__ void scalars(float* out, int a, unsigned b, float c, long long d, double e) {
  out[0] = (float)a; out[1] = (float)b; out[2] = c; out[3] = (float)d; out[4] = (float)e;
}
// Uses more than 48 KiB of dynamic shared memory: the launch must opt in.
extern "C" __global__ void bigShared(float* out, int words) {
  extern __shared__ float smem[];
  for (int i = threadIdx.x; i < words; i += blockDim.x) smem[i] = (float)i;
  __syncthreads();
  if (threadIdx.x == 0) out[0] = smem[words - 1];
}
// Spins for roughly 'cycles' clocks so event timing has something to measure.
extern "C" __global__ void spin(long long cycles, int* sink) {
  long long start = clock64();
  while (clock64() - start < cycles) {}
  if (threadIdx.x == 0) atomicAdd(sink, 1);
}
`;

describe.skipIf(!cuda.ok)(gpuSuite, () => {
  let dev: CudaDevice;
  let mod: CudaModule | undefined;
  const kernel = (name: string): CudaKernel => mod!.getKernel(name);
  const cacheDir = mkdtempSync(join(tmpdir(), "tilec-nvrtc-gpu-"));

  beforeAll(() => {
    dev = CudaDevice.open(0);
    if (nvrtc.ok) mod = dev.loadModule(compileNvrtc(KERNELS, { arch: dev.arch }).cubin!);
  });
  afterAll(() => {
    mod?.unload();
    rmSync(cacheDir, { recursive: true, force: true });
  });

  it("reports device properties", () => {
    const i = dev.info;
    expect(i.name.length).toBeGreaterThan(0);
    expect(i.ccMajor).toBeGreaterThanOrEqual(7);
    expect(i.smCount).toBeGreaterThan(0);
    expect(i.sharedMemPerBlockOptin).toBeGreaterThanOrEqual(48 * 1024);
    expect(i.l2Bytes).toBeGreaterThan(0);
    expect(i.totalMem).toBeGreaterThan(2 ** 30);
    expect(i.driverVersion).toBeGreaterThanOrEqual(11000);
    expect(CudaDevice.open(0)).toBe(dev);
  });

  it("round-trips fp32, bf16, fp16, i32 and u8 buffers", () => {
    // Values exact in bf16 and fp16, so all three dtypes must return them unchanged.
    const exact = new Float32Array([0, -0, 1, -2.5, 0.15625, 1024, -448, Infinity]);
    for (const dtype of ["fp32", "bf16", "fp16"] as const) {
      const buf = dev.fromHost(exact, dtype);
      expect(buf.bytes).toBe(exact.length * (dtype === "fp32" ? 4 : 2));
      expect([...buf.download()]).toEqual([...exact]);
      buf.free();
    }
    // bf16 rounds to nearest even on upload.
    const bf = dev.fromHost(new Float32Array([1 + 2 ** -8, 1 + 3 * 2 ** -8]), "bf16");
    expect([...bf.download()]).toEqual([1, 1 + 2 ** -6]);
    bf.free();
    const ints = dev.fromHost(new Int32Array([-1, 2 ** 31 - 1, 7]), "i32");
    expect([...ints.download()]).toEqual([-1, 2 ** 31 - 1, 7]);
    ints.upload(new Int32Array([42]), 1);
    expect([...ints.download(1, 2)]).toEqual([42, 7]);
    ints.free();
    const bytes = dev.fromHost(new Uint8Array([1, 2, 3]), "u8");
    expect([...bytes.downloadBytes()]).toEqual([1, 2, 3]);
    bytes.free();
    bytes.free(); // idempotent
    expect(() => bytes.ptr).toThrow(/freed/);
  });

  it("poisons buffers with NaN bit patterns", () => {
    for (const dtype of ["fp32", "bf16", "fp16"] as const) {
      const buf = dev.allocElements(dtype, 1001).poison();
      expect(buf.download().every(Number.isNaN)).toBe(true);
      expect(buf.downloadBytes().every((b) => b === 0xff)).toBe(true);
      expect(
        buf
          .zero()
          .download()
          .every((x) => x === 0),
      ).toBe(true);
      buf.free();
    }
  });

  it("1000 alloc/free cycles leak no device memory", () => {
    dev.synchronize();
    const before = dev.memInfo().free;
    for (let i = 0; i < 1000; i++) dev.alloc(1 << 20, "u8").free();
    const after = dev.memInfo().free;
    expect(before - after).toBeLessThan(8 << 20); // 1000 leaked MiB would be obvious
  });

  it("frees buffers that are garbage-collected without free()", async () => {
    setFlagsFromString("--expose-gc");
    const gc = runInNewContext("gc") as () => void;
    dev.synchronize();
    const before = dev.memInfo().free;
    (() => {
      for (let i = 0; i < 16; i++) dev.alloc(64 << 20, "u8");
    })();
    let after = 0;
    for (let attempt = 0; attempt < 20; attempt++) {
      gc();
      await new Promise((r) => setTimeout(r, 20)); // finalizers run after a GC, in a later task
      after = dev.memInfo().free;
      if (before - after < 64 << 20) break;
    }
    expect(before - after).toBeLessThan(64 << 20);
  });

  it.skipIf(noNvrtc)(`compiles with NVRTC and launches axpy${nvrtcNote}`, () => {
    expect(nvrtcVersion()).toMatch(/^\d+\.\d+$/);
    const n = 10_000;
    const x = Float32Array.from({ length: n }, (_, i) => i);
    const y = Float32Array.from({ length: n }, (_, i) => 2 * i);
    const dx = dev.fromHost(x, "fp32");
    const dy = dev.fromHost(y, "fp32");
    kernel("axpy").launch({ grid: Math.ceil(n / 256), block: 256 }, [
      { f32: 3 },
      { ptr: dx },
      { ptr: dy },
      { i32: n },
    ]);
    const out = dy.download();
    for (let i = 0; i < n; i++) if (out[i] !== 5 * i) expect.fail(`y[${i}] = ${out[i]}, want ${5 * i}`);
    dx.free();
    dy.free();
    const attrs = kernel("axpy").attributes();
    expect(attrs.numRegs).toBeGreaterThan(0);
    expect(attrs.maxThreadsPerBlock).toBeGreaterThan(0);
  });

  it.skipIf(noNvrtc)(`passes every scalar kind correctly${nvrtcNote}`, () => {
    const out = dev.allocElements("fp32", 5).poison();
    kernel("scalars").launch({ grid: 1, block: 1 }, [
      { ptr: out },
      { i32: -3 },
      { u32: 4000000000 },
      { f32: 0.5 },
      { i64: -(2n ** 40n) },
      { f64: 0.25 },
    ]);
    expect([...out.download()]).toEqual([-3, 4000000000, 0.5, -(2 ** 40), 0.25]);
    out.free();
  });

  it.skipIf(noNvrtc)(`opts in to large dynamic shared memory automatically${nvrtcNote}`, () => {
    const bytes = Math.min(100 * 1024, dev.info.sharedMemPerBlockOptin);
    const words = bytes / 4;
    const out = dev.allocElements("fp32", 1).poison();
    kernel("bigShared").launch({ grid: 1, block: 256, sharedBytes: bytes }, [{ ptr: out }, { i32: words }]);
    expect(out.download()[0]).toBe(words - 1);
    out.free();
  });

  it.skipIf(noNvrtc)(`turns an invalid launch into CUDA_ERROR_* naming the call${nvrtcNote}`, () => {
    const k = kernel("axpy");
    const dy = dev.allocElements("fp32", 1);
    const args = [{ f32: 1 }, { ptr: dy }, { ptr: dy }, { i32: 1 }];
    expect(() => k.launch({ grid: 1, block: [2048, 1, 1] }, args)).toThrow(
      /^CUDA_ERROR_\w+ in cuLaunchKernel/,
    );
    try {
      k.launch({ grid: 1, block: [2048, 1, 1] }, args);
    } catch (e) {
      expect(e).toMatchObject({ code: expect.stringMatching(/^CUDA_ERROR_/), call: "cuLaunchKernel" });
    }
    // The error is not sticky: the context still works.
    k.launch({ grid: 1, block: 1 }, args);
    dev.synchronize();
    dy.free();
    expect(() => dev.alloc(8, "u8").free()).not.toThrow();
  });

  // TMA descriptors are sm_90+ and opaque on a real driver; the fake one spells its arguments out,
  // so there the marshalling is checked field by field.
  it.skipIf(!tmaDevice)(
    "encodes TMA descriptors (cuTensorMapEncodeTiled) and names the call when the driver refuses",
    () => {
      const x = dev.alloc(4 * 100 * 8 * 64 * 2, "u8");
      try {
        const args = {
          elementBytes: 2,
          dims: [64, 100, 8, 4],
          stridesBytes: [8 * 64 * 2, 64 * 2, 100 * 8 * 64 * 2],
          box: [64, 128, 1, 1],
          swizzleBytes: 128,
        };
        const map = dev.encodeTensorMap(x.ptr, args);
        expect(map.byteLength).toBe(128);
        expect(map.some((b) => b !== 0)).toBe(true);
        if (process.env.TILEC_FAKE_CUDA) {
          const v = new DataView(map.buffer, map.byteOffset);
          const u32 = (o: number) => v.getUint32(o, true);
          expect(v.getBigUint64(0, true)).toBe(x.ptr);
          // dataType UINT16, rank 4, swizzle 128B (3), L2 promotion 128B (2), zero fill (0)
          expect([8, 12, 16, 20, 24].map(u32)).toEqual([1, 4, 3, 2, 0]);
          expect([28, 32, 36, 40].map(u32)).toEqual(args.dims);
          expect([48, 50, 52, 54].map((o) => v.getUint16(o, true))).toEqual(args.box);
          expect([64, 72, 80].map((o) => Number(v.getBigUint64(o, true)))).toEqual(args.stridesBytes);
        }
        // A stride that is not a multiple of 16 bytes is refused by the driver, named.
        expect(() =>
          dev.encodeTensorMap(x.ptr, { ...args, stridesBytes: [8 * 64 * 2 + 2, 128, 102400] }),
        ).toThrow(/^CUDA_ERROR_\w+ in cuTensorMapEncodeTiled/);
        expect(() => dev.encodeTensorMap(x.ptr, { ...args, swizzleBytes: 48 })).toThrow(/swizzleBytes/);
        expect(() => dev.encodeTensorMap(x.ptr, { ...args, box: [64, 512, 1, 1] })).toThrow(/box entries/);
      } finally {
        x.free();
      }
    },
  );

  it("turns a driver error into CUDA_ERROR_* naming the call", () => {
    expect(() => dev.alloc(2 ** 52, "u8")).toThrow(/^CUDA_ERROR_\w+ in cuMemAlloc_v2/);
  });

  it.skipIf(noNvrtc)(`throws compile errors with the full log${nvrtcNote}`, () => {
    const src = `extern "C" __global__ void broken(float* p) { p[0] = undeclared_thing; }`;
    let err: (Error & { log?: string; code?: string }) | undefined;
    try {
      compileNvrtc(src, { arch: dev.arch, name: "broken.cu" });
    } catch (e) {
      err = e as typeof err;
    }
    expect(err?.code).toBe("NVRTC_ERROR_COMPILATION");
    expect(err?.message).toMatch(/^NVRTC_ERROR_COMPILATION in nvrtcCompileProgram/);
    expect(err?.log).toMatch(/broken\.cu.*undeclared_thing/s);
    expect(err?.message).toContain(err!.log!);
  });

  it.skipIf(noNvrtc)(
    `loads PTX from a virtual architecture, and compiles in parallel${nvrtcNote}`,
    async () => {
      const virt = dev.arch.replace("sm_", "compute_");
      const [a, b] = await Promise.all([
        compileNvrtcAsync(KERNELS, { arch: virt }),
        compileNvrtcAsync(KERNELS, { arch: dev.arch, extraOptions: ["-lineinfo"] }),
      ]);
      expect(ptxText(a.ptx!)).toContain(".entry axpy");
      expect(b.cubin).toBeDefined();
      const m = CudaModule.load(ptxText(a.ptx!)); // text without NUL is accepted too
      expect(m.getKernel("spin").attributes().numRegs).toBeGreaterThan(0);
      m.unload();
      m.unload(); // idempotent
      expect(() => m.getKernel("axpy")).toThrow(/unloaded/);
      await expect(compileNvrtcAsync("nonsense(", { arch: dev.arch })).rejects.toMatchObject({
        code: "NVRTC_ERROR_COMPILATION",
      });
    },
  );

  it("rejects a bad module image with the JIT log", () => {
    expect(() => CudaModule.load(".version 99.9\n.target sm_999\n")).toThrow(
      /^CUDA_ERROR_\w+ in cuModuleLoadDataEx/,
    );
  });

  it.skipIf(noNvrtc)(`caches NVRTC output on disk${nvrtcNote}`, () => {
    const first = compileNvrtcCached(KERNELS, { arch: dev.arch, cacheDir });
    const second = compileNvrtcCached(KERNELS, { arch: dev.arch, cacheDir });
    expect([first.cached, second.cached]).toEqual([false, true]);
    const m = dev.loadModule(second.cubin!);
    expect(m.getKernel("axpy").name).toBe("axpy");
    m.unload();
  });

  it.skipIf(noNvrtc)(`times work with events and streams${nvrtcNote}`, () => {
    const sink = dev.allocElements("i32", 1).zero();
    const stream = dev.createStream();
    const start = CudaEvent.create().record(stream);
    kernel("spin").launch({ grid: 1, block: 32, stream }, [{ i64: 20_000_000n }, { ptr: sink }]);
    const end = CudaEvent.create().record(stream);
    end.synchronize();
    const ms = end.elapsedSince(start);
    expect(ms).toBeGreaterThan(0.1); // 20M clocks is several ms at any clock rate
    expect(ms).toBeLessThan(10_000);
    const ms2 = timeMs(() => {
      kernel("spin").launch({ grid: 1, block: 32, stream }, [{ i64: 1_000_000n }, { ptr: sink }]);
    }, stream);
    expect(ms2).toBeGreaterThan(0);
    stream.synchronize();
    expect([...sink.download()]).toEqual([2]); // plain copies see the stream's work
    start.destroy();
    end.destroy();
    end.destroy(); // idempotent
    expect(() => end.synchronize()).toThrow(/destroyed/);
    stream.destroy();
    expect(() => kernel("spin").launch({ grid: 1, block: 1, stream }, [{ i64: 1n }, { ptr: sink }])).toThrow(
      /destroyed/,
    );
    sink.free();
  });

  it.skipIf(noNvrtc)(`a phase timer sums each phase's time over repeats${nvrtcNote}`, () => {
    const sink = dev.allocElements("i32", 1).zero();
    const stream = dev.createStream();
    const spin = (clocks: bigint) =>
      kernel("spin").launch({ grid: 1, block: 32, stream }, [{ i64: clocks }, { ptr: sink }]);
    const whole = CudaEvent.create().record(stream);
    const timer = new PhaseTimer(stream);
    for (let i = 0; i < 2; i++) {
      spin(4_000_000n);
      timer.mark("long");
      spin(400_000n);
      timer.mark("short");
    }
    const end = CudaEvent.create().record(stream);
    const parts = timer.finish();
    end.synchronize();
    expect(Object.keys(parts)).toEqual(["long", "short"]);
    expect(parts.long).toBeGreaterThan(parts.short!);
    expect(parts.short).toBeGreaterThan(0);
    // The phases tile the interval: together no longer than the whole, measured outside.
    expect(parts.long! + parts.short!).toBeLessThanOrEqual(end.elapsedSince(whole) + 1e-3);
    expect(timer.finish()).toEqual({}); // finished: its events are gone
    whole.destroy();
    end.destroy();
    stream.destroy();
    sink.free();
  });
});
