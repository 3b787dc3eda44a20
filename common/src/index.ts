/** @tandem/common: what every Tandem package shares. */
export * from "./errors.ts";
export * from "./config/config-loader.ts";
export { createLogger, type Logger } from "./logger.ts";
