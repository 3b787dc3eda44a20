import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { CLUSTER_NAME_SETTING, checkClusterName } from "../cluster-defaults.ts";
import { ConfigErrors, InvalidArgumentError } from "../errors.ts";
import { configMarkdownTable, describeConfig } from "./config-docs.ts";
import { environmentName, loadConfig } from "./config-loader.ts";

const SCHEMA = z
  .object({
    model: z.string().min(1).meta({ description: "checkpoint directory" }),
    port: z.int().min(0).max(65535).default(50051).meta({ description: "port" }),
    batching: z.boolean().default(true).meta({ description: "batch decode steps" }),
    codec: z.enum(["fp32", "fp16"]).default("fp16").meta({ description: "codec" }),
    exitLayers: z.array(z.int().min(1)).optional().meta({ description: "exit layers" }),
  })
  .strict();

const dir = mkdtempSync(join(tmpdir(), "tandem-config-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const file = (contents: object) => {
  const path = join(dir, `${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(path, JSON.stringify(contents));
  return path;
};
const errorsOf = (run: () => unknown): string[] => {
  try {
    run();
  } catch (error) {
    if (error instanceof ConfigErrors) return error.errors.map((e) => e.message);
    throw error;
  }
  return [];
};

describe("program configuration", () => {
  it("takes the command line over the environment over the file over the default", () => {
    const config = loadConfig(SCHEMA, {
      file: file({ model: "from-file", port: 1, codec: "fp32" }),
      env: { T_PORT: "2", T_BATCHING: "false" },
      envPrefix: "T",
      overrides: { port: "3" },
    });
    expect(config).toEqual({ model: "from-file", port: 3, batching: false, codec: "fp32" });
  });

  it("reads lists from text (environment, flags, or a file's string) and from JSON lists", () => {
    const base = { env: {}, envPrefix: "T", overrides: { model: "m" } };
    expect(loadConfig(SCHEMA, { ...base, env: { T_EXIT_LAYERS: "2, 3" } }).exitLayers).toEqual([2, 3]);
    expect(loadConfig(SCHEMA, { ...base, file: file({ exitLayers: [4] }) }).exitLayers).toEqual([4]);
    expect(loadConfig(SCHEMA, { ...base, file: file({ exitLayers: "5,6" }) }).exitLayers).toEqual([5, 6]);
  });

  it("reports every bad setting at once, each naming the key and where the value came from", () => {
    const path = file({ port: 70000, colour: "blue" });
    expect(
      errorsOf(() =>
        loadConfig(SCHEMA, {
          file: path,
          env: { T_BATCHING: "maybe", T_EXIT_LAYERS: "2,x" },
          envPrefix: "T",
        }),
      ).sort(),
    ).toEqual(
      [
        `colour: is not a known key (known: model, port, batching, codec, exitLayers) (from ${path})`,
        "model: is required: checkpoint directory (from the configuration)",
        `port: must be ≤ 65535, got 70000 (from ${path})`,
        'batching: must be true or false, got "maybe" (from $T_BATCHING)',
        'exitLayers[1]: must be an integer, got "x" (from $T_EXIT_LAYERS)',
      ].sort(),
    );
  });

  it("names a file that is not JSON", () => {
    const path = join(dir, "broken.json");
    writeFileSync(path, "{ model: ");
    expect(errorsOf(() => loadConfig(SCHEMA, { file: path, env: {}, envPrefix: "T" }))[0]).toMatch(
      new RegExp(`^config: cannot be read as JSON: .+ \\(from ${path}\\)$`),
    );
  });

  it("words a bad cluster name as checkClusterName does, so the one rule reads the same everywhere", () => {
    const schema = z.object({ cluster: CLUSTER_NAME_SETTING }).strict();
    const rule = 'cluster: must be text matching /^[A-Za-z0-9_-]{1,64}$/, got "a.b"';
    expect(
      errorsOf(() => loadConfig(schema, { env: {}, envPrefix: "T", overrides: { cluster: "a.b" } })),
    ).toEqual([`${rule} (from the command line)`]);
    expect(() => checkClusterName("a.b")).toThrow(
      new InvalidArgumentError("cluster", rule.slice("cluster: ".length)),
    );
  });

  it("derives environment names and documents every key from the schema", () => {
    expect(environmentName("TANDEM_EDGE", "cloudDeadlineMs")).toBe("TANDEM_EDGE_CLOUD_DEADLINE_MS");
    expect(describeConfig(SCHEMA, "T")).toMatch(/--port\s+T_PORT\s+port \(default 50051; \[0, 65535\]\)/);
    expect(configMarkdownTable(SCHEMA, "T").split("\n")).toContain(
      "| `codec` | `T_CODEC` | `fp16` | fp32, fp16 | codec |",
    );
  });
});
