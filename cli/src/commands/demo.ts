/**
 * `tandem demo`: the main job on embedded defaults. Starts a cloud worker and an edge
 * agent on the shipped demo model, both serving real gRPC on loopback, then asks the
 * edge agent's public API to continue a few prompts, printing each token as it arrives
 * (cloud-answered tokens highlighted) and what the collaboration cost.
 */
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import { pino } from "pino";
import { z } from "zod";
import { CheckpointError, type Logger, parseOrThrow, UsageError } from "@tandem/common";
import { startCloudWorker } from "@tandem/cloud-worker";
import { EDGE_CONFIG_SCHEMA, startEdgeAgent } from "@tandem/edge-agent";
import { loadTandemProtos, type GenerateEvent__Output } from "@tandem/proto";
import { CODEC_NAMES, RUNTIME_SETTINGS, readDeployment } from "@tandem/runtime";
import type { CommandDefinition } from "../command.ts";

const DEMO_MODEL_DIR = join(
  dirname(fileURLToPath(import.meta.url)),
  "..",
  "..",
  "..",
  "models",
  "tandem-demo",
);
const DEFAULT_PROMPTS = ["The Python standard library", "A list comprehension is", "To open a file, use"];

const DEMO_OPTIONS = z
  .object({
    prompt: z
      .string()
      .min(1)
      .optional()
      .meta({ description: "a prompt of your own (default: three shipped ones)" }),
    maxTokens: z.int().min(1).default(40).meta({ description: "tokens per prompt" }),
    target: RUNTIME_SETTINGS.target,
    codec: z.enum(CODEC_NAMES).default("fp16").meta({ description: "hidden-state codec on the wire" }),
    split: z
      .int()
      .min(1)
      .optional()
      .meta({ description: "layers the edge runs (default: the model's recommended split)" }),
    verify: z.enum(["none", "rollback", "exact"]).default("none").meta({
      description:
        "the cloud checks the edge's tokens: rollback shows them at once and marks a withdrawal with ⟲, exact shows only checked ones",
    }),
  })
  .strict();

export const demoCommand: CommandDefinition<typeof DEMO_OPTIONS> = {
  name: "demo",
  summary: "generate with the demo model through a local edge agent and cloud worker",
  description:
    "Starts a cloud worker and an edge agent on the shipped demo model, both serving real gRPC on loopback,\nand continues prompts through the edge's public API; cloud-answered tokens are shown [in brackets].",
  options: DEMO_OPTIONS,
  async run(values) {
    const deployment = readDeployment(DEMO_MODEL_DIR);
    if (!deployment)
      throw new CheckpointError(DEMO_MODEL_DIR, "has no tandem.json: the demo model is not installed here");
    const split = values.split ?? deployment.recommendedSplit;
    const calibration = deployment.calibrations.get(split);
    if (!calibration)
      throw new UsageError(
        "--split",
        `the demo model ships calibrations for splits ${[...deployment.calibrations.keys()].join(", ")}, not ${split}`,
      );
    const quiet = pino({ level: "warn" });
    console.error(`tandem demo: starting a cloud worker and an edge agent on ${DEMO_MODEL_DIR}`);
    const worker = await startCloudWorker(
      { modelDir: DEMO_MODEL_DIR, split, workerId: "demo-worker", port: 0 },
      quiet,
    );
    // Everything started is stopped again, whatever fails after it.
    try {
      await runOnEdge(values, calibration, worker.server.address, quiet);
    } finally {
      await worker.close(1000);
    }
    return 0;
  },
};

async function runOnEdge(
  values: z.output<typeof DEMO_OPTIONS>,
  calibration: string,
  cloudAddress: string,
  log: Logger,
): Promise<void> {
  const edgeConfig = parseOrThrow(EDGE_CONFIG_SCHEMA, {
    model: DEMO_MODEL_DIR,
    calibration,
    target: values.target,
    cloudAddress,
    codec: values.codec,
    port: 0,
    // The demo talks to the edge over gRPC; it takes no fixed port another program may hold.
    httpAddress: "",
  });
  const edge = await startEdgeAgent(edgeConfig, log);
  try {
    console.error(
      `tandem demo: edge agent ${edge.server.address} runs layers [0,${edge.split}) with exits after ${edge.exitLayers.join(", ")}; ` +
        `cloud worker ${cloudAddress} runs the rest. Cloud-answered tokens are shown [in brackets].\n`,
    );
    await generateThroughEdge(edge.server.address, values);
  } finally {
    await edge.close(1000);
  }
}

/** Continues the prompts through the edge's public API, printing tokens as they come. */
async function generateThroughEdge(address: string, values: z.output<typeof DEMO_OPTIONS>): Promise<void> {
  const { tandem } = loadTandemProtos();
  const client = new tandem.v1.Inference(address, grpc.credentials.createInsecure());
  const maxTokens = values.maxTokens;
  const totals = { edge: 0, cloud: 0, fallback: 0, bytes: 0 };
  try {
    for (const prompt of values.prompt ? [values.prompt] : DEFAULT_PROMPTS) {
      process.stdout.write(prompt);
      await new Promise<void>((resolve, reject) => {
        const verify = `VERIFY_${values.verify.toUpperCase()}` as
          "VERIFY_NONE" | "VERIFY_ROLLBACK" | "VERIFY_EXACT";
        const call = client.Generate({ text: prompt, maxTokens, verify });
        call.on("data", (event: GenerateEvent__Output) => {
          if (event.token) {
            const cloud = event.token.source === "TOKEN_SOURCE_CLOUD";
            process.stdout.write(cloud && event.token.text ? `[${event.token.text}]` : event.token.text);
          }
          // The text since the last mark is withdrawn from this position on: what follows replaces it.
          if (event.rollback) process.stdout.write(" ⟲ ");
          if (event.summary) {
            const s = event.summary;
            totals.edge += s.edgeTokens;
            totals.cloud += s.cloudTokens;
            totals.fallback += s.fallbackTokens;
            totals.bytes += Number(s.bytesSent);
            const checked =
              values.verify === "none"
                ? ""
                : `; the cloud checked ${s.draftedTokens} edge tokens, agreed with ${s.acceptedTokens}` +
                  (values.verify === "rollback" ? `, ${s.rolledBackTokens} withdrawn` : "");
            process.stdout.write(
              `\n  → ${s.edgeTokens} tokens at the edge, ${s.cloudTokens} from the cloud (${s.escalations} escalations, ` +
                `${s.bytesSent} bytes up${checked}), first token ${s.timings!.firstTokenMs.toFixed(1)} ms, total ${s.timings!.totalMs.toFixed(0)} ms\n\n`,
            );
          }
        });
        call.on("error", reject);
        call.on("end", resolve);
      });
    }
    const all = totals.edge + totals.cloud + totals.fallback;
    console.log(
      `${((100 * totals.edge) / all).toFixed(0)}% of ${all} tokens never needed the cloud; ${totals.bytes} bytes of hidden states went up.`,
    );
  } finally {
    client.close();
  }
}
