import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 60_000,
    // Property and fuzz tests are CPU-bound; two workers match the CI machine's two cores.
    maxWorkers: 2,
  },
});
