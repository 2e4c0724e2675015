// The CUDA DiT as a sampler's velocity model: the sampler's time t ∈ [0, 1] becomes the model's
// timestep t·timestepScale (OSP: 1000), and the step index picks the model section's kernels.
import type { DeviceBuffer } from "../cuda/device.ts";
import { DeviceBuffer as Buffer } from "../cuda/device.ts";
import type { CudaDit, ForwardOptions } from "../dit/cuda.ts";
import { deviceOps, type VectorOps } from "./ops.ts";
import type { VelocityModel } from "./samplers.ts";

export interface DitModel {
  readonly model: VelocityModel<DeviceBuffer>;
  readonly ops: VectorOps<DeviceBuffer>;
  /** Self-attention milliseconds per evaluation, when created with timeAttention. */
  readonly attentionMs: number[];
  free(): void;
}

export function ditVelocityModel(
  dit: CudaDit,
  o: { timestepScale?: number; timeAttention?: boolean } = {},
): DitModel {
  // The whole latent, or a sequence-parallel rank's token rows (CudaDitOptions.tokens).
  const out = Buffer.alloc(dit.latentLength(dit.config.outChannels) * 4, "fp32");
  const scale = o.timestepScale ?? 1000;
  const attentionMs: number[] = [];
  const model: VelocityModel<DeviceBuffer> = (x, t, info) => {
    const f: ForwardOptions = { step: info.step, steps: info.steps, timeAttention: o.timeAttention };
    const r = dit.forward(
      x,
      Array.from({ length: dit.batch }, () => t * scale),
      out,
      f,
    );
    if (r.attentionMs !== undefined) attentionMs.push(r.attentionMs);
    return out;
  };
  return { model, ops: deviceOps(dit.elementKernels), attentionMs, free: () => out.free() };
}
