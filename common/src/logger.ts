/** Structured JSON logs to stderr (pino), one child logger per component. */
import { pino, type Logger } from "pino";

export type { Logger };

/** @param level from $TANDEM_LOG_LEVEL, default "info" */
export function createLogger(component: string, fields: Record<string, unknown> = {}): Logger {
  return pino(
    { level: process.env.TANDEM_LOG_LEVEL ?? "info", base: { component, ...fields } },
    pino.destination(2),
  );
}
