// Points the addon at the fake CUDA driver + NVRTC (runtime/cuda/native/testing/fake_cuda.c), compiled
// here with $CC, so GPU code paths run on machines without a GPU. Call it before anything loads the
// driver: the addon reads these variables on its first load, and vitest runs each test file in its
// own process. Returns why it could not, or undefined.
import { spawnSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { tryLoadAddon } from "../../runtime/cuda/addon.ts";

const FAKE_DRIVER_VERSION = 99990;
const source = fileURLToPath(new URL("../../runtime/cuda/native/testing/fake_cuda.c", import.meta.url));

export function useFakeCuda(options: { deviceCount?: number } = {}): string | undefined {
  const loaded = tryLoadAddon();
  if ("error" in loaded) return loaded.error;
  const cc = process.env.CC || "cc";
  const lib = join(mkdtempSync(join(tmpdir(), "tilec-fake-cuda-")), "libtilec_fake_cuda.so");
  const r = spawnSync(cc, ["-shared", "-fPIC", "-O1", "-o", lib, source], { encoding: "utf8" });
  if (r.error || r.status !== 0)
    return `cannot compile the fake driver with ${cc}: ${r.error?.message ?? r.stderr}`;
  process.env.TILEC_LIBCUDA_PATH = lib;
  process.env.TILEC_NVRTC_PATH = lib;
  process.env.TILEC_FAKE_CUDA = "1";
  if (options.deviceCount) process.env.TILEC_FAKE_DEVICE_COUNT = String(options.deviceCount);
  const a = loaded.addon.available();
  if (a.driverVersion !== FAKE_DRIVER_VERSION) {
    return "the driver was already loaded in this process (run vitest with isolated forks)";
  }
  return undefined;
}
