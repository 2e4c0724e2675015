// WebGPU in Node through Dawn's `webgpu` package: the only Node-specific file of the WebGPU runtime,
// kept apart so the rest bundles for a browser (where navigator.gpu gives the adapter).
//   backend "null":   Dawn's shader compiler and validation, no driver (CI without a GPU).
//   backend "vulkan": a real GPU, or SwiftShader (a CPU Vulkan driver) through `icd`.
import { existsSync } from "node:fs";
import { create, globals } from "webgpu";
import { WebGpuDevice, WebGpuError } from "./device.ts";

/** Where Debian's chromium-common puts SwiftShader's Vulkan driver (needs libvulkan1 too). */
export const SWIFTSHADER_ICDS = [
  "/usr/lib/chromium/vk_swiftshader_icd.json",
  "/usr/lib/chromium-browser/vk_swiftshader_icd.json",
];

export function findSwiftShader(): string | undefined {
  return SWIFTSHADER_ICDS.find((p) => existsSync(p));
}

export interface NodeDeviceOptions {
  /** Dawn backend ("null", "vulkan", …); Dawn's platform default when omitted. */
  readonly backend?: string;
  /** A Vulkan ICD manifest (e.g. SwiftShader's) the Vulkan loader should use instead of the system's. */
  readonly icd?: string;
  /**
   * Dawn toggles to enable, e.g. "disable_robustness" (with "allow_unsafe_apis") for benchmarks, or
   * "vulkan_enable_f16_on_nvidia" (Dawn withholds shader-f16 from NVIDIA's Vulkan driver unless asked,
   * crbug.com/tint/2164). Those listed in TILEC_DAWN_TOGGLES (comma-separated) are added.
   */
  readonly enableToggles?: readonly string[];
  readonly powerPreference?: GPUPowerPreference;
  /** Device features to ask for where offered (default: shader-f16, subgroups, timestamp-query). */
  readonly features?: readonly GPUFeatureName[];
}

let installed = false;

function envToggles(): string[] {
  return (process.env.TILEC_DAWN_TOGGLES ?? "").split(",").filter(Boolean);
}

/** Opens a WebGPU device through Dawn; throws with the reason when no adapter is found. */
export async function openNodeDevice(options: NodeDeviceOptions = {}): Promise<WebGpuDevice> {
  if (!installed) {
    // GPUBufferUsage, GPUShaderStage, GPUMapMode, … as in a browser.
    Object.assign(globalThis, globals);
    installed = true;
  }
  // The Vulkan loader reads this when Dawn creates its Vulkan instance, i.e. at requestAdapter;
  // it is restored afterwards so other devices of the process see the system's drivers.
  const previousIcd = process.env.VK_ICD_FILENAMES;
  if (options.icd) process.env.VK_ICD_FILENAMES = options.icd;
  const flags: string[] = [];
  if (options.backend) flags.push(`backend=${options.backend}`);
  const toggles = [...new Set([...envToggles(), ...(options.enableToggles ?? [])])];
  if (toggles.length) flags.push(`enable-dawn-features=${toggles.join(",")}`);
  const gpu = create(flags);
  let adapter: GPUAdapter | null;
  try {
    adapter = await gpu.requestAdapter({ powerPreference: options.powerPreference });
  } catch (e) {
    throw new WebGpuError(`Dawn found no adapter (${flags.join(" ") || "default backend"}): ${String(e)}`);
  } finally {
    if (options.icd) {
      if (previousIcd === undefined) delete process.env.VK_ICD_FILENAMES;
      else process.env.VK_ICD_FILENAMES = previousIcd;
    }
  }
  if (!adapter)
    throw new WebGpuError(
      `Dawn found no adapter (${flags.join(" ") || "default backend"})` +
        (options.backend === "vulkan" || options.icd
          ? ": is libvulkan1 installed, and a Vulkan driver (ICD) present?"
          : ""),
    );
  return WebGpuDevice.fromAdapter(adapter, { features: options.features, keepAlive: gpu });
}

/** SwiftShader's device, or why there is none (for tests that skip with a reason). */
export async function openSwiftShader(): Promise<{ device?: WebGpuDevice; reason?: string }> {
  const icd = findSwiftShader();
  if (!icd)
    return {
      reason: `SwiftShader not found (${SWIFTSHADER_ICDS[0]}): apt-get install chromium-common libvulkan1`,
    };
  try {
    return { device: await openNodeDevice({ backend: "vulkan", icd }) };
  } catch (e) {
    return { reason: (e as Error).message };
  }
}
