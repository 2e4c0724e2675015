// Typed launchers for the DiT's elementwise kernels (kernels/dit.cu), compiled once per process by
// NVRTC through the disk cache.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { NVRTC_OPTIONS } from "../attention.ts";
import {
  CudaDevice,
  type CudaKernel,
  type CudaModule,
  type DeviceBuffer,
  type Stream,
} from "../cuda/device.ts";
import { compileNvrtcCachedAsync } from "../cuda/nvrtcCache.ts";

export const DIT_KERNEL_SOURCE_PATH = fileURLToPath(new URL("./kernels/dit.cu", import.meta.url));

/** Activation selector of the bias kernels (the `act` argument in dit.cu). */
export const Act = { None: 0, GeluTanh: 1, Silu: 2 } as const;
export type Act = (typeof Act)[keyof typeof Act];

const THREADS = 256;
/** Grid-stride kernels: enough blocks to fill an H100 several times over, never more than needed. */
function blocksFor(n: number): number {
  return Math.max(1, Math.min(Math.ceil(n / THREADS), 132 * 16));
}

type Ptr = DeviceBuffer | null;
const ptr = (b: Ptr, offset = 0) => ({ ptr: b ? b.ptrAt(offset) : 0n });
const u64 = (n: number) => ({ u64: BigInt(n) });
const i32 = (n: number) => ({ i32: n });
const f32 = (n: number) => ({ f32: n });

/** A latent's dimensions as the kernels of dit.cu take them: B, C, T, H, W, p. */
function latentDims(d: { B: number; C: number; T: number; H: number; W: number; p: number }) {
  return [i32(d.B), i32(d.C), i32(d.T), i32(d.H), i32(d.W), i32(d.p)];
}

export class DitKernels {
  private readonly k: Record<string, CudaKernel>;

  private constructor(
    private readonly module: CudaModule,
    readonly stream: Stream | null,
  ) {
    const names = [
      "dit_patchify",
      "dit_unpatchify",
      "dit_latent_to_rows",
      "dit_rows_to_latent",
      "dit_proj_to_rows",
      "dit_norm_modulate",
      "dit_gate_residual",
      "dit_bias_act_bf16",
      "dit_bias_act_f32",
      "dit_qkv_bias_rope",
      "dit_softmax_rows",
      "dit_cast_bf16",
      "dit_lincomb",
      "dit_random_uniform",
      "dit_random_normal",
    ];
    this.k = Object.fromEntries(names.map((n) => [n, module.getKernel(n)]));
  }

  static async load(options: { cacheDir?: string; stream?: Stream | null } = {}): Promise<DitKernels> {
    const device = CudaDevice.open();
    const source = readFileSync(DIT_KERNEL_SOURCE_PATH, "utf8");
    const out = await compileNvrtcCachedAsync(source, {
      arch: device.arch,
      name: "dit.cu",
      cacheDir: options.cacheDir,
      extraOptions: NVRTC_OPTIONS,
    });
    const image = out.cubin ?? out.ptx;
    if (!image) throw new Error("NVRTC returned no code for runtime/dit/kernels/dit.cu");
    return new DitKernels(device.loadModule(image), options.stream ?? null);
  }

  private grid(name: string, n: number, args: Parameters<CudaKernel["launch"]>[1]): void {
    this.k[name]!.launch({ grid: blocksFor(n), block: THREADS, stream: this.stream }, args);
  }

  patchify(
    latent: DeviceBuffer,
    out: DeviceBuffer,
    d: { B: number; C: number; T: number; H: number; W: number; p: number },
  ): void {
    this.grid("dit_patchify", d.B * d.C * d.T * d.H * d.W, [ptr(latent), ptr(out), ...latentDims(d)]);
  }

  unpatchify(
    rows: DeviceBuffer,
    bias: DeviceBuffer,
    out: DeviceBuffer,
    d: { B: number; C: number; T: number; H: number; W: number; p: number },
  ): void {
    this.grid("dit_unpatchify", d.B * d.C * d.T * d.H * d.W, [
      ptr(rows),
      ptr(bias),
      ptr(out),
      ...latentDims(d),
    ]);
  }

  /**
   * Tokens [start, start + count) of a latent fp32 [B, C, T, H, W] as token rows fp32
   * [B, count, C·p·p] ((c, i, j) order), or back (`toLatent`): a sequence-parallel rank's share.
   */
  latentRows(
    latent: DeviceBuffer,
    rows: DeviceBuffer,
    d: { B: number; C: number; T: number; H: number; W: number; p: number; start: number; count: number },
    toLatent = false,
  ): void {
    this.grid(toLatent ? "dit_rows_to_latent" : "dit_latent_to_rows", d.B * d.count * d.C * d.p * d.p, [
      ptr(toLatent ? rows : latent),
      ptr(toLatent ? latent : rows),
      ...latentDims(d),
      i32(d.start),
      i32(d.count),
    ]);
  }

  /** proj_out rows [R, p·p·C] ((i, j, c)) + bias → token rows [R, C·p·p] ((c, i, j)). */
  projToRows(
    proj: DeviceBuffer,
    bias: DeviceBuffer,
    rows: DeviceBuffer,
    R: number,
    C: number,
    p: number,
  ): void {
    this.grid("dit_proj_to_rows", R * C * p * p, [ptr(proj), ptr(bias), ptr(rows), u64(R), i32(C), i32(p)]);
  }

  /** LayerNorm + adaLN modulation of `rows` rows (one block per row). */
  normModulate(
    x: DeviceBuffer,
    out: DeviceBuffer,
    table: DeviceBuffer,
    temb: DeviceBuffer,
    o: {
      rows: number;
      C: number;
      tokens: number;
      tembStride: number;
      chunkStride: number;
      shiftIdx: number;
      scaleIdx: number;
      eps: number;
    },
  ): void {
    this.k.dit_norm_modulate!.launch({ grid: o.rows, block: THREADS, stream: this.stream }, [
      ptr(x),
      ptr(out),
      ptr(table),
      ptr(temb),
      i32(o.C),
      i32(o.tokens),
      i32(o.tembStride),
      i32(o.chunkStride),
      i32(o.shiftIdx),
      i32(o.scaleIdx),
      f32(o.eps),
    ]);
  }

  gateResidual(
    x: DeviceBuffer,
    y: DeviceBuffer,
    bias: DeviceBuffer,
    table: DeviceBuffer | null,
    temb: DeviceBuffer | null,
    o: { rows: number; C: number; tokens: number; tembStride: number; gateIdx: number },
  ): void {
    this.grid("dit_gate_residual", o.rows * o.C, [
      ptr(x),
      ptr(y),
      ptr(bias),
      ptr(table),
      ptr(temb),
      u64(o.rows),
      i32(o.C),
      i32(o.tokens),
      i32(o.tembStride),
      i32(o.gateIdx),
    ]);
  }

  biasActBf16(
    y: DeviceBuffer,
    bias: DeviceBuffer | null,
    rows: number,
    cols: number,
    act: Act,
    offset = 0,
  ): void {
    this.grid("dit_bias_act_bf16", rows * cols, [ptr(y, offset), ptr(bias), u64(rows), i32(cols), i32(act)]);
  }

  biasActF32(
    input: DeviceBuffer,
    bias: DeviceBuffer | null,
    outF: DeviceBuffer | null,
    outB: DeviceBuffer | null,
    rows: number,
    cols: number,
    act: Act,
  ): void {
    this.grid("dit_bias_act_f32", rows * cols, [
      ptr(input),
      ptr(bias),
      ptr(outF),
      ptr(outB),
      u64(rows),
      i32(cols),
      i32(act),
    ]);
  }

  qkvBiasRope(
    q: DeviceBuffer,
    k: DeviceBuffer,
    v: DeviceBuffer,
    bias: DeviceBuffer | null,
    o: {
      M: number;
      /** Rows are token start + r % tokens of their sample. */
      tokens: number;
      start: number;
      heads: number;
      D: number;
      T: number;
      H: number;
      W: number;
      scales: readonly [number, number, number];
      base: number;
    },
  ): void {
    this.grid("dit_qkv_bias_rope", 3 * o.M * o.heads * (o.D / 2), [
      ptr(q),
      ptr(k),
      ptr(v),
      ptr(bias),
      i32(o.M),
      i32(o.tokens),
      i32(o.start),
      i32(o.heads),
      i32(o.D),
      i32(o.T),
      i32(o.H),
      i32(o.W),
      f32(1 / o.scales[0]),
      f32(1 / o.scales[1]),
      f32(1 / o.scales[2]),
      f32(Math.log2(o.base)),
    ]);
  }

  softmaxRows(scores: DeviceBuffer, probs: DeviceBuffer, rows: number, cols: number, valid: number): void {
    const warpsPerBlock = THREADS / 32;
    this.k.dit_softmax_rows!.launch(
      { grid: Math.ceil(rows / warpsPerBlock), block: THREADS, stream: this.stream },
      [ptr(scores), ptr(probs), u64(rows), i32(cols), i32(valid)],
    );
  }

  castBf16(x: DeviceBuffer, y: DeviceBuffer, n: number): void {
    this.grid("dit_cast_bf16", n, [ptr(x), ptr(y), u64(n)]);
  }

  /** out = a·x + b·y + c·z (fp32; y, z optional). */
  lincomb(
    out: DeviceBuffer,
    a: number,
    x: DeviceBuffer,
    b = 0,
    y: DeviceBuffer | null = null,
    c = 0,
    z: DeviceBuffer | null = null,
    n = out.length,
  ): void {
    this.grid("dit_lincomb", n, [ptr(out), ptr(x), f32(a), ptr(y), f32(b), ptr(z), f32(c), u64(n)]);
  }

  /** Uniform in ±scale over elements [offset, offset + n) of a bf16 or fp32 buffer. */
  randomUniform(out: DeviceBuffer, seed: number, scale: number, offset = 0, n = out.length - offset): void {
    const bf = out.dtype === "bf16";
    this.grid("dit_random_uniform", n, [
      bf ? ptr(out, offset) : ptr(null),
      bf ? ptr(null) : ptr(out, offset),
      u64(n),
      u64(seed),
      f32(scale),
    ]);
  }

  randomNormal(out: DeviceBuffer, seed: number): void {
    this.grid("dit_random_normal", out.length, [ptr(out), u64(out.length), u64(seed)]);
  }

  free(): void {
    this.module.unload();
  }
}
