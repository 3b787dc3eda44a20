/**
 * `tandem demo`: the main job on embedded defaults. Today it runs the shipped demo model
 * split in one process: the lower layers with early exits answer confident tokens, the
 * upper layers the rest; it prints the text and how many tokens never needed the upper
 * side. (It grows into a local edge agent + cloud worker + control plane.)
 */
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { runGenerate } from "./generate.ts";
import { parseIntegerOption, parseNumberOption } from "../cli-options.ts";

export const DEMO_MODEL_DIR = join(
  dirname(fileURLToPath(import.meta.url)),
  "..",
  "..",
  "models",
  "tandem-demo",
);
const DEFAULT_PROMPT = "The Python standard library";

/** The split and exits a shipped model was trained for (models/<name>/tandem.json). */
export interface ModelDeployment {
  exitLayers: number[];
  split: number;
}

export function readModelDeployment(modelDir: string): ModelDeployment {
  const raw = JSON.parse(readFileSync(join(modelDir, "tandem.json"), "utf8")) as {
    exit_layers: number[];
    recommended_split: number;
  };
  return { exitLayers: raw.exit_layers, split: raw.recommended_split };
}

export const demoCommand = {
  summary: "run the demo",
  async run(args: string[]): Promise<number> {
    const { values } = parseArgs({
      args,
      options: {
        prompt: { type: "string" },
        "max-tokens": { type: "string" },
        threshold: { type: "string" },
        model: { type: "string" },
      },
      strict: true,
    });
    const model = values.model ?? DEMO_MODEL_DIR;
    const deployment = readModelDeployment(model);
    const prompt = values.prompt ?? DEFAULT_PROMPT;
    console.error(
      `tandem demo: ${model}, edge layers [0,${deployment.split}) with exits after ${deployment.exitLayers.join(", ")}`,
    );
    process.stdout.write(prompt);
    const stats = await runGenerate(
      {
        model,
        prompt,
        maxTokens: parseIntegerOption("--max-tokens", values["max-tokens"], 48, 1),
        split: deployment.split,
        exitLayers: deployment.exitLayers,
        metric: "prob",
        threshold: parseNumberOption("--threshold", values.threshold, 0.8),
        weights: "fp32",
        threads: 1,
      },
      (text) => process.stdout.write(text),
    );
    const total = stats.edgeTokens + stats.cloudTokens;
    process.stdout.write("\n");
    console.log(
      `\n${stats.edgeTokens}/${total} tokens answered at the edge exits, ${stats.cloudTokens} by the upper layers ` +
        `(${stats.escalations} escalations carrying ${stats.positionsSent} hidden states).`,
    );
    return 0;
  },
};
