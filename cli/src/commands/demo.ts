/**
 * `tandem demo`: the main job on embedded defaults. Starts a cloud worker and an edge
 * agent on the shipped demo model, both serving real gRPC on loopback, then asks the
 * edge agent's public API to continue a few prompts, printing each token as it arrives
 * (cloud-answered tokens highlighted) and what the collaboration cost.
 */
import { readFileSync, existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import * as grpc from "@grpc/grpc-js";
import { pino } from "pino";
import { EDGE_CONFIG_SCHEMA, startEdgeAgent } from "@tandem/edge-agent";
import { loadTandemProtos, type GenerateEvent__Output } from "@tandem/proto";
import { loadConfig, UsageError } from "@tandem/common";
import { startCloudWorker } from "@tandem/cloud-worker";
import { parseIntegerOption } from "../cli-options.ts";

export const DEMO_MODEL_DIR = join(
  dirname(fileURLToPath(import.meta.url)),
  "..",
  "..",
  "..",
  "models",
  "tandem-demo",
);
const DEFAULT_PROMPTS = ["The Python standard library", "A list comprehension is", "To open a file, use"];

export const demoCommand = {
  summary: "run the demo",
  async run(args: string[]): Promise<number> {
    const { values } = parseArgs({
      args,
      options: {
        prompt: { type: "string" },
        "max-tokens": { type: "string" },
        target: { type: "string" },
        codec: { type: "string" },
        split: { type: "string" },
      },
      strict: true,
    });
    const deployment = JSON.parse(readFileSync(join(DEMO_MODEL_DIR, "tandem.json"), "utf8")) as {
      recommended_split: number;
      /** split → calibration file shipped for it */
      calibrations?: Record<string, string>;
    };
    const split = parseIntegerOption("--split", values.split, deployment.recommended_split, 1);
    const calibrationFile = deployment.calibrations?.[String(split)];
    if (!calibrationFile)
      throw new UsageError(
        "--split",
        `the demo model ships calibrations for splits ${Object.keys(deployment.calibrations ?? {}).join(", ")}, not ${split}`,
      );
    const calibration = join(DEMO_MODEL_DIR, calibrationFile);
    const quiet = pino({ level: "warn" });
    console.error(`tandem demo: starting a cloud worker and an edge agent on ${DEMO_MODEL_DIR}`);
    const worker = await startCloudWorker(
      { modelDir: DEMO_MODEL_DIR, split, workerId: "demo-worker", port: 0 },
      quiet,
    );
    const edgeConfig = loadConfig(EDGE_CONFIG_SCHEMA, {
      envPrefix: "TANDEM_EDGE",
      env: {},
      overrides: {
        model: DEMO_MODEL_DIR,
        calibration: existsSync(calibration) ? calibration : undefined,
        target: values.target,
        cloudAddress: worker.server.address,
        codec: values.codec ?? "fp16",
        port: "0",
      },
    });
    const edge = await startEdgeAgent(edgeConfig, quiet);
    console.error(
      `tandem demo: edge agent ${edge.server.address} runs layers [0,${edge.split}) with exits after ${edge.exitLayers.join(", ")}; ` +
        `cloud worker ${worker.server.address} runs the rest. Cloud-answered tokens are shown [in brackets].\n`,
    );
    const { tandem } = loadTandemProtos();
    const client = new tandem.v1.Inference(edge.server.address, grpc.credentials.createInsecure());
    const maxTokens = parseIntegerOption("--max-tokens", values["max-tokens"], 40, 1);
    const totals = { edge: 0, cloud: 0, fallback: 0, bytes: 0 };
    try {
      for (const prompt of values.prompt ? [values.prompt] : DEFAULT_PROMPTS) {
        process.stdout.write(prompt);
        await new Promise<void>((resolve, reject) => {
          const call = client.Generate({ text: prompt, maxTokens });
          call.on("data", (event: GenerateEvent__Output) => {
            if (event.token) {
              const cloud = event.token.source === "TOKEN_SOURCE_CLOUD";
              process.stdout.write(cloud && event.token.text ? `[${event.token.text}]` : event.token.text);
            }
            if (event.summary) {
              const s = event.summary;
              totals.edge += s.edgeTokens;
              totals.cloud += s.cloudTokens;
              totals.fallback += s.fallbackTokens;
              totals.bytes += Number(s.bytesSent);
              process.stdout.write(
                `\n  → ${s.edgeTokens} tokens at the edge, ${s.cloudTokens} from the cloud (${s.escalations} escalations, ` +
                  `${s.bytesSent} bytes up), first token ${s.timings!.firstTokenMs.toFixed(1)} ms, total ${s.timings!.totalMs.toFixed(0)} ms\n\n`,
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
      await edge.close(1000);
      await worker.close(1000);
    }
    return 0;
  },
};
