// Runs the GPU suite (cuda-gpu.test.ts) against a fake CUDA driver + NVRTC
// (runtime/cuda/native/testing/fake_cuda.c), so the addon's launch
// plumbing, handles, error naming and memory accounting are tested on
// machines without a GPU. Needs a C compiler ($CC or cc).
import { spawnSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, it } from "vitest";
import { tryLoadAddon } from "../../runtime/cuda/addon.ts";

const FAKE_DRIVER_VERSION = 99990;
const source = fileURLToPath(new URL("../../runtime/cuda/native/testing/fake_cuda.c", import.meta.url));

function setUpFake(): string | undefined {
  const loaded = tryLoadAddon();
  if ("error" in loaded) return loaded.error;
  const cc = process.env.CC || "cc";
  const lib = join(mkdtempSync(join(tmpdir(), "tilec-fake-cuda-")), "libtilec_fake_cuda.so");
  const r = spawnSync(cc, ["-shared", "-fPIC", "-O1", "-o", lib, source], { encoding: "utf8" });
  if (r.error || r.status !== 0)
    return `cannot compile the fake driver with ${cc}: ${r.error?.message ?? r.stderr}`;
  // The addon reads these on its first driver/NVRTC load; this test file
  // runs in its own process (vitest's default forks pool), so that is now.
  process.env.TILEC_LIBCUDA_PATH = lib;
  process.env.TILEC_NVRTC_PATH = lib;
  process.env.TILEC_FAKE_CUDA = "1";
  const a = loaded.addon.available();
  if (a.driverVersion !== FAKE_DRIVER_VERSION) {
    return "the driver was already loaded in this process (run vitest with isolated forks)";
  }
  return undefined;
}

const skipReason = setUpFake();
if (skipReason === undefined) {
  await import("./cuda-gpu.test.ts");
} else {
  describe.skip(`CUDA on the fake driver (skipped: ${skipReason})`, () => {
    it("runs the GPU suite", () => {});
  });
}
