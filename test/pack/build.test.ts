// `tilec build` packages: stable output (nothing rewritten when nothing changed), incremental
// rebuilds (a changed kernel rewrites only its files; a removed kernel's files go), the CUDA
// loader's parameter struct byte for byte against the runtime's packer, the Python loader's packer
// against the TypeScript one, and the generated TypeScript entry points.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { CheckedSpec } from "../../compiler/check.ts";
import { lowerKernel } from "../../compiler/lower.ts";
import { compileSpec, planKernel } from "../../compiler/pipeline.ts";
import { findNvcc } from "../../backends/cuda/nvcc.ts";
import { emitCuda, PARAMS_BYTES } from "../../backends/cuda/emit.ts";
import { tensorMapArgs, type TensorMapSpec } from "../../backends/cuda/tma.ts";
import { buildPackage } from "../../pack/build.ts";
import { TILEC_PARAMS } from "../../pack/params.ts";
import { CudaPackage, packParams, type CudaRuntime } from "../../pack/runtime/cuda.ts";
import { CudaAttention } from "../../runtime/attention.ts";
import { available } from "../../runtime/cuda/index.ts";
import type { DeviceBuffer } from "../../runtime/cuda/device.ts";

const SPEC = (
  mask: string,
) => `layout L { video 3 x 4 x 8 text 5 after batch 2 heads 4 kv_heads 2 head_dim 32 dtype bf16 }
kernel a { layout L mask attention_tile(3) block 64 x 64 targets cuda, wgsl }
kernel b { layout L mask ${mask} block 64 x 64 targets cuda, wgsl }
kernel c { layout L mask full block 64 x 64 targets wgsl }
`;

// Head dim 64 and 128-row blocks: on sm_90 the default configuration is the wgmma template.
const SPEC_HOPPER = `layout L { video 3 x 4 x 8 text 5 after batch 2 heads 4 kv_heads 2 head_dim 64 dtype bf16 }
kernel a { layout L mask attention_tile(3) block 128 x 128 targets cuda }
`;

function spec(text: string): CheckedSpec {
  const r = compileSpec(text, "pkg.tile");
  if (!r.spec) throw new Error(r.diagnostics.map((d) => d.message).join("\n"));
  return r.spec;
}

const build = (s: CheckedSpec, dir: string, nvcc = false) =>
  buildPackage(s, "pkg.tile", dir, { arch: "sm_90", nvcc, useTuned: false });

describe("tilec build", () => {
  it("writes nothing on an unchanged rebuild, only the changed kernel's files after an edit, and removes what left", async () => {
    const dir = mkdtempSync(join(tmpdir(), "tilec-pkg-"));
    const first = await build(spec(SPEC("temporal_band(1)")), dir);
    expect(first.unchanged).toEqual([]);
    expect(first.written).toEqual(
      expect.arrayContaining([
        "a.cu",
        "a.cuda.plan.bin",
        "a.wgsl",
        "a.wgsl.plan.bin",
        "c.wgsl",
        "manifest.json",
        "index.ts",
        "webgpu.ts",
        "tilec-cuda.ts",
        "tilec-webgpu.ts",
        "tilec_kernels.py",
        "__init__.py",
        "README.md",
      ]),
    );
    expect(first.written).not.toContain("c.cu"); // c targets wgsl only
    const mtime = statSync(join(dir, "a.cu")).mtimeMs;
    const again = await build(spec(SPEC("temporal_band(1)")), dir);
    expect(again.written).toEqual([]);
    expect(again.removed).toEqual([]);
    expect(statSync(join(dir, "a.cu")).mtimeMs).toBe(mtime);

    const edited = await build(spec(SPEC("temporal_band(2)")), dir);
    // b's sources and the files that list masks; nothing of a or c
    expect(edited.written).toEqual(expect.arrayContaining(["b.cu", "b.wgsl", "manifest.json"]));
    const mayChange = /^(b\.|manifest\.json|README\.md|index\.ts|webgpu\.ts)/;
    expect(edited.written.filter((f) => !mayChange.test(f))).toEqual([]);

    const fewer = await build(spec(SPEC("temporal_band(2)").replace(/kernel c .*\n/, "")), dir);
    expect(fewer.removed.sort()).toEqual(["c.wgsl", "c.wgsl.plan.bin"]);
    const manifest = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8"));
    expect(Object.keys(manifest.kernels)).toEqual(["a", "b"]);
    expect(manifest.files).not.toContain("c.wgsl");
  });

  it.skipIf(!findNvcc())(
    "runs nvcc only for kernels whose source changed",
    async () => {
      const dir = mkdtempSync(join(tmpdir(), "tilec-pkg-nvcc-"));
      const text = SPEC("temporal_band(1)").replace(/kernel c .*\n/, "");
      const first = await build(spec(text), dir, true);
      expect(first.compiled.sort()).toEqual(["a", "b"]);
      const cubin = readFileSync(join(dir, "a.cubin"));
      const again = await build(spec(text), dir, true);
      expect(again.compiled).toEqual([]);
      expect(again.written).toEqual([]);
      const edited = await build(spec(text.replace("temporal_band(1)", "temporal_band(2)")), dir, true);
      expect(edited.compiled).toEqual(["b"]);
      expect(readFileSync(join(dir, "a.cubin")).equals(cubin)).toBe(true);
    },
    120_000,
  );

  it("the CUDA loader packs TilecParams exactly as the runtime does (and launches the spec's grid)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "tilec-pkg-params-"));
    const s = spec(SPEC("temporal_band(1)"));
    await build(s, dir);
    // A fake runtime: records the launch; "NVRTC" returns a dummy image.
    let launched:
      | { config: { grid: unknown; block: unknown; sharedBytes?: number }; args: readonly unknown[] }
      | undefined;
    let nextPtr = 0x10000n;
    const fake: CudaRuntime = {
      CudaDevice: {
        open: () => ({
          arch: "sm_90",
          encodeTensorMap: () => new Uint8Array(128),
          fromHost: (data: Int32Array) => ({
            ptr: (nextPtr += 0x1000n),
            dtype: "i32",
            length: data.length,
            free() {},
          }),
          loadModule: () => ({
            getKernel: () => ({ launch: (config, args) => void (launched = { config, args }) }),
            unload() {},
          }),
        }),
      },
      compileNvrtc: () => ({ cubin: new Uint8Array([1]) }),
    };
    const pkg = new CudaPackage<"a" | "b">(fake, new URL(`file://${dir}/`));
    const buf = (ptr: bigint, length: number, dtype = "bf16") => ({ ptr, length, dtype, free() {} });
    const { batch, heads, kvHeads, headDim } = pkg.manifest.kernels.a!.shape;
    const n = pkg.manifest.kernels.a!.shape.seqLen;
    const q = buf(0xa000n, batch * n * heads * headDim);
    const k = buf(0xb000n, batch * n * kvHeads * headDim);
    const v = buf(0xc000n, batch * n * kvHeads * headDim);
    const o = buf(0xd000n, batch * n * heads * headDim);
    const lse = buf(0xe000n, batch * heads * n, "fp32");
    for (const layout of ["bshd", "bhsd"] as const) {
      nextPtr = 0x10000n;
      const kernel = pkg.kernel("a");
      kernel.run(q, k, v, o, { lse, layout });
      // The runtime's packer on the same IR (the package's default config for sm_90) and pointers.
      const ir = lowerKernel(planKernel(s.kernels.get("a")!), "pkg.tile", undefined, "sm_90");
      const attn = Object.create(CudaAttention.prototype) as CudaAttention;
      const planPtrs = [1, 2, 3, 4, 5, 6].map((i) => ({ ptr: 0x10000n + BigInt(i) * 0x1000n, length: 1 }));
      Object.assign(attn, { ir, planBuffers: planPtrs });
      const want = attn.params(
        q as unknown as DeviceBuffer,
        k as unknown as DeviceBuffer,
        v as unknown as DeviceBuffer,
        o as unknown as DeviceBuffer,
        lse as unknown as DeviceBuffer,
        layout,
      );
      const got = (launched!.args[0] as { bytes: Uint8Array }).bytes;
      const hex = (b: Uint8Array) =>
        Buffer.from(b)
          .toString("hex")
          .replace(/(.{16})/g, "$1 ");
      expect(hex(got)).toBe(hex(want));
      expect(launched!.config.grid).toEqual(ir.grid);
      expect(launched!.config.block).toEqual([ir.threads, 1, 1]);
      // a new package object so the plan pointers repeat
      (pkg as unknown as { loaded: Map<string, unknown> }).loaded.clear();
    }
    // batch and heads may differ per call: the grid follows
    pkg.kernel("a").run(q, k, v, o, { batch: 1, heads: 2 });
    expect((launched!.config.grid as number[]).slice(1)).toEqual([2, 1]);
    expect(() => pkg.kernel("a").run(k, k, v, o)).toThrow(/q holds \d+ elements/);
  });

  it("sm_90a kernels: the CUDA loader encodes the runtime's tensor maps (q, k, v) as the second argument", async () => {
    const dir = mkdtempSync(join(tmpdir(), "tilec-pkg-tma-"));
    const s = spec(SPEC_HOPPER);
    await build(s, dir);
    type Encoded = { address: bigint; args: unknown };
    const encode = (log: Encoded[]) => (address: bigint, args: unknown) => {
      log.push({ address, args: JSON.parse(JSON.stringify(args)) });
      return new Uint8Array(128).fill(log.length);
    };
    const got: Encoded[] = [];
    let launched: { config: { grid: unknown }; args: readonly unknown[] } | undefined;
    const fake: CudaRuntime = {
      CudaDevice: {
        open: () => ({
          arch: "sm_90",
          encodeTensorMap: encode(got),
          fromHost: (data: Int32Array) => ({ ptr: 0x10000n, dtype: "i32", length: data.length, free() {} }),
          loadModule: () => ({
            getKernel: () => ({ launch: (config, args) => void (launched = { config, args }) }),
            unload() {},
          }),
        }),
      },
      compileNvrtc: () => ({ cubin: new Uint8Array([1]) }),
    };
    const pkg = new CudaPackage<"a">(fake, new URL(`file://${dir}/`));
    const shape = pkg.manifest.kernels.a!.shape;
    const { batch, heads, kvHeads, headDim, seqLen: n } = shape;
    const buf = (ptr: bigint, h: number) => ({
      ptr,
      length: batch * n * h * headDim,
      dtype: "bf16",
      free() {},
    });
    const [q, k, v, o] = [
      buf(0xa000n, heads),
      buf(0xb000n, kvHeads),
      buf(0xc000n, kvHeads),
      buf(0xd000n, heads),
    ];
    const ir = lowerKernel(planKernel(s.kernels.get("a")!), "pkg.tile", undefined, "sm_90");
    const compiled = emitCuda(ir, "sm_90");
    expect(compiled.template).toBe("sm90");
    expect(compiled.tensorMaps.map((m) => m.tensor)).toEqual(["q", "k", "v"]);
    for (const layout of ["bshd", "bhsd"] as const) {
      got.length = 0;
      pkg.kernel("a").run(q, k, v, o, { layout });
      const want: Encoded[] = [];
      const attn = Object.create(CudaAttention.prototype) as CudaAttention;
      Object.assign(attn, { ir, compiled, device: { encodeTensorMap: encode(want) } });
      const bytes = attn.tensorMaps(
        q as unknown as DeviceBuffer,
        k as unknown as DeviceBuffer,
        v as unknown as DeviceBuffer,
        layout,
      );
      expect(got).toEqual(want);
      expect(launched!.args[1]).toEqual({ bytes, align: 64 });
      expect(launched!.config.grid).toEqual(ir.grid);
    }
    // What TMA is asked for, spelled out once: K in [b, h, s, d] order, 64-dim rows of 128 bytes.
    const kv = compiled.tensorMaps[1]!;
    expect(got[1]).toEqual({
      address: 0xb000n,
      args: {
        dims: [headDim, n, kvHeads, batch],
        stridesBytes: [headDim * 2, n * headDim * 2, kvHeads * n * headDim * 2],
        box: [64, ir.blockKv, 1, 1],
        swizzleBytes: 128,
        elementBytes: 2,
      },
    });
    expect(() =>
      tensorMapArgs(kv, { batch, seqLen: n, heads: kvHeads, headDim, strides: [1, 3, 5], elementBytes: 2 }),
    ).toThrow(/stride 6 bytes is not a positive multiple of 16/);
    // The Python loader computes the same arguments from the manifest.
    if (spawnSync("python3", ["--version"]).status === 0) {
      const maps = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8")).kernels.a.cuda.tensorMaps
        .maps as TensorMapSpec[];
      const strides: [number, number, number] = [n * heads * headDim, heads * headDim, headDim];
      const py = spawnSync(
        "python3",
        [
          "-c",
          `import sys, json; sys.path.insert(0, ${JSON.stringify(dir)}); from tilec_kernels import tensor_map_args
ms = json.loads(sys.argv[1])
print(json.dumps([tensor_map_args(m, ${headDim}, ${n}, ${heads}, ${batch}, ${JSON.stringify(strides)}) for m in ms]))`,
          JSON.stringify(maps),
        ],
        { encoding: "utf8" },
      );
      expect(py.stderr).toBe("");
      const ts = maps.map((m) => {
        const a = tensorMapArgs(m, { batch, seqLen: n, heads, headDim, strides, elementBytes: 2 });
        return [a.dims, a.stridesBytes, a.box];
      });
      expect(JSON.parse(py.stdout)).toEqual(ts);
    }
  });

  it.skipIf(spawnSync("python3", ["--version"]).status !== 0)(
    "the Python loader packs the struct like the TypeScript one",
    async () => {
      const dir = mkdtempSync(join(tmpdir(), "tilec-pkg-py-"));
      await build(spec(SPEC("temporal_band(1)")), dir);
      const values: Record<string, number> = {};
      TILEC_PARAMS.forEach(
        (f, i) => (values[f.name] = f.type === "f32" ? 0.125 * (i + 1) : 1000003 * (i + 1)),
      );
      values.q_seq_stride = -7; // signed 64-bit
      const ts = Buffer.from(packParams(TILEC_PARAMS, PARAMS_BYTES, values)).toString("hex");
      const py = spawnSync(
        "python3",
        [
          "-c",
          `import sys, json; sys.path.insert(0, ${JSON.stringify(dir)}); from tilec_kernels import pack_params
m = json.load(open(${JSON.stringify(join(dir, "manifest.json"))}))["kernels"]["a"]["cuda"]["params"]
print(pack_params(m["fields"], m["bytes"], json.loads(sys.argv[1])).hex())`,
          JSON.stringify(values),
        ],
        { encoding: "utf8" },
      );
      expect(py.stderr).toBe("");
      expect(py.stdout.trim()).toBe(ts);
      // the package imports without torch (torch is only needed to launch)
      const imp = spawnSync(
        "python3",
        [
          "-c",
          `import importlib.util as u, sys
s = u.spec_from_file_location("pkg", ${JSON.stringify(join(dir, "__init__.py"))}, submodule_search_locations=[${JSON.stringify(dir)}])
m = u.module_from_spec(s); sys.modules["pkg"] = m; s.loader.exec_module(m); print(",".join(m.KERNELS))`,
        ],
        { encoding: "utf8" },
      );
      expect(imp.stderr).toBe("");
      expect(imp.stdout.trim()).toBe("a,b");
    },
  );

  it("generates typed entry points that load without tilec's compiler", async () => {
    const dir = mkdtempSync(join(tmpdir(), "tilec-pkg-ts-"));
    await build(spec(SPEC("temporal_band(1)")), dir);
    const index = readFileSync(join(dir, "index.ts"), "utf8");
    expect(index).toContain('export type KernelName = "a" | "b";');
    expect(index).not.toMatch(/compiler\//);
    expect(readFileSync(join(dir, "webgpu.ts"), "utf8")).toContain(
      'export type KernelName = "a" | "b" | "c";',
    );
    expect(readFileSync(join(dir, "tilec-webgpu.ts"), "utf8")).not.toMatch(/^import .*tilec|\.\.\//m);
    const mod = (await import(join(dir, "index.ts"))) as {
      kernels: Record<string, { seqLen: number }>;
      attention: (n: string) => unknown;
    };
    expect(Object.keys(mod.kernels)).toEqual(["a", "b"]);
    expect(mod.kernels.a!.seqLen).toBe(3 * 4 * 8 + 5);
    if (!available().ok) expect(() => mod.attention("a")).toThrow();
  });
});
