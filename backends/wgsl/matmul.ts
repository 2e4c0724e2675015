// The WGSL tiled matrix product: C = act(alpha · A·Bᵀ + bias) + beta · C, batched with strides.
// What varies per shader is its "shape class" (storage type, B's orientation, tiling); sizes, leading
// dimensions, offsets, batch strides, alpha, beta, the bias switch and the activation are uniform
// parameters, so one pipeline serves every product of a class. Same options and caps in →
// byte-identical source out. No Node APIs: the emitter also runs in a browser.
import type { WgslCaps, WgslLimits, WgslStorage } from "./target.ts";
import { ACTIVATION_CODES, LOAD_B_PLAIN, LOAD_B_TRANSPOSED, MATMUL_TEMPLATE } from "./matmulTemplate.ts";
import { unrollLoops } from "./unroll.ts";

export type MatmulActivation = keyof typeof ACTIVATION_CODES;

/** Workgroup TX × TY invocations, each RM × RN outputs; K steps of BK through workgroup memory. */
export interface MatmulTiling {
  readonly tx: number;
  readonly ty: number;
  readonly rm: number;
  readonly rn: number;
  readonly bk: number;
}

export interface MatmulShapeClass {
  readonly storage: WgslStorage;
  /** B stored [N, K] (a linear layer's weight [out, in]); false: [K, N]. */
  readonly transB: boolean;
}

export interface MatmulKernelSource {
  readonly entry: string;
  readonly source: string;
  readonly tiling: MatmulTiling;
  /** Output tile of one workgroup. */
  readonly tileM: number;
  readonly tileN: number;
  readonly workgroupBytes: number;
  readonly features: readonly string[];
  readonly key: string;
}

/** Byte size of `struct Params` in the template: twenty 32-bit fields. */
export const MATMUL_PARAMS_BYTES = 80;

/** Bindings of every matmul shader: params, A, B, bias, C. */
export const MATMUL_BINDINGS = [
  "uniform",
  "read-only-storage",
  "read-only-storage",
  "read-only-storage",
  "storage",
] as const;

/**
 * Candidate tilings, best first: 128×128 tiles of 8×8 per invocation (16.5 KB of workgroup memory, more
 * than WebGPU's default 16 KB), then 64×64 tiles of 4×4, then smaller workgroups. On the H100 through
 * Vulkan (2026-11-23, f32, DiT linear shapes at M = 4096) 8×8 ran at 25.5–29.5 TFLOP/s, 4×4 at 22.9–23.9.
 */
const TILINGS: readonly MatmulTiling[] = [
  { tx: 16, ty: 16, rm: 8, rn: 8, bk: 16 },
  { tx: 16, ty: 16, rm: 4, rn: 4, bk: 16 },
  { tx: 16, ty: 8, rm: 4, rn: 4, bk: 16 },
  { tx: 8, ty: 8, rm: 4, rn: 4, bk: 16 },
  { tx: 8, ty: 8, rm: 2, rn: 2, bk: 8 },
];

export function matmulWorkgroupBytes(t: MatmulTiling): number {
  return t.bk * (t.ty * t.rm + 1) * 4 + t.bk * (t.tx * t.rn + 1) * 4;
}

/** Why a tiling cannot run with these limits (each reason names the limit). */
export function matmulTilingProblems(t: MatmulTiling, limits: WgslLimits): string[] {
  const out: string[] = [];
  const threads = t.tx * t.ty;
  if (threads > limits.maxComputeInvocationsPerWorkgroup)
    out.push(
      `${threads} invocations exceed maxComputeInvocationsPerWorkgroup (${limits.maxComputeInvocationsPerWorkgroup})`,
    );
  if (t.tx > limits.maxComputeWorkgroupSizeX)
    out.push(`workgroup width ${t.tx} exceeds maxComputeWorkgroupSizeX (${limits.maxComputeWorkgroupSizeX})`);
  const bytes = matmulWorkgroupBytes(t);
  if (bytes > limits.maxComputeWorkgroupStorageSize)
    out.push(
      `needs ${bytes} bytes of workgroup memory, more than maxComputeWorkgroupStorageSize (${limits.maxComputeWorkgroupStorageSize})`,
    );
  if ((t.ty * t.rm * t.bk) % threads !== 0 || (t.tx * t.rn * t.bk) % threads !== 0)
    out.push(
      `tiles of ${t.ty * t.rm}×${t.bk} and ${t.tx * t.rn}×${t.bk} do not split evenly over ${threads} invocations`,
    );
  if (limits.maxStorageBuffersPerShaderStage < 4)
    out.push(
      `needs 4 storage buffers, more than maxStorageBuffersPerShaderStage (${limits.maxStorageBuffersPerShaderStage})`,
    );
  return out;
}

export class MatmulConfigError extends Error {
  override readonly name = "MatmulConfigError";
}

/** The best tiling these limits allow; throws naming the limits when none does. */
export function chooseMatmulTiling(limits: WgslLimits): MatmulTiling {
  for (const t of TILINGS) if (!matmulTilingProblems(t, limits).length) return t;
  const smallest = TILINGS[TILINGS.length - 1]!;
  throw new MatmulConfigError(
    `no WGSL matmul tiling fits the device: ${matmulTilingProblems(smallest, limits).join("; ")}`,
  );
}

export function matmulKey(c: MatmulShapeClass, t: MatmulTiling): string {
  return `${c.storage}_${c.transB ? "nt" : "nn"}_${t.tx}x${t.ty}_${t.rm}x${t.rn}_k${t.bk}`;
}

export function emitMatmul(
  shape: MatmulShapeClass,
  caps: WgslCaps,
  tiling: MatmulTiling = chooseMatmulTiling(caps.limits),
): MatmulKernelSource {
  if (shape.storage === "f16" && !caps.f16)
    throw new MatmulConfigError(
      "f16 storage needs the shader-f16 feature, which the device lacks (on NVIDIA through Dawn: open the device with the toggle vulkan_enable_f16_on_nvidia)",
    );
  const problems = matmulTilingProblems(tiling, caps.limits);
  if (problems.length)
    throw new MatmulConfigError(`WGSL matmul tiling ${JSON.stringify(tiling)}: ${problems.join("; ")}`);
  const t = tiling;
  const threads = t.tx * t.ty;
  const bm = t.ty * t.rm;
  const bn = t.tx * t.rn;
  const key = matmulKey(shape, t);
  const entry = `tilec_matmul_${key}`;
  const consts = [
    `// Generated by tilec: C = act(alpha·A·B${shape.transB ? "ᵀ" : ""} + bias) + beta·C, ${shape.storage} storage, f32 accumulation.`,
    `// Tile ${bm}×${bn}×${t.bk}, ${t.tx}×${t.ty} invocations of ${t.rm}×${t.rn} outputs; ${matmulWorkgroupBytes(t)} bytes of workgroup memory.`,
    ...(shape.storage === "f16" ? ["enable f16;"] : []),
    `alias st = ${shape.storage};`,
    `const TX: u32 = ${t.tx}u;`,
    `const TY: u32 = ${t.ty}u;`,
    `const WG: u32 = ${threads}u;`,
    `const RM: u32 = ${t.rm}u;`,
    `const RN: u32 = ${t.rn}u;`,
    `const BM: u32 = ${bm}u;`,
    `const BN: u32 = ${bn}u;`,
    `const BK: u32 = ${t.bk}u;`,
    `const BMP: u32 = ${bm + 1}u; // padded k-major rows`,
    `const BNP: u32 = ${bn + 1}u;`,
    `const LOADS_A: u32 = ${(bm * t.bk) / threads}u;`,
    `const LOADS_B: u32 = ${(bn * t.bk) / threads}u;`,
  ];
  const body = MATMUL_TEMPLATE.replace("{{LOAD_B}}", shape.transB ? LOAD_B_TRANSPOSED : LOAD_B_PLAIN).replace(
    "{{ENTRY}}",
    entry,
  );
  const source = `${consts.join("\n")}\n\n${unrollLoops(body, {
    RM: t.rm,
    RN: t.rn,
    LOADS_A: (bm * t.bk) / threads,
    LOADS_B: (bn * t.bk) / threads,
  })}`;
  return {
    entry,
    source,
    tiling: t,
    tileM: bm,
    tileN: bn,
    workgroupBytes: matmulWorkgroupBytes(t),
    features: shape.storage === "f16" ? ["shader-f16"] : [],
    key,
  };
}

/** Where an operand lives: element offset, leading dimension, batch strides (outer, inner). */
export interface MatmulOperand {
  readonly offset?: number;
  readonly ld: number;
  readonly stride?: readonly [number, number];
}

export interface MatmulCall {
  readonly m: number;
  readonly n: number;
  readonly k: number;
  /** Batch as outer × inner (e.g. samples × heads); default 1 × 1. */
  readonly batch?: readonly [number, number];
  readonly a: MatmulOperand;
  readonly b: MatmulOperand;
  readonly c: MatmulOperand;
  readonly biasOffset?: number;
  readonly hasBias?: boolean;
  readonly alpha?: number;
  readonly beta?: number;
  readonly activation?: MatmulActivation;
}

/** Packs `struct Params` of the template for one call. */
export function packMatmulParams(call: MatmulCall): ArrayBuffer {
  const buf = new ArrayBuffer(MATMUL_PARAMS_BYTES);
  const u = new Uint32Array(buf);
  const f = new Float32Array(buf);
  const [, inner] = call.batch ?? [1, 1];
  const s = (o: MatmulOperand) => o.stride ?? [0, 0];
  u.set([call.m, call.n, call.k, inner, call.a.ld, call.b.ld, call.c.ld, 0]);
  f[7] = call.alpha ?? 1;
  u.set([call.a.offset ?? 0, call.b.offset ?? 0, call.c.offset ?? 0, call.biasOffset ?? 0], 8);
  u.set([...s(call.a), ...s(call.b), ...s(call.c)], 12);
  f[18] = call.beta ?? 0;
  u[19] = (call.hasBias ? 1 : 0) | (ACTIVATION_CODES[call.activation ?? "none"] << 1);
  return buf;
}

/** Workgroups of one call: (⌈N / tileN⌉, ⌈M / tileM⌉, batch). */
export function matmulGrid(
  call: MatmulCall,
  k: Pick<MatmulKernelSource, "tileM" | "tileN">,
): [number, number, number] {
  const [outer, inner] = call.batch ?? [1, 1];
  return [Math.ceil(call.n / k.tileN), Math.ceil(call.m / k.tileM), outer * inner];
}
