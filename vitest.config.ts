import { existsSync } from "node:fs";
import { defineConfig } from "vitest/config";

// On a machine with an NVIDIA GPU, test files run one at a time: the leak tests read the device's
// free memory, which another test file allocating at the same time would change.
const gpu = existsSync("/dev/nvidiactl");

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 60_000,
    // Property and fuzz tests are CPU-bound; two workers match the CI machine's two cores.
    maxWorkers: 2,
    fileParallelism: !gpu,
  },
});
