import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: [
      "shared/**/*.test.ts",
      "runtime/**/*.test.ts",
      "edge-agent/**/*.test.ts",
      "services/**/*.test.ts",
      "cli/**/*.test.ts",
      "test/**/*.test.ts",
      "bench/**/*.test.ts",
    ],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // Two cores: onnxruntime sessions are CPU-heavy, so keep file-level parallelism low.
    pool: "forks",
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
  },
});
