/**
 * Command-line flags, parsed strictly (node:util's parseArgs): an unknown flag, a flag
 * without its value or an unexpected argument is a UsageError naming it, never a stack
 * trace. Values are text; schemas (schema-validation.ts) turn them into typed values.
 */
import { parseArgs } from "node:util";
import { UsageError } from "./errors.ts";

export type FlagSpec = Record<string, { type: "string" | "boolean"; short?: string }>;

export interface ParsedFlags {
  values: Record<string, string | boolean | undefined>;
  positionals: string[];
}

export function parseFlags(argv: string[], flags: FlagSpec, allowPositionals = false): ParsedFlags {
  try {
    const { values, positionals } = parseArgs({ args: argv, options: flags, strict: true, allowPositionals });
    return { values: values as ParsedFlags["values"], positionals };
  } catch (error) {
    throw usageErrorOf(error as Error & { code?: string });
  }
}

function usageErrorOf(error: Error & { code?: string }): UsageError {
  const option = /'(-[^' ]+)/.exec(error.message)?.[1];
  switch (error.code) {
    case "ERR_PARSE_ARGS_UNKNOWN_OPTION":
      return new UsageError(option ?? "option", "is not an option of this command");
    case "ERR_PARSE_ARGS_INVALID_OPTION_VALUE":
      return /argument missing/.test(error.message)
        ? new UsageError(option ?? "option", "needs a value")
        : new UsageError(option ?? "option", "takes no value");
    case "ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL": {
      const argument = /argument '([^']*)'/.exec(error.message)?.[1];
      return new UsageError(argument ?? "argument", "is not expected here");
    }
    default:
      return new UsageError("arguments", error.message);
  }
}
