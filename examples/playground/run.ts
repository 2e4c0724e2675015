// "Run on WebGPU": compiles the selected kernel with compileWgsl on navigator.gpu, checks it on random
// data against the float64 CPU reference (checkWgsl), then times it: GPU timestamps where the adapter
// offers `timestamp-query`, else performance.now() around submit + onSubmittedWorkDone.
import type { CheckedSpec } from "../../compiler/check.ts";
import { seqLen } from "../../compiler/layout.ts";
import { randomArray } from "../../runtime/reference.ts";
import { checkWgsl, compileWgsl, defaultDevice, type WebGpuDevice } from "../../runtime/webgpu/index.ts";

export interface RunResult {
  readonly relError: number;
  readonly tolerance: number;
  readonly ok: boolean;
  /** How many query rows the reference checked (all of them for small layouts). */
  readonly rowsChecked: number;
  readonly seqLen: number;
  readonly storage: string;
  readonly ms: number;
  readonly timing: "gpu timestamps" | "wall clock";
  readonly adapter: string;
}

/** The reason WebGPU cannot run here, or undefined when navigator.gpu exists. */
export function webGpuMissing(): string | undefined {
  if (!window.isSecureContext)
    return "WebGPU needs a secure context: open the page on http://localhost or http://127.0.0.1 (or https).";
  if (!("gpu" in navigator))
    return "This browser offers no WebGPU (navigator.gpu is missing). Use a recent Chrome or Edge; on Linux start Chromium with --enable-unsafe-webgpu (and --enable-features=Vulkan).";
  return undefined;
}

/** Reference cost bound: above this many query-row × key × head products, check a sample of rows. */
const REFERENCE_BUDGET = 2e8;

export async function runKernel(
  spec: CheckedSpec,
  kernel: string,
  log: (s: string) => void,
): Promise<RunResult> {
  const missing = webGpuMissing();
  if (missing) throw new Error(missing);
  let device: WebGpuDevice;
  try {
    device = await defaultDevice();
  } catch (e) {
    throw new Error(`WebGPU is present but gave no device: ${(e as Error).message}`);
  }
  const a = device.adapter;
  const adapter = [a.vendor, a.architecture, a.description].filter(Boolean).join(" ") || "unknown adapter";
  log(`compiling ${kernel} on ${adapter}…`);
  const attn = await compileWgsl(spec, { kernel, device });
  try {
    const ks = attn.kernel;
    const n = seqLen(ks.layout);
    const perRow = n * ks.layout.heads * ks.layout.batch * ks.layout.headDim;
    const sample = Math.max(1, Math.floor(REFERENCE_BUDGET / perRow));
    const rows =
      sample >= n ? undefined : Array.from({ length: sample }, (_, i) => Math.floor((i * n) / sample));
    log(
      `running and checking ${rows ? `${rows.length} sampled rows` : `all ${n} rows`} against the float64 reference…`,
    );
    const check = await checkWgsl(attn, { seed: 1, rows });
    const tolerance = attn.compiled.storage === "f16" ? 1e-2 : 1e-4;
    log("timing…");
    const { ms, timing } = await time(attn, device);
    return {
      relError: check.relError,
      tolerance,
      ok: check.relError < tolerance && check.unwritten === 0 && check.nonFinite === 0 && check.maskedRowsOk,
      rowsChecked: check.rows,
      seqLen: n,
      storage: attn.compiled.storage,
      ms,
      timing,
      adapter,
    };
  } finally {
    attn.free();
  }
}

async function time(
  attn: Awaited<ReturnType<typeof compileWgsl>>,
  device: WebGpuDevice,
): Promise<{ ms: number; timing: RunResult["timing"] }> {
  const { batch, seqLen: n, heads, kvHeads, headDim: d } = attn.ir;
  const storage = attn.compiled.storage;
  const q = device.upload(randomArray(batch * n * heads * d, 11), storage);
  const k = device.upload(randomArray(batch * n * kvHeads * d, 12), storage);
  const v = device.upload(randomArray(batch * n * kvHeads * d, 13), storage);
  const out = device.empty(batch * n * heads * d, storage);
  try {
    if (device.timestamps) {
      const t = await attn.time(q, k, v, out, { reps: 5, warmup: 1 });
      // Browsers may quantize timestamps (to 100 µs in Chrome); a zero median means "too fast to see".
      if (t.medianNs > 0) return { ms: t.medianNs / 1e6, timing: "gpu timestamps" };
    }
    await attn.run(q, k, v, out);
    await attn.finish();
    const times: number[] = [];
    for (let i = 0; i < 3; i++) {
      const t0 = performance.now();
      await attn.run(q, k, v, out);
      await attn.finish();
      times.push(performance.now() - t0);
    }
    times.sort((x, y) => x - y);
    return { ms: times[1]!, timing: "wall clock" };
  } finally {
    for (const t of [q, k, v, out]) t.buffer.destroy();
  }
}
