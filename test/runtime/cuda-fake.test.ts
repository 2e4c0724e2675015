// Runs the GPU suite (cuda-gpu.test.ts) against a fake CUDA driver + NVRTC
// (runtime/cuda/native/testing/fake_cuda.c), so the addon's launch
// plumbing, handles, error naming and memory accounting are tested on
// machines without a GPU. Needs a C compiler ($CC or cc).
import { describe, it } from "vitest";
import { useFakeCuda } from "./fake-cuda.ts";

const skipReason = useFakeCuda();
if (skipReason === undefined) {
  await import("./cuda-gpu.test.ts");
} else {
  describe.skip(`CUDA on the fake driver (skipped: ${skipReason})`, () => {
    it("runs the GPU suite", () => {});
  });
}
