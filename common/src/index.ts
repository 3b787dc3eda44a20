/**
 * @tandem/common: what every Tandem package shares — the error hierarchy and the tables
 * keyed on its codes, validation that names the field, program configuration, the way
 * a service runs, logging, progress, the retry policy.
 */
export * from "./errors.ts";
export { EXIT_CODE_BY_ERROR } from "./exit-codes.ts";
export {
  CLUSTER_DEFAULTS,
  CLUSTER_NAME_SETTING,
  NATS_CREDENTIAL_SETTINGS,
  natsCredentialsOf,
  checkClusterName,
  requireTogether,
} from "./cluster-defaults.ts";
export {
  PARSE_ONCE,
  camelCaseWords,
  durationMs,
  fieldKind,
  fieldSchemas,
  fromText,
  parseOrThrow,
  schemaProblems,
  topLevelKey,
  type FieldKind,
  type JsonSchemaField,
  type SchemaProblem,
} from "./schema-validation.ts";
export { parseFlags, type FlagSpec, type ParsedFlags } from "./command-line.ts";
export {
  environmentName,
  loadConfig,
  type ConfigSchema,
  type LoadConfigOptions,
} from "./config/config-loader.ts";
export {
  configMarkdownTable,
  describeConfig,
  fieldDocs,
  markdownCell,
  markdownDefault,
  usageNote,
  type FieldDoc,
} from "./config/config-docs.ts";
export {
  programSchema,
  runProgram,
  type ProgramContext,
  type ProgramDefinition,
  type RunningProgram,
} from "./program.ts";
export { createLogger, type Logger } from "./logger.ts";
export { formatProgress, type Progress, type ProgressListener } from "./progress.ts";
export {
  BATCH_JOB_BACKOFF,
  CLOUD_LINK_BACKOFF,
  RETRYABLE_BY_CODE,
  backoffDelayMs,
  isRetryable,
  type BackoffPolicy,
} from "./retry-policy.ts";
export { readSecretFile } from "./secret-file.ts";
export { redactedUrl } from "./redacted-url.ts";
export { healthSettings } from "./health-settings.ts";
export { HOST_PORT_PATTERN, hostPort } from "./host-port.ts";
export { METRICS_ADDRESS_SETTING, listenAddressParts, listenAddressSetting } from "./metrics-settings.ts";
export {
  contextOf,
  extractRequestContext,
  extractTraceContext,
  inSpan,
  injectTraceContext,
  shutdownTracing,
  SpanKind,
  useTracingApi,
  type Attributes,
  type Context,
  type Link,
  type Span,
  type SpanContext,
  type SpanOptions,
  type TraceCarrier,
} from "./tracing/tracing.ts";
export { startTracingIfAsked } from "./tracing/start-tracing.ts";
