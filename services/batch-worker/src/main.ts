/**
 * `tandem-batch-worker`: takes batch jobs (generation, calibration, graph builds) from the
 * cluster's BullMQ queues. Settings from --config FILE, TANDEM_BATCH_* variables and
 * flags. SIGTERM finishes the jobs in progress, then exits. With healthPort it serves
 * grpc.health.v1 for probes: SERVING while taking jobs with Redis connected.
 */
import { runProgram, type ProgramDefinition } from "@tandem/common";
import { startConfiguredHealthServer } from "@tandem/proto";
import { BATCH_CONFIG_SCHEMA, BATCH_ENV_PREFIX } from "./batch-config.ts";
import { startBatchWorker, type BatchWorker } from "./batch-worker.ts";

export const BATCH_PROGRAM: ProgramDefinition<typeof BATCH_CONFIG_SCHEMA> = {
  name: "tandem-batch-worker",
  summary:
    "Takes batch jobs (generation, calibration, graph builds) from the cluster's BullMQ queues on Redis.",
  schema: BATCH_CONFIG_SCHEMA,
  envPrefix: BATCH_ENV_PREFIX,
  logFields: (config) => ({ cluster: config.cluster }),
  async start(config, log, { metrics }) {
    // Listening first: a health port that cannot be had stops the start before any job is taken.
    const health = await startConfiguredHealthServer(config);
    let worker: BatchWorker;
    try {
      worker = await startBatchWorker(
        {
          ...config,
          redisSecrets: { passwordFile: config.redisPasswordFile, caFile: config.redisCa },
          metrics,
        },
        log,
      );
    } catch (error) {
      await health?.close();
      throw error;
    }
    health?.reportFrom(() => worker.healthy());
    if (health) log.info({ address: health.address }, "serving health checks");
    return {
      readyLine: `running ${config.kinds.join(",")}`,
      async close() {
        health?.stopServing();
        log.info("finishing the jobs in progress");
        await worker.close();
        await health?.close();
      },
    };
  },
};

export function main(argv: string[]): Promise<number> {
  return runProgram(BATCH_PROGRAM, argv);
}
