// The WebGPU runtime for bundling into a browser page (the Node device lives in node.ts).
export { compileWgsl, defaultDevice, kernelIR, WgslAttention } from "./attention.ts";
export type { WgslCompileOptions, WgslRunOptions, WgslTiming } from "./attention.ts";
export { checkWgsl } from "./check.ts";
export { WebGpuDevice, WebGpuDeviceLost, WebGpuError, WgslCompileError } from "./device.ts";
export type { GpuTensor } from "./device.ts";
export { emitWgsl, wgslManifest } from "../../backends/wgsl/emit.ts";
