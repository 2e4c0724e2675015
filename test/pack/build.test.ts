// `tilec build` packages: stable output (nothing rewritten when nothing changed), incremental
// rebuilds (a changed kernel rewrites only its files — forward and backward; a removed kernel's files
// go), the CUDA loader's launches — forward and backward, both layouts, per-call batch and heads —
// byte for byte against the runtime's packLaunch on the IR's own launch descriptions, the Python
// loader's generic packer against packLaunch, its mask evaluator against the compiler's element mask,
// the model section, and the generated entry points and README.
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { emitCuda, planSections } from "../../backends/cuda/emit.ts";
import { backwardPlanSections, emitCudaBackward } from "../../backends/cuda/emitBackward.ts";
import type { LaunchDescription, Operation } from "../../backends/cuda/launch.ts";
import type { TensorRole } from "../../backends/cuda/params.ts";
import { findNvcc } from "../../backends/cuda/nvcc.ts";
import { kernelFor, type CheckedSpec } from "../../compiler/check.ts";
import { elementMask } from "../../compiler/elementMask.ts";
import { seqLen } from "../../compiler/layout.ts";
import { lowerKernel, type KernelIR } from "../../compiler/lower.ts";
import { lowerBackward } from "../../compiler/lowerBackward.ts";
import { compileSpec, planKernel } from "../../compiler/pipeline.ts";
import { buildPackage } from "../../pack/build.ts";
import {
  CudaPackage,
  type CudaRuntime,
  type RuntimeBuffer,
  type TensorMapArgs,
} from "../../pack/runtime/cuda.ts";
import { available } from "../../runtime/cuda/index.ts";
import * as runtimeModule from "../../runtime/cuda/index.ts";
import { contiguousStrides, packLaunch, type BoundTensor } from "../../runtime/cuda/launch.ts";
import { KernelOperations } from "../../runtime/cuda/operations.ts";

// tilec's runtime module is what a package's index.ts hands its loader.
const realRuntime: CudaRuntime = runtimeModule;
void realRuntime;

const SPEC = (
  mask: string,
) => `layout L { video 3 x 4 x 8 text 5 after batch 2 heads 4 kv_heads 2 head_dim 32 dtype bf16 }
kernel a { layout L mask attention_tile(3) block 64 x 64 targets cuda, wgsl }
kernel b { layout L mask ${mask} block 64 x 64 targets cuda, wgsl }
kernel c { layout L mask full block 64 x 64 targets wgsl }
`;

// Head dim 64 and 128-row blocks: on sm_90 the default configuration is the wgmma template (forward
// and backward take TMA descriptors).
const SPEC_HOPPER = `layout L { video 3 x 4 x 8 text 5 after batch 2 heads 4 kv_heads 2 head_dim 64 dtype bf16 }
kernel a { layout L mask attention_tile(3) block 128 x 128 targets cuda }
`;

// An fp32 kernel (no backward), and a model section with step rules.
const SPEC_MODEL = `layout L { video 4 x 4 x 8 batch 1 heads 2 head_dim 32 dtype bf16 }
layout F { video 4 x 4 x 8 batch 1 heads 2 head_dim 32 dtype fp32 }
kernel dense { layout L mask full block 64 x 64 targets cuda }
kernel tile1 { layout L mask attention_tile(1) block 64 x 64 targets cuda }
kernel band { layout L mask temporal_band(1) block 64 x 64 targets cuda }
kernel f32 { layout F mask attention_tile(2) block 64 x 64 targets cuda }
model m {
  layers 6
  steps 10
  layer 0 .. 1 use dense
  layer 2 .. 5 use tile1
  step 0 .. 2 layer all use dense
  step 7 .. 9 layer 4 .. 5 use band
}
`;

const hasPython = spawnSync("python3", ["--version"]).status === 0;

function spec(text: string): CheckedSpec {
  const r = compileSpec(text, "pkg.tile");
  if (!r.spec) throw new Error(r.diagnostics.map((d) => d.message).join("\n"));
  return r.spec;
}

const build = (s: CheckedSpec, dir: string, nvcc = false) =>
  buildPackage(s, "pkg.tile", dir, { arch: "sm_90", nvcc, useTuned: false });

/** The package's default IR for sm_90 (what buildIR lowers without a tuned winner). */
const irOf = (s: CheckedSpec, name: string) =>
  lowerKernel(planKernel(s.kernels.get(name)!), "pkg.tile", undefined, "sm_90");

/** A deterministic stand-in for cuTensorMapEncodeTiled: the address and arguments as 64-bit words. */
function fakeMap(address: bigint, a: TensorMapArgs): Uint8Array {
  const words = [address, ...a.dims, ...a.stridesBytes, ...a.box, a.swizzleBytes, a.elementBytes].map(BigInt);
  const out = new Uint8Array(128);
  const view = new DataView(out.buffer);
  words.forEach((w, i) => view.setBigUint64(i * 8, w, true));
  return out;
}
const FAKE_MAP_PY = `def fake_map(address, a):
    words = [address, *a["dims"], *a["stridesBytes"], *a["box"], a["swizzleBytes"], a["elementBytes"]]
    return struct.pack(f"<{len(words)}Q", *words).ljust(128, b"\\0")`;

const hex = (b: Uint8Array) =>
  Buffer.from(b)
    .toString("hex")
    .replace(/(.{16})/g, "$1 ");

interface Launched {
  entry: string;
  config: { grid: unknown; block: unknown; sharedBytes?: number };
  args: readonly { bytes: Uint8Array; align: number }[];
}

/** A runtime that records uploads, allocations and launches; packLaunch and KernelOperations are the real ones. */
function fakeRuntime() {
  const log = {
    uploads: [] as { ptr: bigint; data: Int32Array }[],
    allocs: [] as { ptr: bigint; length: number }[],
    launches: [] as Launched[],
  };
  let next = 0x100000n;
  const runtime: CudaRuntime = {
    packLaunch,
    KernelOperations,
    CudaDevice: {
      open: () => ({
        arch: "sm_90",
        encodeTensorMap: fakeMap,
        fromHost: (data: Int32Array) => {
          const ptr = (next += 0x10000n);
          log.uploads.push({ ptr, data: data.slice() });
          return { ptr, dtype: "i32", length: data.length, free() {} };
        },
        allocElements: (_dtype: "fp32", length: number) => {
          const ptr = (next += 0x1000000n);
          log.allocs.push({ ptr, length });
          return { ptr, dtype: "fp32", length, free() {} };
        },
        loadModule: () => ({
          getKernel: (entry: string) => ({
            launch: (config, args) =>
              void log.launches.push({ entry, config, args: args as Launched["args"] } as Launched),
          }),
          unload() {},
        }),
      }),
    },
    compileNvrtc: () => ({ cubin: new Uint8Array([1]) }),
  };
  return { runtime, log };
}

const buf = (ptr: bigint, length: number, dtype = "bf16"): RuntimeBuffer => ({
  ptr,
  length,
  dtype,
  free() {},
});

/**
 * Runs the package loader's forward and backward on kernel `name` and checks every launch against
 * packLaunch on the IR's own descriptions (emitCuda / emitCudaBackward), with bindings built here.
 */
function checkLoaderLaunches(s: CheckedSpec, dir: string, name: string) {
  const ir: KernelIR = irOf(s, name);
  const fwd = emitCuda(ir, "sm_90").launchDescription;
  const bir = lowerBackward(ir, "sm_90");
  const bwd = emitCudaBackward(bir, "sm_90").operations;
  const { batch, heads, kvHeads, headDim, seqLen: n } = ir;
  const tensors: Record<string, [bigint, number]> = {
    q: [0xa0000000n, heads],
    k: [0xb0000000n, kvHeads],
    v: [0xc0000000n, kvHeads],
    o: [0xd0000000n, heads],
    do: [0xe0000000n, heads],
    dq: [0xf0000000n, heads],
    dk: [0xf8000000n, kvHeads],
    dv: [0xfc000000n, kvHeads],
  };
  const size = (h: number) => batch * n * h * headDim;
  const b = (role: string) => buf(tensors[role]![0], size(tensors[role]![1]));
  const lse = buf(0x90000000n, batch * heads * n, "fp32");
  const grids: unknown[] = [];
  for (const layout of ["bshd", "bhsd"] as const) {
    const { runtime, log } = fakeRuntime();
    const pkg = new CudaPackage<string>(runtime, new URL(`file://${dir}/`));
    const kernel = pkg.kernel(name);
    kernel.run(b("q"), b("k"), b("v"), b("o"), { lse, layout });
    kernel.backward(b("q"), b("k"), b("v"), b("o"), lse, b("do"), b("dq"), b("dk"), b("dv"), { layout });
    kernel.backward(b("q"), b("k"), b("v"), b("o"), lse, b("do"), b("dq"), b("dk"), b("dv"), {
      layout,
      deterministic: true,
    });
    // Plans: the forward's sections when the kernel loads, the backward's on its first call, in order.
    const fSec = planSections(ir);
    const bSec = backwardPlanSections(bir);
    expect(log.uploads.map((u) => Array.from(u.data))).toEqual(
      [...fSec, ...bSec].map((x) => Array.from(x.data)),
    );
    const ptrs = (secs: typeof fSec, at: number) =>
      Object.fromEntries(secs.map((x, i) => [x.name, x.data.length ? log.uploads[at + i]!.ptr : 0n]));
    const plan: Record<string, Record<string, bigint>> = {
      forward: ptrs(fSec, 0),
      backward: ptrs(bSec, fSec.length),
    };
    const bound = (role: string): BoundTensor => ({
      ptr: tensors[role]![0],
      heads: tensors[role]![1],
      strides: contiguousStrides(n, tensors[role]![1], headDim, layout),
    });
    const base: Partial<Record<TensorRole, BoundTensor>> = Object.fromEntries(
      Object.keys(tensors).map((r) => [r, bound(r)]),
    );
    // Workspace: allocated once (first backward), reused by the deterministic one.
    expect(log.allocs.map((a) => a.length)).toEqual(
      bwd.backward.workspace.map((w) => batch * heads * w.elementsPerHead),
    );
    const work = Object.fromEntries(
      bwd.backward.workspace.map((w, i) => [w.tensor, { ptr: log.allocs[i]!.ptr }]),
    );
    const want = (op: Operation, t: Partial<Record<TensorRole, BoundTensor>>) =>
      op.launches.map((d: LaunchDescription) => {
        const p = packLaunch(
          d,
          { tensors: t, plan: plan[d.module]!, batch, heads, kvHeads, seqLen: n, headDim },
          fakeMap,
        );
        return {
          entry: d.entry,
          grid: p.grid,
          block: p.block,
          shared: p.sharedBytes,
          args: p.args.map((a) => [hex(a.bytes), a.align]),
        };
      });
    const fwdTensors = { q: base.q, k: base.k, v: base.v, o: base.o, lse: { ptr: lse.ptr } };
    const bwdTensors = { ...base, lse: { ptr: lse.ptr }, ...work };
    const expected = [
      ...want({ launches: [fwd], workspace: [] }, fwdTensors),
      ...want(bwd.backward, bwdTensors),
      // the deterministic operation has no dq_accum: its field packs as a null pointer
      ...want(bwd.backwardDeterministic, { ...bwdTensors, dq_accum: undefined }),
    ];
    const got = log.launches.map((l) => ({
      entry: l.entry,
      grid: l.config.grid,
      block: l.config.block,
      shared: l.config.sharedBytes,
      args: l.args.map((a) => [hex(a.bytes), a.align]),
    }));
    expect(got).toEqual(expected);
    grids.push(got.map((g) => g.grid));

    // Batch and heads may differ per call: every grid follows (kv heads keep the spec's ratio).
    log.launches.length = 0;
    kernel.run(b("q"), b("k"), b("v"), b("o"), { layout, batch: 1, heads: 2 });
    kernel.backward(b("q"), b("k"), b("v"), b("o"), lse, b("do"), b("dq"), b("dk"), b("dv"), {
      layout,
      batch: 1,
      heads: 2,
    });
    const dims = { heads: 2, kvHeads: 2 / (heads / kvHeads), batch: 1 };
    const gridOf = (d: LaunchDescription) => d.grid.map((g) => (typeof g === "number" ? g : dims[g]));
    expect(log.launches.map((l) => l.config.grid)).toEqual([fwd, ...bwd.backward.launches].map(gridOf));
  }
  return { ir, fwd, bwd, grids };
}

describe("tilec build", () => {
  it("writes nothing on an unchanged rebuild, only the changed kernel's files after an edit, and removes what left", async () => {
    const dir = mkdtempSync(join(tmpdir(), "tilec-pkg-"));
    const first = await build(spec(SPEC("temporal_band(1)")), dir);
    expect(first.unchanged).toEqual([]);
    expect(first.written).toEqual(
      expect.arrayContaining([
        "a.cu",
        "a.bwd.cu",
        "a.cuda.plan.bin",
        "a.cuda.bwd.plan.bin",
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
    expect(first.written).not.toContain("c.bwd.cu");
    const mtime = statSync(join(dir, "a.bwd.cu")).mtimeMs;
    const again = await build(spec(SPEC("temporal_band(1)")), dir);
    expect(again.written).toEqual([]);
    expect(again.removed).toEqual([]);
    expect(statSync(join(dir, "a.bwd.cu")).mtimeMs).toBe(mtime);

    const edited = await build(spec(SPEC("temporal_band(2)")), dir);
    // b's sources (forward and backward) and the files that list masks; nothing of a or c
    expect(edited.written).toEqual(
      expect.arrayContaining(["b.cu", "b.bwd.cu", "b.cuda.bwd.plan.bin", "b.wgsl", "manifest.json"]),
    );
    const mayChange = /^(b\.|manifest\.json|README\.md|index\.ts|webgpu\.ts)/;
    expect(edited.written.filter((f) => !mayChange.test(f))).toEqual([]);

    const fewer = await build(spec(SPEC("temporal_band(2)").replace(/kernel c .*\n/, "")), dir);
    expect(fewer.removed.sort()).toEqual(["c.wgsl", "c.wgsl.plan.bin"]);
    const manifest = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8"));
    expect(manifest.format).toBe(2);
    expect(Object.keys(manifest.kernels)).toEqual(["a", "b"]);
    expect(manifest.files).not.toContain("c.wgsl");
    // Format 2: modules, operations and plans per CUDA kernel.
    const a = manifest.kernels.a.cuda;
    expect(Object.keys(a.modules)).toEqual(["forward", "backward"]);
    expect(a.modules.backward.files).toEqual({ source: "a.bwd.cu" });
    expect(Object.keys(a.operations)).toEqual(["forward", "backward", "backwardDeterministic"]);
    expect(a.operations.forward.launches[0].module).toBe("forward");
    expect(a.operations.backward.launches.map((l: { module: string }) => l.module)).toEqual([
      "backward",
      "backward",
      "backward",
    ]);
    expect(a.plans.backward.file).toBe("a.cuda.bwd.plan.bin");
    expect(a.backward).toMatchObject({ template: "sm80" });
    expect(a.backwardWhy).toBeUndefined();
    // The plan file is the sections' int32 concatenation.
    const bytes = readFileSync(join(dir, a.plans.backward.file));
    const total = a.plans.backward.sections.reduce((n: number, x: { length: number }) => n + x.length, 0);
    expect(bytes.length).toBe(4 * total);
  });

  it.skipIf(!findNvcc())(
    "runs nvcc only for modules whose source changed (forward and backward)",
    async () => {
      const dir = mkdtempSync(join(tmpdir(), "tilec-pkg-nvcc-"));
      const text = SPEC("temporal_band(1)").replace(/kernel c .*\n/, "");
      const first = await build(spec(text), dir, true);
      expect(first.compiled.sort()).toEqual(["a", "b"]);
      expect(first.written).toEqual(expect.arrayContaining(["a.ptx", "a.cubin", "a.bwd.ptx", "a.bwd.cubin"]));
      const cubins = ["a.cubin", "a.bwd.cubin"].map((f) => readFileSync(join(dir, f)));
      const manifest = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8"));
      expect(manifest.kernels.a.cuda.modules.backward.files).toEqual({
        source: "a.bwd.cu",
        ptx: "a.bwd.ptx",
        cubin: "a.bwd.cubin",
      });
      expect(manifest.files).toEqual(expect.arrayContaining(["a.bwd.ptx", "a.bwd.cubin"]));
      const again = await build(spec(text), dir, true);
      expect(again.compiled).toEqual([]);
      expect(again.written).toEqual([]);
      const edited = await build(spec(text.replace("temporal_band(1)", "temporal_band(2)")), dir, true);
      expect(edited.compiled).toEqual(["b"]);
      expect(edited.written).toEqual(expect.arrayContaining(["b.cubin", "b.bwd.cubin"]));
      expect(["a.cubin", "a.bwd.cubin"].map((f) => readFileSync(join(dir, f)))).toEqual(cubins);
    },
    300_000,
  );

  it("the CUDA loader launches the forward and backward exactly as packLaunch does on the IR's descriptions", async () => {
    const dir = mkdtempSync(join(tmpdir(), "tilec-pkg-params-"));
    const s = spec(SPEC("temporal_band(1)"));
    await build(s, dir);
    const { ir, bwd } = checkLoaderLaunches(s, dir, "a");
    expect(bwd.backward.launches.length).toBe(3);
    expect(bwd.backward.workspace.map((w) => w.tensor)).toEqual(["dq_accum", "lse_log2", "delta"]);
    // The manifest ships the IR's descriptions as they are.
    const m = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8")).kernels.a.cuda;
    expect(m.operations.forward.launches[0]).toEqual(
      JSON.parse(JSON.stringify(emitCuda(ir, "sm_90").launchDescription)),
    );
    expect(m.operations.backwardDeterministic).toEqual(JSON.parse(JSON.stringify(bwd.backwardDeterministic)));

    // What the loader refuses, naming the tensor and the shape it needs.
    const { runtime } = fakeRuntime();
    const kernel = new CudaPackage<"a">(runtime, new URL(`file://${dir}/`)).kernel("a");
    const { batch, heads, kvHeads, headDim, seqLen: n } = ir;
    const q = buf(0x1000000n, batch * n * heads * headDim);
    const kv = buf(0x2000000n, batch * n * kvHeads * headDim);
    const o = buf(0x3000000n, batch * n * heads * headDim);
    const g = (p: bigint, h = heads) => buf(p, batch * n * h * headDim);
    const lse = buf(0x4000000n, batch * heads * n, "fp32");
    expect(() => kernel.run(kv, kv, kv, o)).toThrow(
      /q holds \d+ elements, needs \d+ \(\[2, 101, 4, 32\], bshd\)/,
    );
    expect(() => kernel.run(q, kv, kv, o, { layout: "bhsd", heads: 8 })).toThrow(/\[2, 8, 101, 32\], bhsd/);
    expect(() => kernel.run(q, kv, kv, buf(0x3000000n, o.length, "fp16"))).toThrow(/out is fp16.*takes bf16/);
    expect(() => kernel.run(q, kv, kv, q)).toThrow(/out overlaps q/);
    expect(() =>
      kernel.backward(
        q,
        kv,
        kv,
        o,
        buf(0x4000000n, 10, "fp32"),
        g(0x5000000n),
        g(0x6000000n),
        g(0x7000000n, kvHeads),
        g(0x8000000n, kvHeads),
      ),
    ).toThrow(/lse must be the forward's fp32 \[2, 4, 101\]/);
    expect(() =>
      kernel.backward(q, kv, kv, o, lse, g(0x5000000n), q, g(0x7000000n, kvHeads), g(0x8000000n, kvHeads)),
    ).toThrow(/dq overlaps q/);
    expect(() =>
      kernel.backward(q, kv, kv, o, lse, g(0x5000000n), g(0x6000000n), kv, g(0x8000000n, kvHeads)),
    ).toThrow(/dk overlaps k/);
  });

  it("sm_90a kernels: the CUDA loader encodes the forward's and the backward's tensor maps as packLaunch does", async () => {
    const dir = mkdtempSync(join(tmpdir(), "tilec-pkg-tma-"));
    const s = spec(SPEC_HOPPER);
    await build(s, dir);
    const { ir, fwd, bwd } = checkLoaderLaunches(s, dir, "a");
    expect(emitCuda(ir, "sm_90").template).toBe("sm90");
    expect(fwd.tensorMaps!.maps.map((m) => m.tensor)).toEqual(["q", "k", "v"]);
    const dkdv = bwd.backward.launches[1]!;
    expect(dkdv.tensorMaps!.maps.map((m) => m.tensor)).toEqual(["q", "do", "k", "v", "k"]);
    // What TMA is asked for, spelled out once: K in [b, h, s, d] order, 64-dim rows of 128 bytes.
    const { batch, kvHeads, headDim, seqLen: n } = ir;
    const encoded: { address: bigint; args: TensorMapArgs }[] = [];
    const { runtime } = fakeRuntime();
    const open = runtime.CudaDevice.open;
    runtime.CudaDevice.open = () => ({
      ...open(),
      encodeTensorMap: (address, args) => (encoded.push({ address, args }), fakeMap(address, args)),
    });
    const kernel = new CudaPackage<"a">(runtime, new URL(`file://${dir}/`)).kernel("a");
    const b = (p: bigint, h: number) => buf(p, batch * n * h * headDim);
    kernel.run(b(0xa000000n, 4), b(0xb000000n, 2), b(0xc000000n, 2), b(0xd000000n, 4), { layout: "bhsd" });
    expect(encoded[1]).toEqual({
      address: 0xb000000n,
      args: {
        dims: [headDim, n, kvHeads, batch],
        stridesBytes: [headDim * 2, n * headDim * 2, kvHeads * n * headDim * 2],
        box: [64, ir.blockKv, 1, 1],
        swizzleBytes: 128,
        elementBytes: 2,
      },
    });
  });

  it("fp32 kernels: no backward, and the manifest, notes, README and loaders say why", async () => {
    const dir = mkdtempSync(join(tmpdir(), "tilec-pkg-fp32-"));
    const r = await build(spec(SPEC_MODEL), dir);
    expect(r.notes.join("\n")).toMatch(/f32: no backward \(the backward runs in bf16 or fp16, not fp32\)/);
    const manifest = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8"));
    const f = manifest.kernels.f32.cuda;
    expect(f.backward).toBeNull();
    expect(f.backwardWhy).toMatch(/fp32/);
    expect(Object.keys(f.modules)).toEqual(["forward"]);
    expect(Object.keys(f.operations)).toEqual(["forward"]);
    expect(existsSync(join(dir, "f32.bwd.cu"))).toBe(false);
    const readme = readFileSync(join(dir, "README.md"), "utf8");
    expect(readme).toMatch(/\| f32 \|.*\| no \(the backward runs in bf16/);
    // The examples run a sparse kernel, not the dense one; the model section's example names its kernel.
    expect(readme).toContain('kernel="tile1"');
    expect(readme).not.toContain('kernel="dense"');
    expect(readme).toContain('tilec.kernel_for(5, 3)  # -> "tile1"');
    expect(readme).toMatch(
      /Kernels without a backward here \(f32: the backward runs in bf16 or fp16, not fp32\) raise/,
    );
    expect(readme).not.toContain("TypeScript, WebGPU"); // no WGSL kernels in this package
    expect(readFileSync(join(dir, "index.ts"), "utf8")).toContain(
      'export const trainable: readonly KernelName[] = ["dense","tile1","band"];',
    );
    const { runtime } = fakeRuntime();
    const kernel = new CudaPackage<"f32">(runtime, new URL(`file://${dir}/`)).kernel("f32");
    expect(kernel.hasBackward).toBe(false);
    const x = buf(0x1000000n, 4096, "fp32");
    expect(() => kernel.backward(x, x, x, x, x, x, x, x, x)).toThrow(
      /'f32' has no backward in this package: .*fp32/,
    );
    if (hasPython) {
      const py = runPy(
        dir,
        `import json
from tilec_kernels import Package
p = Package(${JSON.stringify(dir)})
print(json.dumps({n: [k.has_backward, k.backward_why] for n, k in p.kernels.items()}))`,
      );
      const got = JSON.parse(py) as Record<string, [boolean, string | null]>;
      expect(got.tile1).toEqual([true, null]);
      expect(got.f32![0]).toBe(false);
      expect(got.f32![1]).toMatch(/fp32/);
    }
  });

  it("ships the spec's model section; the TypeScript and Python loaders pick each layer's and step's kernel as the compiler does", async () => {
    const dir = mkdtempSync(join(tmpdir(), "tilec-pkg-model-"));
    const s = spec(SPEC_MODEL);
    await build(s, dir);
    const manifest = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8"));
    const m = s.models.get("m")!;
    expect(manifest.models.m).toEqual({
      layers: 6,
      steps: 10,
      layerKernels: ["dense", "dense", "tile1", "tile1", "tile1", "tile1"],
      stepOverrides: [
        { steps: [0, 2], layers: [0, 5], kernel: "dense" },
        { steps: [7, 9], layers: [4, 5], kernel: "band" },
      ],
    });
    const cases: [number, number | null][] = [];
    for (let layer = 0; layer < 6; layer++)
      for (const step of [null, 0, 2, 3, 6, 7, 9]) cases.push([layer, step]);
    const want = cases.map(([l, st]) => kernelFor(m, l, st ?? undefined));
    const { runtime } = fakeRuntime();
    const pkg = new CudaPackage<string>(runtime, new URL(`file://${dir}/`));
    expect(cases.map(([l, st]) => pkg.kernelFor(l, st ?? undefined))).toEqual(want);
    if (hasPython) {
      const py = runPy(
        dir,
        `import json, sys
from tilec_kernels import Package
p = Package(${JSON.stringify(dir)})
cases = json.loads(sys.argv[1])
print(json.dumps({
  "own": [p.kernel_for(l, st) for l, st in cases],
  # step 30 of a 100-step sampler is the section's step 3; 75 of 100 is step 7
  "sampler": [p.kernel_for(5, 30, 100), p.kernel_for(5, 75, 100), p.kernel_for(5, 10, 100)],
  "model": repr(p.model),
  "ns": p.namespace,
}))`,
        JSON.stringify(cases),
      );
      const got = JSON.parse(py) as { own: string[]; sampler: string[]; model: string; ns: string };
      expect(got.own).toEqual(want);
      expect(got.sampler).toEqual([kernelFor(m, 5, 3), kernelFor(m, 5, 7), kernelFor(m, 5, 1)]);
      expect(got.model).toMatch(/Model\('m', layers=6, steps=10/);
      expect(got.ns).toMatch(/^tilec_tilec_pkg_model_[0-9a-z]+_[0-9a-f]{8}$/);
    }
  });

  it.skipIf(!hasPython)(
    "the Python loader's pack_launch packs every forward and backward launch like packLaunch",
    async () => {
      for (const text of [SPEC("temporal_band(1)"), SPEC_HOPPER]) {
        const dir = mkdtempSync(join(tmpdir(), "tilec-pkg-py-"));
        const s = spec(text);
        await build(s, dir);
        const ops = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8")).kernels.a.cuda
          .operations as Record<string, Operation>;
        const launches = Object.values(ops).flatMap((o) => o.launches);
        expect(launches.length).toBe(7);
        const ir = irOf(s, "a");
        const { headDim, seqLen: n } = ir;
        // Odd strides (a strided view of a larger tensor), per-call batch and heads, signed strides.
        const cases = [
          { batch: 2, heads: 4, kvHeads: 2, layout: "bshd" as const, pad: 0 },
          { batch: 1, heads: 6, kvHeads: 3, layout: "bhsd" as const, pad: 8 },
        ];
        const roles = ["q", "k", "v", "o", "do", "dq", "dk", "dv"] as const;
        const inputs = cases.map((c, ci) => {
          const tensors: Record<string, BoundTensor> = {};
          roles.forEach((r, i) => {
            const h = ["k", "v", "dk", "dv"].includes(r) ? c.kvHeads : c.heads;
            const st = contiguousStrides(n, h, headDim + c.pad, c.layout);
            tensors[r] = {
              ptr: 0x7f0000000000n + BigInt(ci * 0x100000 + i * 0x10000),
              heads: h,
              strides: st,
            };
          });
          for (const [i, r] of ["lse", "dq_accum", "lse_log2", "delta"].entries())
            tensors[r] = { ptr: 0x7e0000000000n + BigInt(i * 0x1000) };
          const plan: Record<string, bigint> = {};
          for (const [i, sec] of [
            ...planSections(ir),
            ...backwardPlanSections(lowerBackward(ir, "sm_90")),
          ].entries())
            plan[sec.name] = i % 5 === 4 ? 0n : 0x7d0000000000n + BigInt(i * 0x100);
          return { tensors, plan, batch: c.batch, heads: c.heads, kvHeads: c.kvHeads, seqLen: n, headDim };
        });
        const want = launches.flatMap((d) =>
          inputs.map((b) => {
            const p = packLaunch(d, b, fakeMap);
            return {
              grid: p.grid,
              block: p.block,
              sharedBytes: p.sharedBytes,
              args: p.args.map((a) => [Buffer.from(a.bytes).toString("hex"), a.align]),
            };
          }),
        );
        const json = (x: unknown) =>
          JSON.stringify(x, (_k, v) => (typeof v === "bigint" ? `0x${v.toString(16)}` : v));
        const py = runPy(
          dir,
          `import json, struct, sys
from tilec_kernels import pack_launch
${FAKE_MAP_PY}
def ints(x):
    if isinstance(x, str) and x.startswith("0x"): return int(x, 16)
    if isinstance(x, dict): return {k: ints(v) for k, v in x.items()}
    if isinstance(x, list): return [ints(v) for v in x]
    return x
launches, inputs = json.loads(sys.argv[1]), ints(json.loads(sys.argv[2]))
out = []
for d in launches:
    for b in inputs:
        p = pack_launch(d, b["tensors"], b["plan"], b["batch"], b["heads"], b["kvHeads"], b["seqLen"], b["headDim"], fake_map)
        out.append({"grid": p["grid"], "block": p["block"], "sharedBytes": p["sharedBytes"], "args": [[a.hex(), al] for a, al in p["args"]]})
print(json.dumps(out))`,
          JSON.stringify(launches),
          json(inputs),
        );
        expect(JSON.parse(py)).toEqual(want);
      }
      // Both refuse a launch whose plan section was not uploaded, and a map over a tensor TMA cannot read.
      const dir = mkdtempSync(join(tmpdir(), "tilec-pkg-py-err-"));
      await build(spec(SPEC_HOPPER), dir);
      const d = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8")).kernels.a.cuda.operations.forward
        .launches[0] as LaunchDescription;
      const b = { tensors: {}, plan: {}, batch: 1, heads: 4, kvHeads: 2, seqLen: 101, headDim: 64 };
      expect(() => packLaunch(d, b, fakeMap)).toThrow(/plan section 'full_offsets' was not uploaded/);
      const q = { ptr: 0x1000n, heads: 4, strides: [1, 3, 5] as [number, number, number] };
      const plan = Object.fromEntries(planSections(irOf(spec(SPEC_HOPPER), "a")).map((s) => [s.name, 0n]));
      expect(() => packLaunch(d, { ...b, plan, tensors: { q, k: q, v: q } }, fakeMap)).toThrow(
        /stride 6 bytes is not a positive multiple of 16/,
      );
      const err = spawnSync(
        "python3",
        [
          "-c",
          `import sys, json; sys.path.insert(0, ${JSON.stringify(dir)}); from tilec_kernels import pack_launch
d = json.loads(sys.argv[1])
for plan, t in (({}, {}), (json.loads(sys.argv[2]), {r: {"ptr": 4096, "heads": 4, "strides": [1, 3, 5]} for r in "qkv"})):
    try: pack_launch(d, t, plan, 1, 4, 2, 101, 64, lambda a, x: bytes(128)); print("no error")
    except (KeyError, ValueError) as e: print(str(e).strip('"'))`,
          JSON.stringify(d),
          JSON.stringify(Object.fromEntries(Object.keys(plan).map((k) => [k, 0]))),
        ],
        { encoding: "utf8" },
      );
      expect(err.stderr).toBe("");
      expect(err.stdout).toMatch(
        /plan section 'full_offsets' was not uploaded\n.*stride 6 bytes is not a positive multiple of 16/,
      );
    },
    120_000,
  );

  it.skipIf(!hasPython)(
    "the Python loader's Kernel.forward/backward bind torch tensors (strided views, copies, per-call shapes) as packLaunch expects",
    async () => {
      for (const text of [SPEC("temporal_band(1)"), SPEC_HOPPER]) {
        const dir = mkdtempSync(join(tmpdir(), "tilec-pkg-fake-torch-"));
        const s = spec(text);
        await build(s, dir);
        const ir = irOf(s, "a");
        const ops = emitCudaBackward(lowerBackward(ir, "sm_90"), "sm_90").operations;
        const fwd = emitCuda(ir, "sm_90").launchDescription;
        const { seqLen: n, headDim: d } = ir;
        type Input = { shape: number[]; strides: number[]; ptr: number };
        // bshd: q padded rows (in place), do misaligned (copied); bhsd: transposed views of [b, s, h, d]
        // tensors, batch and heads of the call unlike the spec's (batch 1: its stride is free).
        const bshd = (b: number, h: number, ptr: number, pad = 0): Input => ({
          shape: [b, n, h, d],
          strides: [n * h * (d + pad), h * (d + pad), d + pad, 1],
          ptr,
        });
        const bhsd = (b: number, h: number, ptr: number): Input => ({
          shape: [b, h, n, d],
          strides: [n * h * d, d, h * d, 1],
          ptr,
        });
        const cases = [
          {
            layout: "bshd" as const,
            deterministic: false,
            batch: 2,
            heads: 4,
            kvHeads: 2,
            inputs: {
              q: bshd(2, 4, 0x10000000, 8),
              k: bshd(2, 2, 0x20000000),
              v: bshd(2, 2, 0x30000000),
              do: bshd(2, 4, 0x40000008),
            },
          },
          {
            layout: "bhsd" as const,
            deterministic: true,
            batch: 1,
            heads: 2,
            kvHeads: 1,
            inputs: {
              q: bhsd(1, 2, 0x10000000),
              k: bhsd(1, 1, 0x20000000),
              v: bhsd(1, 1, 0x30000000),
              do: bhsd(1, 2, 0x40000000),
            },
          },
        ];
        const py = spawnSync(
          "python3",
          [join(import.meta.dirname, "fake_torch.py"), dir, "a", JSON.stringify(cases)],
          { encoding: "utf8", maxBuffer: 64 << 20 },
        );
        expect(py.stderr).toBe("");
        const got = JSON.parse(py.stdout) as {
          launches: {
            entry: string;
            grid: number[];
            block: number[];
            shared: number;
            stream: number;
            args: string[];
          }[];
          allocs: { shape: number[]; dtype: string; ptr: number }[];
          plans: Record<string, Record<string, number>>;
        }[];
        cases.forEach((c, ci) => {
          const g = got[ci]!;
          const { batch, heads, kvHeads, layout } = c;
          const canon = (h: number) => contiguousStrides(n, h, d, layout);
          const view = (x: Input, h: number): BoundTensor => {
            const [seqDim, headDim] = layout === "bshd" ? [1, 2] : [2, 1];
            const sizes = [x.shape[0]!, x.shape[seqDim]!, x.shape[headDim]!];
            const st = [x.strides[0]!, x.strides[seqDim]!, x.strides[headDim]!];
            const c0 = canon(h);
            return {
              ptr: BigInt(x.ptr),
              heads: h,
              strides: st.map((v, i) => (sizes[i] === 1 ? c0[i]! : v)) as [number, number, number],
            };
          };
          const fresh = (i: number, h: number): BoundTensor => ({
            ptr: BigInt(g.allocs[i]!.ptr),
            heads: h,
            strides: canon(h),
          });
          const copied = c.inputs.do.ptr % 16 !== 0;
          // allocations: forward out, lse; backward [dout copy], dq, dk, dv, workspace
          const op = c.deterministic ? ops.backwardDeterministic : ops.backward;
          const at = copied ? 3 : 2;
          expect(g.allocs.map((a) => a.dtype)).toEqual([
            "bfloat16",
            "float32",
            ...(copied ? ["bfloat16"] : []),
            "bfloat16",
            "bfloat16",
            "bfloat16",
            ...op.workspace.map(() => "float32"),
          ]);
          expect(g.allocs[1]!.shape).toEqual([batch, heads, n]);
          op.workspace.forEach((w, i) =>
            expect(g.allocs[at + 3 + i]!.shape).toEqual([batch * heads * w.elementsPerHead]),
          );
          const base = {
            q: view(c.inputs.q, heads),
            k: view(c.inputs.k, kvHeads),
            v: view(c.inputs.v, kvHeads),
          };
          const lse = { ptr: BigInt(g.allocs[1]!.ptr) };
          const fwdT = { ...base, o: fresh(0, heads), lse };
          const bwdT: Partial<Record<TensorRole, BoundTensor>> = {
            ...fwdT,
            do: copied ? fresh(2, heads) : view(c.inputs.do, heads),
            dq: fresh(at, heads),
            dk: fresh(at + 1, kvHeads),
            dv: fresh(at + 2, kvHeads),
          };
          op.workspace.forEach((w, i) => (bwdT[w.tensor] = { ptr: BigInt(g.allocs[at + 3 + i]!.ptr) }));
          const plan = (m: string) =>
            Object.fromEntries(Object.entries(g.plans[m]!).map(([k, v]) => [k, BigInt(v)]));
          const want = [
            ...[fwd].map((dd) => [dd, fwdT] as const),
            ...op.launches.map((dd) => [dd, bwdT] as const),
          ].map(([dd, t]) => {
            const p = packLaunch(
              dd,
              { tensors: t, plan: plan(dd.module), batch, heads, kvHeads, seqLen: n, headDim: d },
              fakeMap,
            );
            return {
              entry: dd.entry,
              grid: p.grid,
              block: p.block,
              shared: p.sharedBytes,
              stream: 0x5151,
              args: p.args.map((a) => Buffer.from(a.bytes).toString("hex")),
            };
          });
          expect(g.launches).toEqual(want);
          expect(Object.keys(g.plans).sort()).toEqual(["backward", "forward"]);
        });
      }
    },
    120_000,
  );

  it.skipIf(!hasPython)(
    "the Python loader's mask evaluator agrees with the compiler's element mask",
    async () => {
      const text = `layout T { video 5 x 6 x 7 text 9 before batch 1 heads 2 head_dim 32 dtype bf16 }
layout U { video 4 x 8 x 12 text 6 after batch 1 heads 2 head_dim 32 dtype bf16 }
kernel tile { layout T mask attention_tile(2) or text_joint block 64 x 64 targets cuda }
kernel sta { layout U mask sliding_tile(2, 4, 4, 3, 3, 3) block 64 x 64 targets cuda }
kernel odd { layout U mask (q.video and k.video and (q.index % 7 == k.index % 3 or abs(q.row - k.col) <= 2)) or (q.text and k.index / 5 == 3) block 64 x 64 targets cuda }
kernel causal { layout T mask causal_frames and (temporal_band(1) or k.frame == 0) block 64 x 64 targets cuda }
`;
      const dir = mkdtempSync(join(tmpdir(), "tilec-pkg-mask-"));
      const s = spec(text);
      await build(s, dir);
      const kernels = [...s.kernels.values()];
      const points = kernels.map((k) => {
        const n = seqLen(k.layout);
        const pts: [number, number][] = [];
        for (let i = 0; i < 400; i++) pts.push([(i * 7919) % n, (i * 104729 + 13) % n]);
        for (const t of [0, 1, n - 1]) pts.push([t, n - 1 - t]);
        return pts;
      });
      const want = kernels.map((k, i) => {
        const m = elementMask(k.layout, k.mask);
        return points[i]!.map(([q, kk]) => m(q, kk));
      });
      const py = runPy(
        dir,
        `import json, sys
from tilec_kernels import eval_mask
m = json.load(open(${JSON.stringify(join(dir, "manifest.json"))}))["kernels"]
names, points = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(json.dumps([[bool(eval_mask(m[n]["maskExpr"], m[n]["tokens"], q, k)) for q, k in pts] for n, pts in zip(names, points)]))`,
        JSON.stringify(kernels.map((k) => k.name)),
        JSON.stringify(points),
      );
      const got = JSON.parse(py) as boolean[][];
      got.forEach((g, i) => expect(g, kernels[i]!.name).toEqual(want[i]));
      expect(want.flat().some((x) => x)).toBe(true);
      expect(want.flat().some((x) => !x)).toBe(true);
    },
  );

  it("generates typed entry points that load without tilec's compiler, a package that imports without torch, and a README that runs", async () => {
    const dir = mkdtempSync(join(tmpdir(), "tilec-pkg-ts-"));
    await build(spec(SPEC("temporal_band(1)")), dir);
    const index = readFileSync(join(dir, "index.ts"), "utf8");
    expect(index).toContain('export type KernelName = "a" | "b";');
    expect(index).not.toMatch(/compiler\//);
    expect(readFileSync(join(dir, "webgpu.ts"), "utf8")).toContain(
      'export type KernelName = "a" | "b" | "c";',
    );
    expect(readFileSync(join(dir, "tilec-webgpu.ts"), "utf8")).not.toMatch(/^import .*tilec|\.\.\//m);
    expect(readFileSync(join(dir, "tilec-cuda.ts"), "utf8")).not.toMatch(/^import .*(tilec|\.\.\/)/m);
    const mod = (await import(join(dir, "index.ts"))) as {
      kernels: Record<string, { seqLen: number }>;
      attention: (n: string) => unknown;
    };
    expect(Object.keys(mod.kernels)).toEqual(["a", "b"]);
    expect(mod.kernels.a!.seqLen).toBe(3 * 4 * 8 + 5);
    if (!available().ok) expect(() => mod.attention("a")).toThrow();

    // README: a sparse kernel in the examples, an import that works for any directory name, no placeholders.
    const readme = readFileSync(join(dir, "README.md"), "utf8");
    expect(readme).not.toContain("…");
    expect(readme).not.toMatch(/^from \S*-\S* import/m);
    expect(readme).toContain('kernel="a"'); // the first sparse (not `full`) kernel with a backward
    expect(readme).toMatch(/spec_from_file_location/);
    expect(readme).toMatch(/\.backward\(\)/);
    expect(readme).toMatch(/fullgraph=True/);
    if (hasPython) {
      // The package imports without torch (torch is only needed to launch), under the README's loader.
      const loader = /```python\n(import importlib\.util[\s\S]*?)```/.exec(readme)![1]!;
      const imp = spawnSync(
        "python3",
        [
          "-c",
          `${loader.replace(/load_package\("[^"]*"\)/, `load_package(${JSON.stringify(dir)})`)}\nprint(",".join(tilec.KERNELS), ",".join(tilec.TRAINABLE), tilec.torch)`,
        ],
        { encoding: "utf8" },
      );
      expect(imp.stderr).toBe("");
      expect(imp.stdout.trim()).toBe("a,b a,b None");
      // Every Python block of the README parses.
      for (const [, block] of readme.matchAll(/```python\n([\s\S]*?)```/g)) {
        const c = spawnSync("python3", ["-c", "import ast, sys; ast.parse(sys.stdin.read())"], {
          input: block,
          encoding: "utf8",
        });
        expect(c.stderr, block).toBe("");
      }
    }
  });

  it("names a hyphenated package directory's Python module validly", async () => {
    const dir = join(mkdtempSync(join(tmpdir(), "tilec-pkg-")), "build-osp29");
    await build(spec(SPEC("temporal_band(1)")), dir);
    const readme = readFileSync(join(dir, "README.md"), "utf8");
    expect(readme).toContain('def load_package(path, name="build_osp29")');
    expect(readme).toContain('tilec = load_package("build-osp29")');
    expect(readme).toMatch(/`build-osp29`, is not a Python identifier/);
    expect(readme).not.toMatch(/import build-osp29/);
  });
});

/** Runs Python with the package directory on sys.path; returns stdout (stderr must be empty). */
function runPy(dir: string, code: string, ...args: string[]): string {
  const r = spawnSync(
    "python3",
    ["-c", `import sys; sys.path.insert(0, ${JSON.stringify(dir)})\n${code}`, ...args],
    {
      encoding: "utf8",
      maxBuffer: 64 << 20,
    },
  );
  expect(r.stderr).toBe("");
  return r.stdout;
}
