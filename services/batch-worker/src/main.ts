/**
 * `tandem-batch-worker`: takes batch jobs (generation, calibration, graph builds) from the
 * cluster's BullMQ queues. Settings from --config FILE, TANDEM_BATCH_* variables and
 * flags. SIGTERM finishes the jobs in progress, then exits.
 */
import { runProgram, type ProgramDefinition } from "@tandem/common";
import { BATCH_CONFIG_SCHEMA, BATCH_ENV_PREFIX } from "./batch-config.ts";
import { startBatchWorker } from "./batch-worker.ts";

export const BATCH_PROGRAM: ProgramDefinition<typeof BATCH_CONFIG_SCHEMA> = {
  name: "tandem-batch-worker",
  summary:
    "Takes batch jobs (generation, calibration, graph builds) from the cluster's BullMQ queues on Redis.",
  schema: BATCH_CONFIG_SCHEMA,
  envPrefix: BATCH_ENV_PREFIX,
  logFields: (config) => ({ cluster: config.cluster }),
  async start(config, log) {
    const worker = await startBatchWorker(
      { ...config, redisSecrets: { passwordFile: config.redisPasswordFile, caFile: config.redisCa } },
      log,
    );
    return {
      readyLine: `running ${config.kinds.join(",")}`,
      async close() {
        log.info("finishing the jobs in progress");
        await worker.close();
      },
    };
  },
};

export function main(argv: string[]): Promise<number> {
  return runProgram(BATCH_PROGRAM, argv);
}
