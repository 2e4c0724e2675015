// CUDA runtime tests that need no GPU: availability reporting, argument
// packing, the NVRTC disk cache and half-precision conversion. GPU tests are
// in cuda-gpu.test.ts.
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it, vi } from "vitest";
import { addonBuilt, available, CudaDevice, packArgs, tryLoadAddon } from "../../runtime/cuda/index.ts";
import {
  bf16BitsToF32,
  f16BitsToF32,
  f32ToBf16Bits,
  f32ToF16Bits,
  f32ToHalfBitsJs,
  halfBitsToF32Js,
} from "../../runtime/cuda/dtype.ts";
import { compileNvrtc, nvrtcAvailable } from "../../runtime/cuda/nvrtc.ts";
import {
  compileNvrtcCached,
  defaultNvrtcCacheDir,
  NvrtcCache,
  nvrtcCacheKey,
} from "../../runtime/cuda/nvrtcCache.ts";

const built = addonBuilt();
const notBuilt = "the addon is not built (npm run build:addon)";
/** Suffix for test names that explains a skip. */
const unless = (ok: boolean, why: string) => (ok ? "" : ` (skipped: ${why})`);
const cudaOk = available().ok;

describe("availability", () => {
  it("returns a boolean and, when unavailable, a reason, without throwing", () => {
    const a = available();
    expect(typeof a.ok).toBe("boolean");
    if (!a.ok) expect(a.reason).toMatch(/\S/);
  });

  it("reports an unbuilt addon as unavailable with a build hint", async () => {
    const saved = process.env.TILEC_CUDA_ADDON;
    process.env.TILEC_CUDA_ADDON = join(tmpdir(), "tilec-no-such-addon.node");
    try {
      vi.resetModules(); // fresh module instance: the addon load result is cached per instance
      const fresh = await import("../../runtime/cuda/index.ts");
      const a = fresh.available();
      expect(a.ok).toBe(false);
      expect(a.reason).toContain("tilec's CUDA addon is not built: run `npm run build:addon`");
      expect(() => fresh.cuda.open()).toThrow(/not built/);
      expect(fresh.nvrtcAvailable().ok).toBe(false);
    } finally {
      if (saved === undefined) delete process.env.TILEC_CUDA_ADDON;
      else process.env.TILEC_CUDA_ADDON = saved;
      vi.resetModules();
    }
  });

  it.skipIf(!built || cudaOk)(
    "without a driver: names the cause, and open() throws instead of crashing",
    () => {
      const a = available();
      expect(a.ok).toBe(false);
      expect(a.reason).toMatch(/libcuda\.so\.1 not found: |cuInit failed: CUDA_ERROR_|no CUDA devices/);
      expect(() => CudaDevice.open()).toThrow(a.reason!);
    },
  );

  it.skipIf(!built || cudaOk)("without a driver: device calls throw TILEC_NOT_INITIALIZED", () => {
    const addon = (tryLoadAddon() as { addon: import("../../runtime/cuda/addon.ts").NativeAddon }).addon;
    expect(() => addon.memAlloc(16)).toThrow(expect.objectContaining({ code: "TILEC_NOT_INITIALIZED" }));
    expect(() => addon.memGetInfo()).toThrow(/not initialized/);
  });

  it.skipIf(!built)("rejects wrong handle kinds with a TypeError instead of crashing", () => {
    const addon = (tryLoadAddon() as { addon: import("../../runtime/cuda/addon.ts").NativeAddon }).addon;
    const bogus = {} as never;
    expect(() => addon.streamSynchronize(bogus)).toThrow(TypeError);
    expect(() => addon.moduleGetFunction(bogus, "k")).toThrow(/expected a module handle/);
    expect(() => addon.launch(bogus, [1], [1], 0, null, new ArrayBuffer(8), new Uint32Array(0))).toThrow(
      /expected a function handle/,
    );
    expect(() => addon.memFree(5 as never)).toThrow(/must be a bigint/);
  });

  it.skipIf(!built || nvrtcAvailable().ok)("without NVRTC: compile throws a catchable error", () => {
    expect(nvrtcAvailable().reason).toMatch(/libnvrtc/);
    expect(() => compileNvrtc("__global__ void k() {}")).toThrow(
      expect.objectContaining({ code: "TILEC_NO_NVRTC" }),
    );
  });
});

describe("packArgs", () => {
  it("places each argument at its natural alignment, little-endian", () => {
    const tensorMap = new Uint8Array(128).map((_, i) => i);
    const { buffer, offsets } = packArgs([
      { i32: -7 }, // 0
      { ptr: 0x7f00_0000_1000n }, // 8 (aligned up from 4)
      { f32: 1.5 }, // 16
      { u32: 0xffff_ffff }, // 20
      { i64: -2n }, // 24
      { ptr: { ptr: 0x1234n } }, // 32: anything with a .ptr, e.g. a DeviceBuffer
      { i32: 3 }, // 40
      { bytes: tensorMap, align: 64 }, // 64
      { f64: 0.25 }, // 192
      { u64: 2n ** 64n - 1n }, // 200
    ]);
    expect([...offsets]).toEqual([0, 8, 16, 20, 24, 32, 40, 64, 192, 200]);
    expect(buffer.byteLength).toBe(256); // padded to the largest alignment
    const v = new DataView(buffer);
    expect(v.getInt32(0, true)).toBe(-7);
    expect(v.getBigUint64(8, true)).toBe(0x7f00_0000_1000n);
    expect(v.getFloat32(16, true)).toBe(1.5);
    expect(v.getUint32(20, true)).toBe(0xffff_ffff);
    expect(v.getBigInt64(24, true)).toBe(-2n);
    expect(v.getBigUint64(32, true)).toBe(0x1234n);
    expect(v.getInt32(40, true)).toBe(3);
    expect([...new Uint8Array(buffer, 64, 128)]).toEqual([...tensorMap]);
    expect(v.getFloat64(192, true)).toBe(0.25);
    expect(v.getBigUint64(200, true)).toBe(2n ** 64n - 1n);
  });

  it("packs no arguments into a non-empty buffer", () => {
    const { buffer, offsets } = packArgs([]);
    expect(offsets.length).toBe(0);
    expect(buffer.byteLength).toBeGreaterThan(0);
  });

  it("rejects out-of-range and mistyped values, naming the argument", () => {
    expect(() => packArgs([{ f32: 1 }, { i32: 1.5 }])).toThrow(/kernel argument 1: i32/);
    expect(() => packArgs([{ i32: 2 ** 31 }])).toThrow(/i32 must be an integer in/);
    expect(() => packArgs([{ u32: -1 }])).toThrow(/u32/);
    expect(() => packArgs([{ i64: 2n ** 63n }])).toThrow(/does not fit/);
    expect(() => packArgs([{ u64: -1n }])).toThrow(/does not fit/);
    expect(() => packArgs([{ ptr: 5 as unknown as bigint }])).toThrow(/ptr must be a bigint/);
    expect(() => packArgs([{ bytes: new Uint8Array(4), align: 3 }])).toThrow(/power of two/);
    expect(() => packArgs([{ bytes: new Uint8Array(0) }])).toThrow(/empty/);
    expect(() => packArgs([{ x: 1 } as never])).toThrow(/unknown argument kind/);
  });
});

describe("NVRTC cache", () => {
  const dirs: string[] = [];
  const tempDir = () => {
    const d = mkdtempSync(join(tmpdir(), "tilec-nvrtc-"));
    dirs.push(d);
    return d;
  };
  afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

  const base = { source: "k", arch: "sm_90", options: ["-arch=sm_90"], nvrtcVersion: "12.8" };

  it("key is a stable sha256 that changes with every input", () => {
    const k = nvrtcCacheKey(base);
    expect(k).toMatch(/^[0-9a-f]{64}$/);
    expect(nvrtcCacheKey({ ...base })).toBe(k);
    const variants = [
      { ...base, source: "k2" },
      { ...base, arch: "sm_90a" },
      { ...base, options: ["-arch=sm_90", "-lineinfo"] },
      { ...base, nvrtcVersion: "13.0" },
      // field boundaries matter: moving text between fields changes the key
      { ...base, source: "k-", options: ["arch=sm_90"] },
    ];
    const keys = new Set([k, ...variants.map(nvrtcCacheKey)]);
    expect(keys.size).toBe(variants.length + 1);
  });

  it("round-trips through disk, and a hit skips compilation", () => {
    const cacheDir = tempDir();
    const cubin = new Uint8Array([0x7f, 0x45, 0x4c, 0x46, 1, 2, 3]);
    let compiles = 0;
    const deps = {
      version: () => "12.8",
      compile: () => {
        compiles++;
        return { cubin, log: "warning: something" };
      },
    };
    const first = compileNvrtcCached("src", { arch: "sm_90", cacheDir }, deps);
    expect(first).toMatchObject({ cached: false, log: "warning: something" });
    expect(existsSync(join(cacheDir, `${first.key}.cubin`))).toBe(true);
    const second = compileNvrtcCached("src", { arch: "sm_90", cacheDir }, deps);
    expect(compiles).toBe(1);
    expect(second.cached).toBe(true);
    expect(second.key).toBe(first.key);
    expect([...second.cubin!]).toEqual([...cubin]);
    // A different option is a different entry.
    compileNvrtcCached("src", { arch: "sm_90", cacheDir, extraOptions: ["-G"] }, deps);
    expect(compiles).toBe(2);
    // No temp files are left behind by the atomic writes.
    expect(readdirSync(cacheDir).filter((f) => f.endsWith(".tmp"))).toEqual([]);
  });

  it("stores PTX when there is no cubin (virtual architectures)", () => {
    const cache = new NvrtcCache(tempDir());
    const ptx = new TextEncoder().encode(".version 8.0\n\0");
    cache.write("abc", { ptx, log: "" });
    expect(cache.read("abc")).toEqual({ ptx: expect.any(Uint8Array) });
    expect([...cache.read("abc")!.ptx!]).toEqual([...ptx]);
    expect(cache.read("missing")).toBeUndefined();
  });

  it("honours $TILEC_CACHE_DIR", () => {
    const saved = process.env.TILEC_CACHE_DIR;
    process.env.TILEC_CACHE_DIR = "/tmp/tilec-cache-test";
    try {
      expect(defaultNvrtcCacheDir()).toBe(join("/tmp/tilec-cache-test", "nvrtc"));
    } finally {
      if (saved === undefined) delete process.env.TILEC_CACHE_DIR;
      else process.env.TILEC_CACHE_DIR = saved;
    }
  });
});

/** Float32 values with these exact bit patterns. */
function fromBits(bits: number[]): Float32Array {
  return new Float32Array(new Uint32Array(bits).buffer);
}

// Edge cases: zeros, subnormals, halfway points, overflow, inf, NaNs.
const edgeBits = [
  0x00000000, 0x80000000, 0x3f800000, 0xbf800000, 0x3f801000, 0x3f800fff, 0x3f803000, 0x3f808000, 0x3f818000,
  0x477fe000, 0x477ff000, 0x477fefff, 0x7f7fffff, 0x7f800000, 0xff800000, 0x7fc00000, 0xffc00001, 0x7f800001,
  0x33000000, 0x33000001, 0x32ffffff, 0x387fc000, 0x38800000, 0x00000001, 0x007fffff, 0x3c00c000, 0x34ffffff,
];

describe("half conversion", () => {
  it("rounds to nearest even with correct special values (TypeScript reference)", () => {
    expect(f32ToF16Bits(1)).toBe(0x3c00);
    expect(f32ToF16Bits(65504)).toBe(0x7bff);
    expect(f32ToF16Bits(65520)).toBe(0x7c00); // halfway to the next binade rounds to inf
    expect(f32ToF16Bits(2 ** -24)).toBe(0x0001);
    expect(f32ToF16Bits(2 ** -25)).toBe(0x0000); // tie to even (zero)
    expect(f32ToF16Bits(1 + 2 ** -11)).toBe(0x3c00); // tie, even stays
    expect(f32ToF16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie, odd rounds up
    expect(f32ToF16Bits(-0)).toBe(0x8000);
    expect(f32ToF16Bits(NaN) & 0x7e00).toBe(0x7e00);
    expect(f32ToBf16Bits(1 + 2 ** -8)).toBe(0x3f80); // tie to even
    expect(f32ToBf16Bits(1 + 3 * 2 ** -8)).toBe(0x3f82);
    expect(f32ToBf16Bits(-Infinity)).toBe(0xff80);
    expect(Number.isNaN(bf16BitsToF32(f32ToBf16Bits(NaN)))).toBe(true);
    expect(f16BitsToF32(0x0001)).toBe(2 ** -24);
    expect(f16BitsToF32(0xfbff)).toBe(-65504);
  });

  for (const dtype of ["fp16", "bf16"] as const) {
    it(`every ${dtype} bit pattern survives half → f32 → half (TypeScript reference)`, () => {
      const all = new Uint16Array(65536).map((_, i) => i);
      const back = f32ToHalfBitsJs(halfBitsToF32Js(all, dtype), dtype);
      checkRoundTrip(all, back, dtype);
    });

    it.skipIf(!built)(`native ${dtype} round trip of every bit pattern ${unless(built, notBuilt)}`, () => {
      const addon = (tryLoadAddon() as { addon: import("../../runtime/cuda/addon.ts").NativeAddon }).addon;
      const all = new Uint16Array(65536).map((_, i) => i);
      const f = addon.halfBitsToF32(all, dtype);
      expect([...f]).toEqual([...halfBitsToF32Js(all, dtype)]);
      checkRoundTrip(all, addon.f32ToHalfBits(f, dtype), dtype);
    });

    it.skipIf(!built)(
      `native f32 → ${dtype} agrees with the reference bit-for-bit ${unless(built, notBuilt)}`,
      () => {
        const addon = (tryLoadAddon() as { addon: import("../../runtime/cuda/addon.ts").NativeAddon }).addon;
        // Deterministic pseudo-random float32 bit patterns plus the edge cases.
        const bits: number[] = [...edgeBits, ...edgeBits.map((b) => (b ^ 0x80000000) >>> 0)];
        let s = 0x12345678;
        for (let i = 0; i < 200_000; i++) {
          s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
          bits.push(s);
        }
        const input = fromBits(bits);
        expect([...addon.f32ToHalfBits(input, dtype)]).toEqual([...f32ToHalfBitsJs(input, dtype)]);
        // Views with a byte offset convert only their own elements.
        const view = input.subarray(3, 10);
        expect([...addon.f32ToHalfBits(view, dtype)]).toEqual([...f32ToHalfBitsJs(view, dtype)]);
      },
    );
  }

  it.skipIf(!built)(`native conversion rejects bad input ${unless(built, notBuilt)}`, () => {
    const addon = (tryLoadAddon() as { addon: import("../../runtime/cuda/addon.ts").NativeAddon }).addon;
    expect(() => addon.f32ToHalfBits(new Float64Array(2) as never, "bf16")).toThrow(/Float32Array/);
    expect(() => addon.f32ToHalfBits(new Float32Array(2), "fp8" as never)).toThrow(/'bf16' or 'fp16'/);
  });
});

function checkRoundTrip(all: Uint16Array, back: Uint16Array, dtype: "fp16" | "bf16") {
  const expMask = dtype === "fp16" ? 0x7c00 : 0x7f80;
  const mantMask = dtype === "fp16" ? 0x03ff : 0x007f;
  for (let i = 0; i < all.length; i++) {
    const isNaN = (all[i] & expMask) === expMask && (all[i] & mantMask) !== 0;
    if (isNaN) {
      // NaNs stay NaNs with their sign (quieted).
      expect((back[i] & expMask) === expMask && (back[i] & mantMask) !== 0).toBe(true);
      expect(back[i] & 0x8000).toBe(all[i] & 0x8000);
    } else if (back[i] !== all[i]) {
      expect.fail(`${dtype} 0x${all[i].toString(16)} came back as 0x${back[i].toString(16)}`);
    }
  }
}
