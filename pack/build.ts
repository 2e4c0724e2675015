// `tilec build FILE -o DIR`: a directory a project ships to run the spec's kernels without tilec's
// compiler — per kernel the CUDA source (+ PTX and cubin where nvcc is installed) and the WGSL
// shader, each with its plan as an int32 file; manifest.json; a typed TypeScript loader (index.ts
// for CUDA through tilec's runtime/cuda, webgpu.ts for WebGPU with no tilec code); and a Python
// package for PyTorch (ctypes + the CUDA driver). Stable: a file is written only when its content
// changes, nvcc runs only for kernels whose source changed, and files of kernels that left the spec
// are removed.
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { basename, join } from "node:path";
import { promisify } from "node:util";
import { emitCuda, PARAMS_BYTES, planSections, tensorMapsManifest } from "../backends/cuda/emit.ts";
import { findNvcc, NVCC_FLAGS, nvccVersion } from "../backends/cuda/nvcc.ts";
import type { CudaArch } from "../backends/cuda/target.ts";
import {
  emitWgsl,
  packParams as packWgslParams,
  packPlan,
  PARAMS_BYTES as WGSL_PARAMS_BYTES,
} from "../backends/wgsl/emit.ts";
import { DEFAULT_LIMITS } from "../backends/wgsl/target.ts";
import type { CheckedSpec } from "../compiler/check.ts";
import { planKernel } from "../compiler/pipeline.ts";
import { NVRTC_OPTIONS } from "../runtime/attention.ts";
import { buildIR } from "../tune/apply.ts";
import { TILEC_PARAMS } from "./params.ts";
import { loaderFiles } from "./loaders.ts";

export const PACKAGE_FORMAT = 1;

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
  /** Kernels whose CUDA binaries were (re)compiled by nvcc. */
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

interface OldCuda {
  readonly sourceSha256?: string;
  readonly nvcc?: string;
  readonly compileArch?: string;
  readonly files?: Record<string, string>;
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
  const nvccVer = nvcc ? (nvccVersion() ?? "unknown") : undefined;
  const nvccJobs: { kernel: string; cu: string; compileArch: string }[] = [];
  const kernels: Record<string, unknown> = {};
  const selected = [...spec.kernels.values()].filter((k) => !options.kernel || k.name === options.kernel);
  if (!selected.length) throw new Error(`${file} has no kernel '${options.kernel}'`);
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
      const cu = `${k.name}.cu`;
      const planFile = `${k.name}.cuda.plan.bin`;
      const p = ir.plan;
      const sections = planSections(ir);
      outputs.set(cu, src.source);
      outputs.set(planFile, int32Bytes(sections.map((s) => s.data)));
      const files: Record<string, string> = { source: cu, plan: planFile };
      const sourceSha256 = sha256(src.source);
      if (nvcc) {
        files.ptx = `${k.name}.ptx`;
        files.cubin = `${k.name}.cubin`;
        const old = (oldManifest?.kernels as Record<string, { cuda?: OldCuda }> | undefined)?.[k.name]?.cuda;
        const fresh =
          old?.sourceSha256 === sourceSha256 &&
          old.nvcc === nvccVer &&
          old.compileArch === src.compileArch &&
          existsSync(join(outDir, files.ptx)) &&
          existsSync(join(outDir, files.cubin));
        if (!fresh) nvccJobs.push({ kernel: k.name, cu, compileArch: src.compileArch });
      }
      entry.cuda = {
        entry: src.entry,
        arch: src.arch,
        compileArch: src.compileArch,
        template: src.template,
        files,
        sourceSha256,
        nvcc: nvccVer ?? null,
        nvccFlags: nvcc ? NVCC_FLAGS : null,
        nvrtcOptions: NVRTC_OPTIONS,
        config: ir.config,
        blockQ: ir.blockQ,
        blockKv: ir.blockKv,
        kernelDensity: ir.kernelDensity,
        launch: src.launch,
        params: { struct: "TilecParams", bytes: PARAMS_BYTES, fields: TILEC_PARAMS },
        ...tensorMapsManifest(src),
        plan: {
          numQBlocks: p.numQBlocks,
          numKvBlocks: p.numKvBlocks,
          blocks: p.counts,
          sections: sections.map((s) => ({ name: s.name, length: s.data.length })),
        },
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
  }))
    outputs.set(name, text);
  const fileList = [...outputs.keys()];
  for (const k of names) {
    const c = (kernels[k] as { cuda?: { files: Record<string, string> } }).cuda;
    if (c?.files.ptx) fileList.push(c.files.ptx, c.files.cubin!);
  }
  const manifest = {
    format: PACKAGE_FORMAT,
    generator: "tilec build",
    spec: basename(file),
    kernels,
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
  await runPool(
    nvccJobs.flatMap((j) =>
      (["ptx", "cubin"] as const).map((ext) => async () => {
        await promisify(execFile)(
          nvcc!,
          [...NVCC_FLAGS, `-arch=${j.compileArch}`, `-${ext}`, j.cu, "-o", `${j.kernel}.${ext}`],
          {
            cwd: outDir,
          },
        );
        written.push(`${j.kernel}.${ext}`);
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
