/**
 * `tandem-cloud-worker`: configuration from a JSON file (--config), TANDEM_WORKER_*
 * environment variables and flags; serves until SIGTERM/SIGINT, then drains.
 */
import { hostname } from "node:os";
import { describeSchema, loadConfig, parseConfigArgs, type ConfigSchema } from "@tandem/common";
import { createLogger } from "@tandem/common";
import { startCloudWorker } from "./cloud-worker.ts";

export const WORKER_CONFIG_SCHEMA = {
  model: { type: "string", description: "checkpoint directory" },
  split: { type: "integer", min: 1, description: "first layer this worker runs (the edge runs [0, split))" },
  host: { type: "string", default: "127.0.0.1", description: "address to listen on" },
  port: { type: "integer", default: 50052, min: 0, max: 65535, description: "port (0 picks a free one)" },
  workerId: { type: "string", default: hostname(), description: "name of this worker in logs and replies" },
  memoryMb: { type: "integer", default: 512, min: 1, description: "KV-cache budget of all sessions, MiB" },
  threads: { type: "integer", default: 1, min: 1, description: "ONNX Runtime threads" },
  batching: { type: "boolean", default: true, description: "batch decode steps of concurrent sessions" },
  maxBatch: { type: "integer", default: 16, min: 1, description: "most sessions in one batched step" },
  weights: {
    type: "string",
    default: "fp32",
    choices: ["fp32", "int8", "int4"],
    description: "weight format",
  },
  natsUrl: {
    type: "string",
    default: null,
    description: "NATS of the control plane (none: standalone worker)",
  },
  cluster: { type: "string", default: "default", description: "control-plane cluster name" },
  drainTimeoutMs: {
    type: "integer",
    default: 10000,
    min: 0,
    description: "on SIGTERM, longest wait for the leader to move this worker's shards away",
  },
  advertise: {
    type: "string",
    default: null,
    description:
      "host:port edges and peers reach this worker at, in the node registry (default: the listening address)",
  },
  weight: { type: "number", default: 1, min: 0.01, description: "relative KV capacity for shard placement" },
  heartbeatMs: { type: "integer", default: 500, min: 50, description: "heartbeat interval" },
  expertSlots: {
    type: "integer",
    default: null,
    min: 0,
    description:
      "MoE: expert replicas this worker holds, for the expert planner (default: every expert of its layers)",
  },
} as const satisfies ConfigSchema;

export async function main(argv: string[]): Promise<number> {
  const { file, help, overrides } = parseConfigArgs(WORKER_CONFIG_SCHEMA, argv);
  if (help) {
    console.log(
      `usage: tandem-cloud-worker [--config FILE] [--key value ...]\n\n${describeSchema(WORKER_CONFIG_SCHEMA, "TANDEM_WORKER")}`,
    );
    return 0;
  }
  const config = loadConfig(WORKER_CONFIG_SCHEMA, { file, envPrefix: "TANDEM_WORKER", overrides });
  const log = createLogger("cloud-worker", { workerId: config.workerId });
  const worker = await startCloudWorker(
    {
      modelDir: config.model,
      split: config.split,
      workerId: config.workerId,
      host: config.host,
      port: config.port,
      memoryBudgetBytes: config.memoryMb * 2 ** 20,
      threads: config.threads,
      batching: config.batching,
      maxBatch: config.maxBatch,
      weightFormat: config.weights as "fp32" | "int8" | "int4",
      cluster: config.natsUrl
        ? {
            natsUrl: config.natsUrl,
            name: config.cluster,
            weight: config.weight,
            heartbeatMs: config.heartbeatMs,
            heartbeatTtlMs: config.heartbeatMs * 4,
            expertSlots: config.expertSlots,
            advertise: config.advertise,
            drainTimeoutMs: config.drainTimeoutMs,
          }
        : undefined,
    },
    log,
  );
  // The line tests and scripts wait for.
  process.stdout.write(`listening ${worker.server.address}\n`);
  await new Promise<void>((resolve) => {
    process.once("SIGTERM", resolve);
    process.once("SIGINT", resolve);
  });
  log.info("draining");
  await worker.close(5000);
  return 0;
}
