// tilec's CUDA runtime: entry point.
//
//   import { cuda } from "../runtime/cuda/index.ts";
//   if (!cuda.available().ok) ...;
//   const dev = cuda.open();
import { tryLoadAddon } from "./addon.ts";
import { CudaDevice } from "./device.ts";

export interface CudaAvailability {
  ok: boolean;
  /** Why CUDA can't be used: addon not built, no driver, no device... */
  reason?: string;
}

/**
 * Whether a CUDA device can be used. Never throws, and works when the addon
 * isn't built (then `reason` says how to build it).
 */
export function available(): CudaAvailability {
  const r = tryLoadAddon();
  if ("error" in r) return { ok: false, reason: r.error };
  try {
    const a = r.addon.available();
    return a.ok ? { ok: true } : { ok: false, reason: a.reason ?? "CUDA unavailable" };
  } catch (e) {
    return { ok: false, reason: e instanceof Error ? e.message : String(e) };
  }
}

export const cuda = {
  available,
  open: (ordinal?: number): CudaDevice => CudaDevice.open(ordinal),
};

export { addonBuilt, addonPath, loadAddon, tryLoadAddon } from "./addon.ts";
export type { DeviceInfo, FuncAttributes, NativeAddon } from "./addon.ts";
export { packArgs, type KernelArg, type PackedArgs, type HasDevicePtr } from "./args.ts";
export {
  DTYPE_BYTES,
  f32ToHalfBits,
  halfBitsToF32,
  f32ToHalfBitsJs,
  halfBitsToF32Js,
  type DType,
  type HalfDType,
  type HostArray,
} from "./dtype.ts";
export {
  CudaDevice,
  CudaEvent,
  CudaEvent as Event,
  CudaKernel,
  CudaModule,
  DeviceBuffer,
  PhaseTimer,
  Stream,
  timeMs,
  type Dim3,
  type LaunchConfig,
} from "./device.ts";
export {
  compileNvrtc,
  compileNvrtcAsync,
  nvrtcAvailable,
  nvrtcOptionList,
  nvrtcVersion,
  ptxText,
  type NvrtcError,
  type NvrtcOptions,
  type NvrtcOutput,
} from "./nvrtc.ts";
export {
  compileNvrtcCached,
  compileNvrtcCachedAsync,
  defaultNvrtcCacheDir,
  NvrtcCache,
  nvrtcCacheKey,
  type CachedOutput,
} from "./nvrtcCache.ts";
export {
  packLaunch,
  contiguousStrides,
  type BoundTensor,
  type LaunchBindings,
  type PackedLaunch,
  type EncodeTensorMap,
} from "./launch.ts";
export {
  KernelOperations,
  type CallShape,
  type KernelFacts,
  type LoadedModule,
  type OperationBuffer,
  type OperationDevice,
  type OperationModule,
} from "./operations.ts";
