// An Open-Sora-Plan-v1.2-style video DiT on tilec's attention kernels (CUDA and WebGPU), with a float64 CPU twin.
export { parseDitConfig, tokenGrid, OSP_V12, DitConfigError, type DitConfig } from "./config.ts";
export {
  weightSpecs,
  checkWeights,
  validateWeights,
  formatWeightReport,
  memoryWeights,
  safetensorsWeights,
  randomWeights,
  WeightError,
  type WeightSource,
  type WeightReport,
} from "./weights.ts";
export { forwardCpu, patchify, unpatchify, type DitInputs, type LayerMask } from "./cpu.ts";
export {
  CudaDit,
  runSelfAttention,
  type CudaDitOptions,
  type SelfAttention,
  type SelfAttentionCall,
} from "./cuda.ts";
export { WebGpuDit, type WebGpuDitOptions } from "./webgpu.ts";
