// The `tilec` command line: check, plan, emit. Exit codes: 0 ok, 1 diagnostics, 2 usage errors.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Command, CommanderError, Option } from "commander";
import type { KernelSpec } from "../compiler/check.ts";
import { planKernel, type KernelPlan } from "../compiler/pipeline.ts";
import { planAscii, planSvg } from "../compiler/planPicture.ts";
import { describeLayout } from "../compiler/layout.ts";
import { subTilePlan, type SubTilePlan } from "../compiler/subPlan.ts";
import { CudaConfigError, cudaManifest, emitCuda } from "../backends/cuda/emit.ts";
import {
  backwardPlanManifest,
  backwardPlanSections,
  CudaBackwardConfigError,
  emitCudaBackward,
} from "../backends/cuda/emitBackward.ts";
import { backwardProblems, lowerBackward } from "../compiler/lowerBackward.ts";
import { findNvcc, nvccCompile } from "../backends/cuda/nvcc.ts";
import { CUDA_ARCHS, type CudaArch } from "../backends/cuda/target.ts";
import { emitWgsl, WgslConfigError, wgslManifest } from "../backends/wgsl/emit.ts";
import { DEFAULT_LIMITS } from "../backends/wgsl/target.ts";
import { searchCommand } from "../search/cli.ts";
import { buildCommand } from "../pack/cli.ts";
import { buildIR } from "../tune/apply.ts";
import { tuneCommand } from "../tune/cli.ts";
import {
  EXIT_DIAGNOSTICS,
  EXIT_OK,
  EXIT_USAGE,
  UsageError,
  formatFlops,
  loadSpec,
  report,
  table,
} from "./load.ts";

function kernelsOf(file: string, only?: string): KernelSpec[] | number {
  const result = loadSpec(file);
  if (report(result) || !result.spec) return EXIT_DIAGNOSTICS;
  const all = [...result.spec.kernels.values()];
  if (!only) return all;
  const k = result.spec.kernels.get(only);
  if (!k)
    throw new UsageError(
      `${file} has no kernel '${only}'; its kernels are: ${all.map((x) => x.name).join(", ") || "(none)"}`,
    );
  return [k];
}

/** Share of the partial blocks' 16×8 sub-tiles that still evaluate the element mask (compiler/subPlan.ts). */
function elementMaskShare(p: KernelPlan): { sub: SubTilePlan; share: number } {
  const sub = subTilePlan(p.plan, p.kernel.layout, p.kernel.mask);
  const all = sub.counts.full + sub.counts.empty + sub.counts.partial;
  return { sub, share: all ? sub.counts.partial / all : 0 };
}

function elementMaskCell(p: KernelPlan): string {
  if (!p.plan.counts.partial) return "-";
  const { sub, share } = elementMaskShare(p);
  return `${(share * 100).toFixed(1)}%${sub.classified ? "" : "*"}`;
}

export function planJson(p: KernelPlan, withLists = false): Record<string, unknown> {
  const { kernel, plan, stats } = p;
  const { sub } = elementMaskShare(p);
  return {
    kernel: kernel.name,
    layout: kernel.layout.name,
    mask: kernel.maskSource,
    hash: kernel.hash,
    seqLen: plan.seqLen,
    blockQ: plan.blockQ,
    blockKv: plan.blockKv,
    numQBlocks: plan.numQBlocks,
    numKvBlocks: plan.numKvBlocks,
    blocks: { full: plan.counts.full, partial: plan.counts.partial, empty: plan.counts.empty },
    subTiles: sub.counts,
    density: stats.density,
    sparsity: stats.sparsity,
    flops: stats.flops,
    denseFlops: stats.denseFlops,
    bytes: stats.bytes,
    ...(withLists
      ? {
          full: { offsets: [...plan.full.offsets], indices: [...plan.full.indices] },
          partial: { offsets: [...plan.partial.offsets], indices: [...plan.partial.indices] },
        }
      : {}),
  };
}

function planCommand(
  file: string,
  opts: { kernel?: string; json?: boolean; svg?: string; ascii?: boolean },
): number {
  const kernels = kernelsOf(file, opts.kernel);
  if (typeof kernels === "number") return kernels;
  const plans = kernels.map(planKernel);
  if (opts.svg) {
    mkdirSync(opts.svg, { recursive: true });
    for (const p of plans) {
      const title = `${p.kernel.name}: ${p.kernel.maskSource} — density ${(p.stats.density * 100).toFixed(2)}%`;
      writeFileSync(
        join(opts.svg, `${p.kernel.name}.svg`),
        planSvg(p.plan, { title, layout: p.kernel.layout }),
      );
    }
  }
  if (opts.json) {
    const out = plans.map((p) => planJson(p));
    process.stdout.write(JSON.stringify(opts.kernel ? out[0] : out, null, 2) + "\n");
    return EXIT_OK;
  }
  const rows = plans.map((p) => [
    p.kernel.name,
    p.kernel.maskSource,
    `${p.plan.blockQ}x${p.plan.blockKv}`,
    p.plan.counts.full,
    p.plan.counts.partial,
    p.plan.counts.empty,
    `${(p.stats.density * 100).toFixed(2)}%`,
    `${(p.stats.sparsity * 100).toFixed(2)}%`,
    formatFlops(p.stats.flops),
    elementMaskCell(p),
  ]);
  const layouts = [...new Set(kernels.map((k) => k.layout))];
  for (const l of layouts) process.stdout.write(`layout ${l.name}: ${describeLayout(l)}\n`);
  process.stdout.write(
    table(rows, [
      "kernel",
      "mask",
      "block",
      "full",
      "partial",
      "empty",
      "density",
      "sparsity",
      "FLOPs",
      "elem. mask",
    ]) +
      "\n" +
      "elem. mask: share of the partial blocks' 16x8 sub-tiles that evaluate the mask per element (the rest are uniform)\n" +
      (rows.some((r) => String(r[9]).endsWith("*"))
        ? "* too many distinct sub-tiles to classify at compile time: all of them evaluate the mask\n"
        : ""),
  );
  if (opts.kernel || opts.ascii)
    for (const p of plans) process.stdout.write(`\n${p.kernel.name}\n${planAscii(p.plan)}\n`);
  if (opts.svg)
    process.stdout.write(
      `wrote ${plans.length} SVG tile map${plans.length === 1 ? "" : "s"} to ${opts.svg}\n`,
    );
  return EXIT_OK;
}

interface EmitOptions {
  target: "cuda" | "wgsl" | "plan";
  kernel?: string;
  out: string;
  arch: CudaArch;
  f16?: boolean;
  subgroups?: boolean;
  /** CUDA: also emit the backward kernels. */
  backward?: boolean;
  /** commander's --no-tuned; --device picks among cached winners. */
  tuned?: boolean;
  device?: string;
}

function emitCommand(file: string, opts: EmitOptions): number {
  const kernels = kernelsOf(file, opts.kernel);
  if (typeof kernels === "number") return kernels;
  mkdirSync(opts.out, { recursive: true });
  const written: string[] = [];
  const write = (name: string, text: string) => {
    const path = join(opts.out, name);
    writeFileSync(path, text);
    written.push(path);
  };
  let failed = false;
  for (const k of kernels) {
    const p = planKernel(k);
    if (opts.target === "plan") {
      write(`${k.name}.plan.json`, JSON.stringify(planJson(p, true)) + "\n");
      continue;
    }
    const limits = DEFAULT_LIMITS;
    const chosen = buildIR(p, file, opts.target, {
      ...opts,
      wgslLimits: limits,
      useTuned: opts.tuned,
      // --arch sm_90 lowers to the wgmma template's default configuration, as compile() does on an H100.
      defaultArch: opts.target === "cuda" ? opts.arch : undefined,
    });
    if (chosen.note) process.stdout.write(`${chosen.note}\n`);
    const ir = chosen.ir;
    if (opts.target === "wgsl") {
      try {
        const caps = { f16: !!opts.f16, subgroups: chosen.subgroups ?? !!opts.subgroups, limits };
        const w = emitWgsl(ir, caps, { tiling: chosen.tiling });
        write(`${k.name}.wgsl`, w.source);
        write(
          `${k.name}.manifest.json`,
          JSON.stringify(wgslManifest(ir, w, { source: `${k.name}.wgsl` })) + "\n",
        );
      } catch (e) {
        if (!(e instanceof WgslConfigError)) throw e;
        process.stderr.write(`${file}: ${e.message}\n`);
        failed = true;
      }
      continue;
    }
    let src;
    try {
      src = emitCuda(ir, opts.arch);
    } catch (e) {
      if (!(e instanceof CudaConfigError)) throw e;
      process.stderr.write(`${file}: ${e.message}\n`);
      failed = true;
      continue;
    }
    // A module's .cu, and its .ptx and .cubin where nvcc is installed: the files its manifest names.
    const module = (stem: string, source: string, compileArch: string) => {
      const cu = `${stem}.cu`;
      write(cu, source);
      const files: Record<string, string> = { source: cu };
      if (findNvcc())
        for (const ext of ["ptx", "cubin"] as const) {
          nvccCompile(join(opts.out, cu), join(opts.out, `${stem}.${ext}`), compileArch);
          files[ext] = `${stem}.${ext}`;
          written.push(join(opts.out, files[ext]!));
        }
      return files;
    };
    const manifest: Record<string, unknown> = cudaManifest(
      ir,
      src,
      module(k.name, src.source, src.compileArch),
    );
    if (opts.backward) {
      // The backward module beside the forward: its own .cu (+ .ptx/.cubin), launches and plan summary.
      const problems = backwardProblems(ir);
      if (problems.length) {
        process.stderr.write(`${file}: kernel '${k.name}' has no backward: ${problems.join("; ")}\n`);
        failed = true;
      } else {
        try {
          const bir = lowerBackward(ir, opts.arch);
          const bsrc = emitCudaBackward(bir, opts.arch);
          manifest.backward = {
            files: module(`${k.name}.bwd`, bsrc.source, bsrc.compileArch),
            compileArch: bsrc.compileArch,
            template: bsrc.template,
            operations: bsrc.operations,
            plan: {
              ...backwardPlanManifest(bir),
              sections: Object.fromEntries(
                backwardPlanSections(bir).map((x) => [x.name, Array.from(x.data)]),
              ),
            },
          };
        } catch (e) {
          if (!(e instanceof CudaBackwardConfigError)) throw e;
          process.stderr.write(`${file}: ${e.message}\n`);
          failed = true;
        }
      }
    }
    write(`${k.name}.manifest.json`, JSON.stringify(manifest) + "\n");
  }
  if (opts.target === "cuda" && !findNvcc())
    process.stdout.write("nvcc not found: wrote CUDA sources only (no .ptx/.cubin)\n");
  process.stdout.write(written.map((w) => `wrote ${w}`).join("\n") + "\n");
  return failed ? EXIT_DIAGNOSTICS : EXIT_OK;
}

function checkCommand(files: string[]): number {
  let code = EXIT_OK;
  for (const file of files) {
    const result = loadSpec(file);
    if (report(result) || !result.spec) {
      code = EXIT_DIAGNOSTICS;
      continue;
    }
    const s = result.spec;
    process.stdout.write(
      `${file}: ok (${s.layouts.size} layouts, ${s.kernels.size} kernels, ${s.models.size} models)\n`,
    );
  }
  return code;
}

export function buildProgram(setCode: (c: number) => void): Command {
  const program = new Command("tilec")
    .description("Block-sparse attention kernels for video diffusion transformers, from .tile specs")
    .version("0.1.0")
    .exitOverride()
    .showHelpAfterError("(run with --help for usage)");
  program
    .command("check")
    .description("parse and check .tile files; print diagnostics")
    .argument("<files...>", ".tile files")
    .action((files: string[]) => setCode(checkCommand(files)));
  program
    .command("plan")
    .description("show the block plan of a spec's kernels: full / partial / empty blocks, density, FLOPs")
    .argument("<file>", ".tile file")
    .option("-k, --kernel <name>", "only this kernel (prints its tile map too)")
    .option("--json", "print JSON (an object with --kernel, else an array)")
    .option("--svg <dir>", "write an SVG tile map per kernel into <dir>")
    .option("--ascii", "print the ASCII tile map of every kernel")
    .action((file: string, opts) => setCode(planCommand(file, opts)));
  program
    .command("emit")
    .description("write compiled artifacts for a spec's kernels")
    .argument("<file>", ".tile file")
    .addOption(
      new Option("-t, --target <target>", "what to emit").choices(["cuda", "wgsl", "plan"]).default("cuda"),
    )
    .addOption(new Option("--arch <arch>", "CUDA architecture").choices([...CUDA_ARCHS]).default("sm_90"))
    .option("--f16", "WGSL: f16 storage (needs the adapter's shader-f16)")
    .option("--subgroups", "WGSL: subgroup reductions (needs the adapter's subgroups)")
    .option("--backward", "CUDA: also the backward kernels (<kernel>.bwd.cu; manifest: backward)")
    .option("-k, --kernel <name>", "only this kernel")
    .requiredOption("-o, --out <dir>", "output directory")
    .option("--no-tuned", "ignore `tilec tune`'s cached winners (default configuration)")
    .option("--device <name>", "use winners tuned on a device whose name contains this")
    .action((file: string, opts) => setCode(emitCommand(file, opts)));
  program
    .command("launch")
    .description("run a script on N GPUs, one Node process per GPU (sequence parallelism over NCCL)")
    .requiredOption("-g, --gpus <n>", "number of ranks, one GPU each")
    .option("--devices <ids>", "comma-separated GPU per rank (default 0..n-1)")
    .addOption(
      new Option(
        "--device-mode <mode>",
        "ordinal: every GPU visible, rank r opens <gpu>; visible: CUDA_VISIBLE_DEVICES=<gpu> per rank",
      )
        .choices(["ordinal", "visible"])
        .default("ordinal"),
    )
    .option("--timeout <seconds>", "stop every rank after this long")
    .argument("<script>", "the rank script (see runtime/parallel/world.ts)")
    .argument("[args...]", "arguments passed to every rank (put `--` before ones that start with -)")
    .action(async (script: string, args: string[], opts) => {
      // Async like search: only mainAsync awaits it. Loaded lazily (child processes, NCCL).
      pending = import("../runtime/parallel/launchCommand.ts")
        .then(({ launchCommand }) => launchCommand(script, args, opts))
        .then(setCode);
      await pending;
    });
  program
    .command("search")
    .description("layer-wise mask search: per layer, the sparsest kernel whose output error stays under r")
    .argument("<spec>", ".tile file whose kernels are the candidate masks")
    .requiredOption(
      "--qkv <file>",
      "calibration Q/K/V: safetensors with layers.{i}.q/k/v [batch, seq, heads, dim]",
    )
    .requiredOption("-r, --threshold <r>", "error threshold r (the paper uses 0.025 to 0.4)")
    .addOption(new Option("--metric <metric>", "error measure").choices(["rel-l2", "mse"]).default("rel-l2"))
    .option("-o, --out <file>", "write the searched model (with the spec's declarations) to this .tile file")
    .addOption(
      new Option("--device <device>", "where to run").choices(["auto", "cuda", "cpu"]).default("auto"),
    )
    .option("--kernels <names>", "comma-separated candidate kernels (default: all)")
    .option("--model <name>", "take steps and step overrides from this model of the spec")
    .option("--name <name>", "name of the searched model")
    .option(
      "--rows <n|all>",
      "CPU: query rows to measure on (default all up to 4096 tokens, else 256 sampled)",
    )
    .option("--json", "print the result as JSON")
    .action(async (file: string, opts) => {
      // Async: only mainAsync awaits it (main() is synchronous for the other commands).
      pending = searchCommand(file, opts).then(setCode);
      await pending;
    });
  program
    .command("tune")
    .description(
      "autotune a spec's kernels on this machine's GPU; winners go to the cache compile() and emit use",
    )
    .argument("<file>", ".tile file")
    .addOption(
      new Option("-t, --target <target>", "backend to tune").choices(["cuda", "wgsl"]).default("cuda"),
    )
    .option("-k, --kernel <name>", "only this kernel")
    .option("--top <n>", "time only the cost model's best n candidates (and the default)")
    .option("--reps <n>", "timed runs per candidate (median reported)", "10")
    .option("--warmup <n>", "untimed runs before timing", "2")
    .option("--heads <n>", "WGSL: run at this many heads (default: the most the adapter can bind)")
    .option("--swiftshader", "WGSL: run on SwiftShader (CPU Vulkan) instead of the GPU")
    .option("--no-save", "do not store the winners in the cache")
    .option("--no-progress", "no progress bar on stderr")
    .option("--json", "print the whole run as JSON")
    .action(async (file: string, opts) => {
      pending = tuneCommand(file, opts).then(setCode);
      await pending;
    });
  program
    .command("build")
    .description(
      "write a package that runs the spec's kernels without tilec's compiler: sources, PTX/cubin, WGSL, manifest, TypeScript and PyTorch loaders",
    )
    .argument("<file>", ".tile file")
    .requiredOption("-o, --out <dir>", "output directory (rewritten files only where they changed)")
    .addOption(new Option("--arch <arch>", "CUDA architecture").choices([...CUDA_ARCHS]).default("sm_90"))
    .addOption(
      new Option("-t, --target <target>", "backends to package")
        .choices(["cuda", "wgsl", "all"])
        .default("all"),
    )
    .option("-k, --kernel <name>", "only this kernel")
    .option("--subgroups", "WGSL: subgroup reductions (needs the adapter's subgroups)")
    .option("--no-tuned", "ignore `tilec tune`'s cached winners (default configurations)")
    .option("--device <name>", "use winners tuned on a device whose name contains this")
    .option("--no-nvcc", "CUDA sources only, even where nvcc is installed")
    .option("--runtime-import <specifier>", "where index.ts imports tilec's runtime/cuda from")
    .action(async (file: string, opts) => {
      pending = buildCommand(file, opts).then(setCode);
      await pending;
    });
  return program;
}

let pending: Promise<void> | undefined;

/** Every command, including the asynchronous `search`, `tune` and `build`. */
export async function mainAsync(argv: string[]): Promise<number> {
  let code = EXIT_OK;
  const program = buildProgram((c) => (code = c));
  try {
    await program.parseAsync(argv, { from: "user" });
  } catch (e) {
    return exitCodeOf(e);
  }
  return code;
}

function exitCodeOf(e: unknown): number {
  // --help and --version exit 0 through here; everything else commander rejects is usage.
  if (e instanceof CommanderError) return e.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
  if (e instanceof UsageError) {
    process.stderr.write(`tilec: ${e.message}\n`);
    return EXIT_USAGE;
  }
  throw e;
}

export function main(argv: string[]): number {
  let code = EXIT_OK;
  const program = buildProgram((c) => (code = c));
  pending = undefined;
  try {
    program.parse(argv, { from: "user" });
    if (pending) throw new Error(`tilec ${argv[0]} is asynchronous: call mainAsync()`);
  } catch (e) {
    return exitCodeOf(e);
  }
  return code;
}
