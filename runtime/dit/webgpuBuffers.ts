/// <reference types="@webgpu/types" />
// Device storage of the WebGPU DiT (all f32): one tensor per checkpoint parameter, keyed by its
// diffusers name, and the activations of one forward; plus the RoPE angle table and the small
// launch-shape helpers the forward's dispatches share.
import type { GpuTensor, WebGpuDevice } from "../webgpu/device.ts";
import { prepareDispatch, type ComputeKernel, type PreparedDispatch } from "../webgpu/dispatch.ts";
import type { DitConfig } from "./config.ts";
import { FLAT_WG } from "./kernels/dit.wgsl.ts";
import { weightSpecs } from "./weights.ts";

export type WebGpuWeights = Map<string, GpuTensor>;

/** Every parameter of the config as an f32 tensor (NaN until loaded, so a missed upload shows). */
export function allocWebGpuWeights(dev: WebGpuDevice, c: DitConfig): WebGpuWeights {
  return new Map(
    weightSpecs(c).map(
      (s) =>
        [
          s.name,
          dev.empty(
            s.shape.reduce((a, b) => a * b, 1),
            "f32",
          ),
        ] as const,
    ),
  );
}

export interface WebGpuActivations {
  tfeat: GpuTensor;
  condH: GpuTensor;
  embedded: GpuTensor;
  condS: GpuTensor;
  t6: GpuTensor;
  patches: GpuTensor;
  x: GpuTensor;
  xn: GpuTensor;
  q: GpuTensor;
  k: GpuTensor;
  v: GpuTensor;
  o: GpuTensor;
  y: GpuTensor;
  ffh: GpuTensor;
  scores: GpuTensor;
  textIn: GpuTensor;
  textH: GpuTensor;
  text: GpuTensor;
  projOut: GpuTensor;
  /** RoPE cos then sin, [(t | h | w axis offset) + position, headDim / 6]. */
  angles: GpuTensor;
}

export function allocWebGpuActivations(
  dev: WebGpuDevice,
  c: DitConfig,
  batch: number,
  tokens: number,
  textTokens: number,
  grid: { frames: number; height: number; width: number },
): WebGpuActivations {
  const B = batch;
  const M = B * tokens;
  const C = c.hidden;
  const p2 = c.patchSize * c.patchSize;
  const t = (n: number) => dev.empty(n, "f32");
  return {
    tfeat: t(B * c.timestepChannels),
    condH: t(B * C),
    embedded: t(B * C),
    condS: t(B * C),
    t6: t(B * 6 * C),
    patches: t(M * c.inChannels * p2),
    x: t(M * C),
    xn: t(M * C),
    q: t(M * C),
    k: t(M * C),
    v: t(M * C),
    o: t(M * C),
    y: t(M * C),
    ffh: t(M * c.ffInnerDim),
    scores: t(B * c.numHeads * tokens * textTokens),
    textIn: t(B * textTokens * c.captionChannels),
    textH: t(B * textTokens * C),
    text: t(B * textTokens * C),
    projOut: t(M * p2 * c.outChannels),
    angles: dev.upload(ropeAngles(c, grid), "f32"),
  };
}

/**
 * cos and sin of OSP's RoPE3D angles in float64: for axis a (t, h, w) and position n along it,
 * angle = n / scale_a · base^(−2j / (headDim/3)), j < headDim / 6 (math.ts's applyRope).
 */
export function ropeAngles(
  c: DitConfig,
  grid: { frames: number; height: number; width: number },
): Float64Array {
  const third = c.headDim / 3;
  const half = third / 2;
  const axes = [
    [grid.frames, c.ropeScaleT],
    [grid.height, c.ropeScaleH],
    [grid.width, c.ropeScaleW],
  ] as const;
  const positions = grid.frames + grid.height + grid.width;
  const out = new Float64Array(2 * positions * half);
  let row = 0;
  for (const [len, scale] of axes)
    for (let n = 0; n < len; n++, row++)
      for (let j = 0; j < half; j++) {
        const angle = (n / scale) * Math.pow(c.ropeBase, (-2 * j) / third);
        out[row * half + j] = Math.cos(angle);
        out[(positions + row) * half + j] = Math.sin(angle);
      }
  return out;
}

/** A uniform block of 32-bit fields: integers, except at the indices listed in `floats`. */
export function uniformBlock(
  bytes: number,
  values: readonly number[],
  floats: readonly number[] = [],
): ArrayBuffer {
  const buf = new ArrayBuffer(bytes);
  const u = new Uint32Array(buf);
  const f = new Float32Array(buf);
  values.forEach((v, i) => {
    if (floats.includes(i)) f[i] = v;
    else u[i] = v;
  });
  return buf;
}

/** `groups` workgroups as a 2D grid within maxComputeWorkgroupsPerDimension (kernels flatten wid.y·nwg.x + wid.x). */
export function grid2d(dev: WebGpuDevice, groups: number): [number, number, number] {
  const x = Math.max(1, Math.min(groups, dev.caps.limits.maxComputeWorkgroupsPerDimension));
  return [x, Math.ceil(groups / x), 1];
}

/** A dispatch of one invocation per element (n elements). */
export function flatDispatch(
  dev: WebGpuDevice,
  kernel: ComputeKernel,
  params: ArrayBuffer,
  tensors: readonly (GpuTensor | GPUBuffer)[],
  n: number,
): PreparedDispatch {
  return prepareDispatch(dev, kernel, params, tensors.map(bufferOf), grid2d(dev, Math.ceil(n / FLAT_WG)));
}

/** A dispatch of one workgroup per row. */
export function rowDispatch(
  dev: WebGpuDevice,
  kernel: ComputeKernel,
  params: ArrayBuffer,
  tensors: readonly (GpuTensor | GPUBuffer)[],
  rows: number,
): PreparedDispatch {
  return prepareDispatch(dev, kernel, params, tensors.map(bufferOf), grid2d(dev, rows));
}

function bufferOf(t: GpuTensor | GPUBuffer): GPUBuffer {
  return "buffer" in t ? t.buffer : t;
}
