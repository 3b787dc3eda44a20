/**
 * How every Tandem service runs (tandem-edge, tandem-cloud-worker, tandem-control-plane,
 * tandem-batch-worker): flags `--config FILE`, `--help` and `--<key> value` for each
 * setting; configuration validated before anything starts (one line per bad setting,
 * exit 2); a ready line on stdout that scripts and tests wait for; SIGTERM or SIGINT
 * stops it gracefully. A start that fails on what the user gave (a bad model directory)
 * is one line and exit 2; one that fails on a peer (NATS unreachable) one line and exit 1.
 * Every program also takes `metricsAddress`: set, it serves Prometheus metrics there
 * (GET /metrics) from a Registry of its own, which `start` gets to add its metrics to.
 */
import type { Registry } from "prom-client";
import type { z } from "zod";
import { describeConfig } from "./config/config-docs.ts";
import { loadConfig, type ConfigSchema } from "./config/config-loader.ts";
import { parseFlags, type FlagSpec } from "./command-line.ts";
import { ConfigErrors, TandemError, UsageError } from "./errors.ts";
import { EXIT_CODE_BY_ERROR } from "./exit-codes.ts";
import { createLogger, type Logger } from "./logger.ts";
import { METRICS_ADDRESS_SETTING } from "./metrics-settings.ts";
import { shutdownTracing } from "./tracing/tracing.ts";

export interface RunningProgram {
  /** The line printed once the program serves, e.g. `listening 127.0.0.1:50051`. */
  readyLine: string;
  /** Planned stop: drain, then release everything. */
  close(): Promise<void>;
}

/** What runProgram gives a program besides its configuration. */
export interface ProgramContext {
  /** The program's metrics Registry, scraped at metricsAddress; undefined when metrics are off. */
  metrics?: Registry;
}

export interface ProgramDefinition<S extends ConfigSchema> {
  /** The command, e.g. `tandem-edge`. */
  name: string;
  /** One line on what it is, for --help. */
  summary: string;
  schema: S;
  /** Prefix of its environment variables, e.g. TANDEM_EDGE. */
  envPrefix: string;
  /** Log fields every line carries, from the configuration. */
  logFields?(config: z.output<S>): Record<string, unknown>;
  start(config: z.output<S>, log: Logger, context: ProgramContext): Promise<RunningProgram>;
}

/** Settings runProgram handles for every program, added to each one's schema. */
const PROGRAM_SETTINGS = { metricsAddress: METRICS_ADDRESS_SETTING };

/** The schema a program's settings are read with: its own, and the settings every program takes. */
export function programSchema(definition: ProgramDefinition<ConfigSchema>): ConfigSchema {
  return definition.schema.safeExtend(PROGRAM_SETTINGS);
}

export function programUsage(definition: ProgramDefinition<ConfigSchema>): string {
  return (
    `usage: ${definition.name} [--config FILE] [--<key> value ...]\n\n${definition.summary}\n\n` +
    `Settings come from the JSON file, then ${definition.envPrefix}_* variables, then flags:\n\n` +
    describeConfig(programSchema(definition), definition.envPrefix)
  );
}

/** Runs the program until a stop signal; returns its exit code. */
export async function runProgram<S extends ConfigSchema>(
  definition: ProgramDefinition<S>,
  argv: string[],
): Promise<number> {
  const fail = (lines: string[], code: number) => {
    for (const line of lines) process.stderr.write(`${definition.name}: ${line}\n`);
    return code;
  };
  const schema = programSchema(definition);
  let config: z.output<S> & { metricsAddress: string };
  try {
    const flags: FlagSpec = { config: { type: "string" }, help: { type: "boolean" } };
    for (const key of Object.keys(schema.shape)) flags[key] = { type: "string" };
    const { values } = parseFlags(argv, flags);
    if (values.help) {
      process.stdout.write(programUsage(definition) + "\n");
      return 0;
    }
    const overrides = Object.fromEntries(Object.keys(schema.shape).map((key) => [key, values[key]]));
    config = loadConfig(schema, {
      file: values.config as string | undefined,
      envPrefix: definition.envPrefix,
      overrides,
    }) as z.output<S> & { metricsAddress: string };
  } catch (error) {
    if (error instanceof UsageError)
      return fail([error.message, `run '${definition.name} --help' for its settings`], 2);
    if (error instanceof ConfigErrors)
      return fail(
        error.errors.map((e) => e.message),
        2,
      );
    throw error;
  }
  let running: RunningProgram;
  let log: Logger;
  let metrics: { registry: Registry; server: { close(): Promise<void> } } | undefined;
  try {
    log = createLogger(definition.name, definition.logFields?.(config));
    // Listening first: a metrics port that cannot be had stops the start before anything else.
    metrics = config.metricsAddress ? await startMetrics(config.metricsAddress, log) : undefined;
    running = await definition.start(config, log, { metrics: metrics?.registry });
  } catch (error) {
    await metrics?.server.close();
    if (error instanceof TandemError) return fail([error.message], EXIT_CODE_BY_ERROR[error.code]);
    throw error;
  }
  process.stdout.write(`${running.readyLine}\n`);
  await new Promise<void>((resolve) => {
    process.once("SIGTERM", resolve);
    process.once("SIGINT", resolve);
  });
  log.info("stopping");
  await running.close();
  await metrics?.server.close();
  // The spans of the stop itself are the last ones exported.
  await shutdownTracing().catch((error: unknown) =>
    log.warn({ err: error }, "spans not exported at shutdown"),
  );
  return 0;
}

/** prom-client is loaded only by a program that serves metrics. */
async function startMetrics(address: string, log: Logger) {
  const { createProgramRegistry, startMetricsServer } = await import("./metrics/index.ts");
  const registry = createProgramRegistry();
  const server = await startMetricsServer({ address, registry, log });
  return { registry, server };
}
