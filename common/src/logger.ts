/** Structured JSON logs to stderr (pino), one child logger per component. */
import { pino, type Logger } from "pino";
import { ConfigValueError } from "./errors.ts";

export type { Logger };

/** The log level: $TANDEM_LOG_LEVEL, default "info"; anything but a pino level is a ConfigValueError. */
export function logLevelFromEnvironment(): string {
  const level = process.env.TANDEM_LOG_LEVEL ?? "info";
  const levels = [...Object.keys(pino.levels.values), "silent"];
  if (!levels.includes(level))
    throw new ConfigValueError(
      "logLevel",
      "$TANDEM_LOG_LEVEL",
      `must be one of ${levels.join(", ")}, got ${JSON.stringify(level)}`,
    );
  return level;
}

export function createLogger(component: string, fields: Record<string, unknown> = {}): Logger {
  return pino({ level: logLevelFromEnvironment(), base: { component, ...fields } }, pino.destination(2));
}
