import { defineConfig } from "vitest/config";

export default defineConfig({
  // Tests import packages by name and run their TypeScript sources ("development" export
  // condition); programs they start as processes run the compiled build, which
  // test/global-setup.ts brings up to date first.
  resolve: { conditions: ["development"] },
  ssr: { resolve: { conditions: ["development"], externalConditions: ["development"] } },
  test: {
    include: ["**/*.test.ts"],
    exclude: ["**/node_modules/**", "**/dist/**", ".scratch/**"],
    globalSetup: ["test/global-setup.ts"],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // Two cores: onnxruntime sessions are CPU-heavy, so keep file-level parallelism low.
    pool: "forks",
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
  },
});
