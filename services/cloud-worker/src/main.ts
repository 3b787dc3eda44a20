/**
 * `tandem-cloud-worker`: settings from a JSON file (--config), TANDEM_WORKER_* variables
 * and flags; serves until SIGTERM/SIGINT, then drains (in a cluster: its shards move
 * away first).
 */
import { hostname } from "node:os";
import { natsCredentialsOf, runProgram, type ProgramDefinition } from "@tandem/common";
import { startCloudWorker } from "./cloud-worker.ts";
import { WORKER_CONFIG_SCHEMA, WORKER_ENV_PREFIX } from "./worker-config.ts";

/** Open streams get this long to finish once the worker stops serving. */
const DRAIN_MS = 5000;

export const WORKER_PROGRAM: ProgramDefinition<typeof WORKER_CONFIG_SCHEMA> = {
  name: "tandem-cloud-worker",
  summary: "A cloud worker: the layers of a model past the edge's split, behind tandem.v1.CloudWorker.",
  schema: WORKER_CONFIG_SCHEMA,
  envPrefix: WORKER_ENV_PREFIX,
  logFields: (config) => ({ workerId: config.workerId ?? hostname() }),
  async start(config, log, { metrics }) {
    const worker = await startCloudWorker(
      {
        modelDir: config.model,
        split: config.split,
        workerId: config.workerId ?? hostname(),
        host: config.host,
        port: config.port,
        memoryBudgetBytes: config.memoryMb * 2 ** 20,
        threads: config.threads,
        batching: config.batching,
        maxBatch: config.maxBatch,
        stepTokenBudget: config.stepTokenBudget,
        weightFormat: config.weights,
        quantBlockSize: config.quantBlockSize,
        int4HeadBits: config.int4HeadBits,
        expertParallel: config.expertParallel
          ? {
              port: config.expertPort,
              codec: config.expertCodec,
              deadlineMs: config.expertDeadlineMs,
              handoverMs: config.expertHandoverMs,
            }
          : undefined,
        tls:
          config.tlsCert && config.tlsKey && config.tlsCa
            ? { cert: config.tlsCert, key: config.tlsKey, ca: config.tlsCa, crl: config.tlsCrl }
            : undefined,
        insecure: config.insecure,
        sessionLimits: { maxSessions: config.maxSessions, maxSessionsPerDevice: config.maxSessionsPerDevice },
        metrics,
        cluster: config.natsUrl
          ? {
              natsUrl: config.natsUrl,
              natsCredentials: natsCredentialsOf(config),
              name: config.cluster,
              weight: config.weight,
              heartbeatMs: config.heartbeatMs,
              expertSlots: config.expertSlots,
              advertise: config.advertise,
              drainTimeoutMs: config.drainTimeoutMs,
            }
          : undefined,
      },
      log,
    );
    return { readyLine: `listening ${worker.server.address}`, close: () => worker.close(DRAIN_MS) };
  },
};

export function main(argv: string[]): Promise<number> {
  return runProgram(WORKER_PROGRAM, argv);
}
