/** @tandem/testkit: real servers and programs, started and stopped for tests and benchmarks. */
export {
  escalateStream,
  generate,
  type GenerateResult,
  healthClient,
  healthList,
  healthStatus,
  inferenceClient,
  waitUntilServing,
  type Connection,
} from "./grpc-client.ts";
export {
  startNatsCluster,
  startNatsServer,
  type NatsServerOptions,
  type TestNatsCluster,
  type TestNatsServer,
} from "./nats-server.ts";
export { nodeRecord, type TestNodeRecord } from "./node-record.ts";
export { startRedisServer, type RedisServerOptions, type TestRedisServer } from "./redis-server.ts";
export {
  freePort,
  runCli,
  runProgram,
  startProgram,
  type CliResult,
  type ProgramName,
  type RunningProcess,
  type StartOptions,
} from "./processes.ts";
export { metricsAddressOf, parseMetrics, scrapeMetrics, type Scrape } from "./metrics.ts";
export { until } from "./until.ts";
export { listServices } from "./reflection.ts";
