// `tilec build FILE -o DIR`: a directory a project ships to run the spec's kernels without tilec's
// compiler — per kernel the CUDA modules (the forward and, where the kernel has one, the backward:
// source, + PTX and cubin where nvcc is installed) and the WGSL shader, each with its plan as an int32
// file; manifest.json (format 2: per CUDA kernel its modules, operations — lists of launch
// descriptions, backends/cuda/launch.ts — and plans; the spec's model sections); a typed TypeScript
// loader (index.ts for CUDA through tilec's runtime/cuda, webgpu.ts for WebGPU with no tilec code);
// and a Python package for PyTorch (ctypes + the CUDA driver, an autograd op). Stable: a file is
// written only when its content changes, nvcc runs only for modules whose source changed, and files
// of kernels that left the spec are removed.
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { basename, join } from "node:path";
import { promisify } from "node:util";
import { emitCuda, planSections } from "../backends/cuda/emit.ts";
import {
  backwardPlanManifest,
  backwardPlanSections,
  CudaBackwardConfigError,
  emitCudaBackward,
} from "../backends/cuda/emitBackward.ts";
import type { Operation } from "../backends/cuda/launch.ts";
import { archFlags, findNvcc, NVCC_FLAGS, nvccVersion } from "../backends/cuda/nvcc.ts";
import type { CudaArch } from "../backends/cuda/target.ts";
import {
  emitWgsl,
  packParams as packWgslParams,
  packPlan,
  PARAMS_BYTES as WGSL_PARAMS_BYTES,
} from "../backends/wgsl/emit.ts";
import { DEFAULT_LIMITS } from "../backends/wgsl/target.ts";
import type { CheckedSpec, ModelSpec } from "../compiler/check.ts";
import { lowerBackward, backwardProblems } from "../compiler/lowerBackward.ts";
import { planKernel } from "../compiler/pipeline.ts";
import { NVRTC_OPTIONS } from "../runtime/attention.ts";
import { buildIR } from "../tune/apply.ts";
import { loaderFiles } from "./loaders.ts";
import { maskJson, tokenLayout } from "./maskJson.ts";

/** 2: per CUDA kernel `modules` / `operations` / `plans` (forward and backward) instead of one launch. */
export const PACKAGE_FORMAT = 2;

export interface BuildOptions {
  readonly arch: CudaArch;
  /** Only this kernel (default: all). */
  readonly kernel?: string;
  /** Backends to package (default: each kernel's declared targets among cuda and wgsl). */
  readonly targets?: readonly ("cuda" | "wgsl")[];
  /** WGSL: subgroup reductions (needs the adapter's `subgroups`). */
  readonly subgroups?: boolean;
  /** false: ignore `tilec tune`'s winners. */
  readonly useTuned?: boolean;
  readonly device?: string;
  /** false: no nvcc even where installed (sources only). */
  readonly nvcc?: boolean;
  /** Module specifier index.ts imports tilec's CUDA runtime from (default: found from the output dir). */
  readonly runtimeImport?: string;
}

export interface BuildResult {
  readonly written: string[];
  readonly unchanged: string[];
  readonly removed: string[];
  /** Kernels some of whose CUDA binaries (forward or backward) were (re)compiled by nvcc. */
  readonly compiled: string[];
  readonly notes: string[];
}

const sha256 = (data: string | Uint8Array) => createHash("sha256").update(data).digest("hex");

function int32Bytes(parts: readonly Int32Array[]): Uint8Array {
  const all = new Int32Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    all.set(p, at);
    at += p.length;
  }
  return new Uint8Array(all.buffer);
}

/** A CUDA module of a kernel as the manifest describes it. */
interface ModuleEntry {
  readonly files: { source: string; ptx?: string; cubin?: string };
  readonly compileArch: string;
  readonly sourceSha256: string;
  readonly nvcc: string | null;
  readonly nvccFlags: readonly string[] | null;
  readonly nvrtcOptions: readonly string[];
}

interface NvccJob {
  readonly kernel: string;
  /** The .cu file; outputs are `${stem}.ptx` and `${stem}.cubin`. */
  readonly cu: string;
  readonly stem: string;
  readonly compileArch: string;
}

/** A spec's model section as the manifest ships it: the kernel of every layer, step overrides. */
function modelEntry(m: ModelSpec, packaged: ReadonlySet<string>) {
  const used = [...new Set([...m.layerKernels, ...m.stepOverrides.map((o) => o.kernel)])];
  const missing = used.filter((k) => !packaged.has(k));
  return {
    layers: m.layers,
    steps: m.steps ?? null,
    layerKernels: m.layerKernels,
    stepOverrides: m.stepOverrides.map((o) => ({ steps: o.steps, layers: o.layers, kernel: o.kernel })),
    ...(missing.length ? { missingKernels: missing } : {}),
  };
}

export async function buildPackage(
  spec: CheckedSpec,
  file: string,
  outDir: string,
  options: BuildOptions,
): Promise<BuildResult> {
  mkdirSync(outDir, { recursive: true });
  const oldManifest = readJson(join(outDir, "manifest.json"));
  const outputs = new Map<string, string | Uint8Array>();
  const notes: string[] = [];
  const nvcc = options.nvcc === false ? null : findNvcc();
  const nvccVer = nvcc ? (nvccVersion() ?? "unknown") : null;
  const nvccJobs: NvccJob[] = [];
  const kernels: Record<string, unknown> = {};
  const selected = [...spec.kernels.values()].filter((k) => !options.kernel || k.name === options.kernel);
  if (!selected.length) throw new Error(`${file} has no kernel '${options.kernel}'`);

  /** A CUDA module's manifest entry; queues nvcc unless the old build has its binaries of this source. */
  const cudaModule = (kernel: string, which: string, stem: string, source: string, compileArch: string) => {
    const cu = `${stem}.cu`;
    outputs.set(cu, source);
    const files: ModuleEntry["files"] = { source: cu };
    const sourceSha256 = sha256(source);
    if (nvcc) {
      Object.assign(files, { ptx: `${stem}.ptx`, cubin: `${stem}.cubin` });
      const oldKernels = oldManifest?.format === PACKAGE_FORMAT ? oldManifest.kernels : undefined;
      const old = (
        oldKernels as Record<string, { cuda?: { modules?: Record<string, ModuleEntry> } }> | undefined
      )?.[kernel]?.cuda?.modules?.[which];
      const fresh =
        old?.sourceSha256 === sourceSha256 &&
        old.nvcc === nvccVer &&
        old.compileArch === compileArch &&
        old.files.ptx === files.ptx &&
        old.files.cubin === files.cubin &&
        existsSync(join(outDir, files.ptx!)) &&
        existsSync(join(outDir, files.cubin!));
      if (!fresh) nvccJobs.push({ kernel, cu, stem, compileArch });
    }
    const entry: ModuleEntry = {
      files,
      compileArch,
      sourceSha256,
      nvcc: nvccVer,
      nvccFlags: nvcc ? NVCC_FLAGS : null,
      nvrtcOptions: NVRTC_OPTIONS,
    };
    return entry;
  };

  for (const k of selected) {
    const targets = (options.targets ?? ["cuda", "wgsl"]).filter((t) => k.targets.includes(t));
    const kp = planKernel(k);
    const l = k.layout;
    const entry: Record<string, unknown> = {
      hash: k.hash,
      mask: k.maskSource,
      density: kp.stats.density,
      shape: {
        batch: l.batch,
        seqLen: kp.plan.seqLen,
        heads: l.heads,
        kvHeads: l.kvHeads,
        headDim: l.headDim,
        dtype: l.dtype,
        scale: 1 / Math.sqrt(l.headDim),
      },
      tokens: tokenLayout(l),
      maskExpr: maskJson(k.mask),
    };
    if (targets.includes("cuda")) {
      const chosen = buildIR(kp, file, "cuda", {
        arch: options.arch,
        defaultArch: options.arch,
        useTuned: options.useTuned,
        device: options.device,
      });
      if (chosen.note) notes.push(chosen.note);
      const ir = chosen.ir;
      const src = emitCuda(ir, options.arch);
      const sections = planSections(ir);
      const planFile = `${k.name}.cuda.plan.bin`;
      outputs.set(planFile, int32Bytes(sections.map((s) => s.data)));
      const modules: Record<string, ModuleEntry> = {
        forward: cudaModule(k.name, "forward", k.name, src.source, src.compileArch),
      };
      const operations: Record<string, Operation> = {
        forward: { launches: [src.launchDescription], workspace: [] },
      };
      const p = ir.plan;
      const plans: Record<string, unknown> = {
        forward: {
          file: planFile,
          sections: sections.map((s) => ({ name: s.name, length: s.data.length })),
          blockQ: ir.blockQ,
          blockKv: ir.blockKv,
          numQBlocks: p.numQBlocks,
          numKvBlocks: p.numKvBlocks,
          blocks: p.counts,
        },
      };
      // The backward: from the same (possibly tuned) forward IR, its default configuration for the arch.
      let backward: Record<string, unknown> | null = null;
      let backwardWhy: string | undefined;
      const problems = backwardProblems(ir);
      if (problems.length) backwardWhy = problems.join("; ");
      else {
        try {
          const bir = lowerBackward(ir, options.arch);
          const bsrc = emitCudaBackward(bir, options.arch);
          const bSections = backwardPlanSections(bir);
          const bPlanFile = `${k.name}.cuda.bwd.plan.bin`;
          outputs.set(bPlanFile, int32Bytes(bSections.map((s) => s.data)));
          modules.backward = cudaModule(k.name, "backward", `${k.name}.bwd`, bsrc.source, bsrc.compileArch);
          operations.backward = bsrc.operations.backward;
          operations.backwardDeterministic = bsrc.operations.backwardDeterministic;
          plans.backward = {
            file: bPlanFile,
            sections: bSections.map((s) => ({ name: s.name, length: s.data.length })),
            ...backwardPlanManifest(bir),
          };
          backward = { template: bsrc.template, entry: bir.entry };
        } catch (e) {
          if (!(e instanceof CudaBackwardConfigError)) throw e;
          backwardWhy = e.problems.join("; ");
        }
      }
      if (backwardWhy)
        notes.push(`${k.name}: no backward (${backwardWhy}); the package runs its forward only`);
      entry.cuda = {
        arch: src.arch,
        template: src.template,
        config: ir.config,
        blockQ: ir.blockQ,
        blockKv: ir.blockKv,
        kernelDensity: ir.kernelDensity,
        modules,
        operations,
        plans,
        backward,
        ...(backwardWhy ? { backwardWhy } : {}),
        tuned: chosen.tuned ? tunedSummary(chosen.tuned) : null,
      };
    }
    if (targets.includes("wgsl")) {
      const limits = DEFAULT_LIMITS;
      const chosen = buildIR(kp, file, "wgsl", {
        subgroups: options.subgroups,
        wgslLimits: limits,
        useTuned: options.useTuned,
        device: options.device,
      });
      if (chosen.note) notes.push(chosen.note);
      const ir = chosen.ir;
      // f32 storage (every adapter has it); bf16/fp16 specs upload as f32.
      const caps = { f16: false, subgroups: chosen.subgroups ?? !!options.subgroups, limits };
      const w = emitWgsl(ir, caps, { tiling: chosen.tiling });
      const packed = packPlan(ir.plan);
      const wgslFile = `${k.name}.wgsl`;
      const planFile = `${k.name}.wgsl.plan.bin`;
      outputs.set(wgslFile, w.source);
      outputs.set(planFile, int32Bytes([packed.data]));
      const words = (layout: "bshd" | "bhsd", lse: boolean) =>
        Array.from(new Uint32Array(packWgslParams(ir, { layout, lse, planBase: packed.base })));
      entry.wgsl = {
        entry: w.entry,
        files: { source: wgslFile, plan: planFile },
        storage: w.storage,
        features: w.features,
        subgroups: w.subgroups,
        tiling: w.tiling,
        workgroupSize: [w.workgroupSize, 1, 1],
        workgroupBytes: w.workgroupBytes,
        dispatch: w.dispatch,
        bindings: w.bindings.map((b) => ({ binding: b.binding, name: b.name, type: b.type })),
        params: {
          bytes: WGSL_PARAMS_BYTES,
          words: {
            bshd: { lse: words("bshd", true), noLse: words("bshd", false) },
            bhsd: { lse: words("bhsd", true), noLse: words("bhsd", false) },
          },
        },
        config: ir.config,
        blockQ: ir.blockQ,
        blockKv: ir.blockKv,
        tuned: chosen.tuned ? tunedSummary(chosen.tuned) : null,
      };
    }
    kernels[k.name] = entry;
  }

  const names = selected.map((k) => k.name);
  for (const [name, text] of loaderFiles({
    specFile: basename(file),
    outDir,
    kernels: selected.map((k) => ({
      name: k.name,
      kernel: k,
      entry: kernels[k.name] as Record<string, unknown>,
    })),
    runtimeImport: options.runtimeImport,
    models: [...spec.models.values()],
  }))
    outputs.set(name, text);
  const fileList = [...outputs.keys()];
  for (const k of names) {
    const c = (kernels[k] as { cuda?: { modules: Record<string, ModuleEntry> } }).cuda;
    for (const m of Object.values(c?.modules ?? {}))
      if (m.files.ptx) fileList.push(m.files.ptx, m.files.cubin!);
  }
  const cudaKernels = new Set(names.filter((k) => (kernels[k] as { cuda?: unknown }).cuda));
  const models = Object.fromEntries(
    [...spec.models.values()].map((m) => [m.name, modelEntry(m, cudaKernels)]),
  );
  const manifest = {
    format: PACKAGE_FORMAT,
    generator: "tilec build",
    spec: basename(file),
    // Names this build's kernels and models (the PyTorch loader's operator namespace derives from it).
    specHash: sha256(
      JSON.stringify({
        arch: options.arch,
        kernels: names.map((k) => [k, (kernels[k] as { hash: string }).hash]),
        models,
      }),
    ),
    kernels,
    models,
    files: [...new Set(fileList)].sort(),
  };
  outputs.set("manifest.json", JSON.stringify(manifest, null, 2) + "\n");

  const written: string[] = [];
  const unchanged: string[] = [];
  for (const [name, content] of outputs) {
    const path = join(outDir, name);
    (writeIfChanged(path, content) ? written : unchanged).push(name);
  }
  // nvcc after the sources exist, from the output directory (-lineinfo names the .cu relative to it).
  // A module's old binaries go first: if nvcc fails, the next build compiles it again.
  for (const j of nvccJobs)
    for (const ext of ["ptx", "cubin"]) rmSync(join(outDir, `${j.stem}.${ext}`), { force: true });
  await runPool(
    nvccJobs.flatMap((j) =>
      (["ptx", "cubin"] as const).map((ext) => async () => {
        const out = `${j.stem}.${ext}`;
        try {
          await promisify(execFile)(
            nvcc!,
            [...NVCC_FLAGS, ...archFlags(j.compileArch, `-${ext}`), `-${ext}`, j.cu, "-o", out],
            { cwd: outDir, maxBuffer: 16 << 20 },
          );
        } catch (e) {
          const err = e as { stderr?: string; message?: string };
          throw new Error(
            `nvcc failed on ${join(outDir, j.cu)} (${j.compileArch}, -${ext}):\n${err.stderr || err.message}`,
          );
        }
        written.push(out);
      }),
    ),
    Math.max(1, cpus().length),
  );
  const removed: string[] = [];
  const oldFiles = (oldManifest?.files as string[] | undefined) ?? [];
  for (const f of oldFiles)
    if (!manifest.files.includes(f) && !f.includes("/") && existsSync(join(outDir, f))) {
      rmSync(join(outDir, f));
      removed.push(f);
    }
  if (!nvcc && selected.some((k) => k.targets.includes("cuda")))
    notes.push("nvcc not found: CUDA sources only (the loaders compile them with NVRTC where they can)");
  return { written, unchanged, removed, compiled: [...new Set(nvccJobs.map((j) => j.kernel))], notes };
}

function tunedSummary(e: { device: string; tunedAt: string; ms: number; defaultMs: number | null }) {
  return { device: e.device, tunedAt: e.tunedAt, ms: e.ms, defaultMs: e.defaultMs };
}

function readJson(path: string): Record<string, unknown> | undefined {
  try {
    return JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

/** Writes `content` unless the file already holds exactly it; true when it wrote. */
export function writeIfChanged(path: string, content: string | Uint8Array): boolean {
  const bytes = typeof content === "string" ? Buffer.from(content, "utf8") : Buffer.from(content);
  try {
    if (readFileSync(path).equals(bytes)) return false;
  } catch {
    // missing: write it
  }
  writeFileSync(path, bytes);
  return true;
}

async function runPool(jobs: (() => Promise<void>)[], width: number): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < jobs.length) await jobs[next++]!();
  };
  await Promise.all(Array.from({ length: Math.min(width, jobs.length) }, worker));
}
