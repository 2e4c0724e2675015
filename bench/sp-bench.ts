// Sequence parallelism at Open-Sora-Plan v1.2 93-frame shapes (86,400 tokens, 24 heads × 96, bf16,
// batch 1) on 1, 2 and 4 GPUs — the setting of Efficient-vDiT's Table 3 (1.95× on 2 GPUs, 3.91× on 4).
// Writes bench/results/sp.json: {device, date, rows: [{case, gpus, ms_per_step, speedup, ...}]}.
//
//   npx tsx bench/sp-bench.ts [--gpus 1,2,4] [--out bench/results/sp.json] [--reps 5] [--no-dit] [--dit-all]
//
// The driver launches one process per GPU (runtime/parallel/launcher.ts) for each world size the
// machine has GPUs for; world sizes beyond that are listed under `skipped`. Cases, per DiT step:
//  - "attention 3:21 ×32" / "attention full ×32": the self-attention of the 32 layers with the
//    Ulysses exchange (the part sequence parallelism divides): one layer's median × 32.
//  - "dit 3:21 (sequence parallel, every layer on S/N tokens)": one DiT step (random weights, 300
//    text tokens) with each rank's CudaDit on its token slice (SlicedDit: linear layers, adaLN,
//    norms, MLP, cross-attention queries and final layer on S/N tokens, self-attention through
//    Ulysses). The step's input and output are the rank's token rows, as in a sampler, which
//    gathers the latent once at the end (not timed: once per video, not per step).
//    One more step is timed part by part (CudaDit's timeParts: projections, attention, cross-
//    attention, MLP, ...) on rank 0, and on one GPU without sequence parallelism: sp.json's parts_ms.
//  - with --dit-all, also "dit 3:21 (attention split, other layers repeated)": the whole DiT on every
//    rank with only attention divided (DitSequenceParallel "all" mode), for comparison.
// Every timed repetition starts after an all-reduce barrier; a rank's time is measured with device
// events on the stream the work runs on; a step's time is the slowest rank's, reported as the
// median over repetitions after a warm-up. Speedups are against the same work on one GPU without
// sequence parallelism (no exchange, no NCCL), measured in the same gpus=1 run.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { compileSpec } from "../compiler/pipeline.ts";
import { tryLoadAddon } from "../runtime/cuda/addon.ts";
import { CudaEvent, type DeviceBuffer } from "../runtime/cuda/device.ts";
import { OSP_V12 } from "../runtime/dit/config.ts";
import { CudaDit } from "../runtime/dit/cuda.ts";
import { DitSequenceParallel } from "../runtime/parallel/dit.ts";
import { SlicedDit } from "../runtime/parallel/ditSliced.ts";
import { launch } from "../runtime/parallel/launcher.ts";
import { sliceSequence } from "../runtime/parallel/partition.ts";
import { UlyssesAttention } from "../runtime/parallel/ulysses.ts";
import { initWorld, rankInfo, runRank, type World } from "../runtime/parallel/world.ts";
import { randomArray } from "../runtime/reference.ts";

const SPEC_FILE = fileURLToPath(new URL("../examples/efficient-vdit/osp93.tile", import.meta.url));
const LAYERS = 32;
const TEXT_TOKENS = 300;
/** OSP v1.2 93 frames at 720p: the VAE's 24 × 90 × 160 latent (patch 2 → 24 × 45 × 80 tokens). */
const LATENT = { frames: 24, height: 90, width: 160 };

const argv = process.argv.slice(2);
const flag = (name: string) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : undefined);
const reps = Number(flag("--reps") ?? 5);
const withDit = !argv.includes("--no-dit");
const withDitAll = withDit && argv.includes("--dit-all");

interface RankTimes {
  rank: number;
  device: string;
  /** Per case: milliseconds of each timed repetition on this rank. */
  times: Record<string, number[]>;
  /** Per case: multiply a repetition by this to get a DiT step (32 for one attention layer). */
  perStep: Record<string, number>;
  /** World size 1 only: the same work without sequence parallelism (no exchange, no NCCL). */
  plain: Record<string, number[]>;
  /** DiT cases: one more step timed part by part (CudaDit's timeParts), this rank; "plain" likewise. */
  parts: Record<string, Record<string, number>>;
  plainParts: Record<string, Record<string, number>>;
}

const round2 = (x: number) => Number(x.toFixed(2));

function barrier(world: World, one: DeviceBuffer): void {
  world.comm.allReduce(one, one, "sum");
  world.cuda.synchronize();
}

/** Warm-up, then `reps` repetitions timed with events on the legacy default stream (where all the work runs). */
function timeReps(world: World, one: DeviceBuffer, warmup: number, fn: () => void): number[] {
  for (let i = 0; i < warmup; i++) fn();
  const times: number[] = [];
  const [a, b] = [CudaEvent.create(), CudaEvent.create()];
  try {
    for (let i = 0; i < reps; i++) {
      barrier(world, one);
      a.record();
      fn();
      b.record();
      b.synchronize();
      times.push(b.elapsedSince(a));
    }
  } finally {
    a.destroy();
    b.destroy();
  }
  world.comm.check();
  return times;
}

async function rankMain(): Promise<RankTimes> {
  const world = await initWorld();
  const dev = world.cuda;
  const one = dev.fromHost(new Float32Array([1]), "fp32");
  const spec = compileSpec(readFileSync(SPEC_FILE, "utf8"), SPEC_FILE).spec!;
  const times: Record<string, number[]> = {};
  const perStep: Record<string, number> = {};
  const plain: Record<string, number[]> = {};
  const parts: Record<string, Record<string, number>> = {};
  const plainParts: Record<string, Record<string, number>> = {};
  const round = (r: Record<string, number> | undefined) =>
    Object.fromEntries(Object.entries(r ?? {}).map(([k, v]) => [k, round2(v)]));

  for (const [label, kernel] of [
    ["attention 3:21 ×32", "tile_3_21"],
    ["attention full ×32", "full"],
  ] as const) {
    const attn = await UlyssesAttention.compile(spec, { kernel, comm: world.comm });
    const { heads, kvHeads, headDim: d, batch } = attn.kernel.layout;
    const n = attn.seq.total;
    const local = (h: number, seed: number) =>
      dev.fromHost(
        sliceSequence(
          Float32Array.from(randomArray(batch * n * h * d, seed)),
          batch,
          attn.seq,
          h * d,
          world.rank,
        ),
        "bf16",
      );
    const bufs = [
      local(heads, 1),
      local(kvHeads, 2),
      local(kvHeads, 3),
      dev.allocElements("bf16", attn.qLength),
    ];
    const [q, k, v, o] = bufs as [DeviceBuffer, DeviceBuffer, DeviceBuffer, DeviceBuffer];
    times[label] = timeReps(world, one, 2, () => attn.run(q, k, v, o));
    perStep[label] = LAYERS;
    // The non-parallel path (the kernel alone, no exchange) is what speedups are measured against.
    if (world.size === 1) plain[label] = timeReps(world, one, 2, () => attn.local.run(q, k, v, o));
    for (const b of bufs) b.free();
    attn.free();
  }

  if (withDit) {
    const { frames, height, width } = LATENT;
    const text = Float32Array.from(randomArray(TEXT_TOKENS * OSP_V12.captionChannels, 4)).map((x) => x * 0.5);
    const latentHost = Float32Array.from(randomArray(OSP_V12.inChannels * frames * height * width, 5));
    const wholeLength = OSP_V12.outChannels * frames * height * width;
    const options = { spec, kernel: "tile_3_21", latent: LATENT, textTokens: TEXT_TOKENS };
    const slicedLabel = "dit 3:21 (sequence parallel, every layer on S/N tokens)";
    const allLabel = "dit 3:21 (attention split, other layers repeated)";

    // The whole DiT on one GPU: the baseline (world size 1), and the "all" mode when asked for.
    if (world.size === 1 || withDitAll) {
      const dit = await CudaDit.create(OSP_V12, options);
      dit.randomizeWeights(1);
      dit.encodeText(text);
      const latent = dev.fromHost(latentHost, "fp32");
      const out = dev.allocElements("fp32", wholeLength);
      const plainForward = () => dit.forward(latent, [500], out);
      if (world.size === 1) {
        plain[slicedLabel] = timeReps(world, one, 1, plainForward);
        plainParts[slicedLabel] = round(dit.forward(latent, [500], out, { timeParts: true }).partsMs);
        if (withDitAll) plain[allLabel] = plain[slicedLabel];
      }
      if (withDitAll) {
        const sp = await DitSequenceParallel.create(dit, world.comm, { tokens: "all" });
        dit.attention = sp.attention;
        times[allLabel] = timeReps(world, one, 1, plainForward);
        perStep[allLabel] = 1;
        sp.free();
      }
      latent.free();
      out.free();
      dit.free();
    }

    // Each rank's DiT on its token slice.
    const sliced = await SlicedDit.create(OSP_V12, options, world.comm);
    sliced.dit.randomizeWeights(1);
    sliced.dit.encodeText(text);
    const whole = dev.fromHost(latentHost, "fp32");
    const rows = dev.allocElements("fp32", sliced.rowsLength(OSP_V12.inChannels));
    const outRows = dev.allocElements("fp32", sliced.rowsLength(OSP_V12.outChannels));
    sliced.sliceLatent(whole, rows);
    times[slicedLabel] = timeReps(world, one, 1, () => sliced.dit.forward(rows, [500], outRows));
    perStep[slicedLabel] = 1;
    barrier(world, one);
    parts[slicedLabel] = round(sliced.dit.forward(rows, [500], outRows, { timeParts: true }).partsMs);
    for (const b of [whole, rows, outRows]) b.free();
    sliced.free();
  }
  one.free();
  world.comm.destroy();
  return { rank: world.rank, device: dev.info.name, times, perStep, plain, parts, plainParts };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

async function driver(): Promise<void> {
  const out = flag("--out") ?? fileURLToPath(new URL("./results/sp.json", import.meta.url));
  const wanted = (flag("--gpus") ?? "1,2,4").split(",").map(Number);
  const loaded = tryLoadAddon();
  const available = "addon" in loaded ? (loaded.addon.available().deviceCount ?? 0) : 0;
  if (!available) throw new Error("sp-bench needs a CUDA GPU (none found)");
  const script = fileURLToPath(import.meta.url);
  const rows: Record<string, unknown>[] = [];
  const skipped: { gpus: number; reason: string }[] = [];
  const baseline = new Map<string, number>();
  let device = "";
  for (const gpus of wanted) {
    if (gpus > available) {
      skipped.push({ gpus, reason: `this machine has ${available} GPU(s)` });
      continue;
    }
    console.error(`sp-bench: ${gpus} GPU(s)…`);
    const ranks = (await launch({ script, args: argv, size: gpus, timeoutMs: 1_500_000 })) as RankTimes[];
    device = ranks[0]!.device;
    for (const label of Object.keys(ranks[0]!.times)) {
      // A repetition ends when the slowest rank does.
      const slowest = ranks[0]!.times[label]!.map((_, i) =>
        Math.max(...ranks.map((r) => r.times[label]![i]!)),
      );
      const ms = median(slowest) * ranks[0]!.perStep[label]!;
      const plain = ranks[0]!.plain[label];
      if (gpus === 1 && plain) {
        const ms1 = median(plain) * ranks[0]!.perStep[label]!;
        baseline.set(label, ms1);
        rows.push({
          case: `${label}, no sequence parallelism`,
          gpus: 1,
          ms_per_step: round2(ms1),
          speedup: 1,
          ...(ranks[0]!.plainParts[label] ? { parts_ms: ranks[0]!.plainParts[label] } : {}),
        });
      }
      const base = baseline.get(label);
      rows.push({
        case: label,
        gpus,
        ms_per_step: round2(ms),
        speedup: base === undefined ? null : Number((base / ms).toFixed(3)),
        reps: slowest.length,
        rank_ms: ranks.map((r) => Number((median(r.times[label]!) * r.perStep[label]!).toFixed(2))),
        // One extra step timed part by part on rank 0 (DiT cases): where the step goes.
        ...(ranks[0]!.parts[label] ? { parts_ms: ranks[0]!.parts[label] } : {}),
      });
      console.error(`  ${label}: ${ms.toFixed(1)} ms/step${base ? ` (${(base / ms).toFixed(2)}×)` : ""}`);
    }
  }
  const result = {
    device,
    date: new Date().toISOString(),
    shapes: "Open-Sora-Plan v1.2 93 frames: 86,400 tokens, 24 heads × 96, bf16, batch 1",
    paper: { gpus2: 1.95, gpus4: 3.91, source: "Efficient-vDiT Table 3, 93 frames, time per step" },
    rows,
    skipped,
  };
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify(result, null, 2) + "\n");
  console.error(`sp-bench: wrote ${out}`);
}

if (rankInfo().launched) runRank(rankMain);
else await driver();
