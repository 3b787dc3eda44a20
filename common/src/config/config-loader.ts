/**
 * Program configuration: one typed schema per program, values from a JSON file, then
 * environment variables (PREFIX_KEY_NAME for keyName), then explicit overrides (command
 * line). Validated once at start; every error names the key and where the value came from.
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { InvalidArgumentError } from "../errors.ts";

export type ConfigFieldType = "string" | "integer" | "number" | "boolean";

export interface ConfigField {
  type: ConfigFieldType;
  description: string;
  /** Omitted: the key is required. `null`: optional with no value. */
  default?: string | number | boolean | null;
  min?: number;
  max?: number;
  choices?: readonly string[];
}

export type ConfigSchema = Record<string, ConfigField>;

type FieldValue<F extends ConfigField> = F["type"] extends "string"
  ? string
  : F["type"] extends "boolean"
    ? boolean
    : number;

export type ConfigValues<S extends ConfigSchema> = {
  [K in keyof S]: S[K]["default"] extends null ? FieldValue<S[K]> | undefined : FieldValue<S[K]>;
};

export class ConfigValueError extends InvalidArgumentError {
  constructor(key: string, source: string, message: string) {
    super(key, `${message} (from ${source})`);
    this.name = "ConfigValueError";
  }
}

/** `cloudAddress` → `TANDEM_EDGE_CLOUD_ADDRESS` for prefix `TANDEM_EDGE`. */
export function environmentName(prefix: string, key: string): string {
  return `${prefix}_${key.replace(/([a-z0-9])([A-Z])/g, "$1_$2").toUpperCase()}`;
}

export function loadConfig<S extends ConfigSchema>(
  schema: S,
  options: { file?: string; env?: NodeJS.ProcessEnv; envPrefix: string; overrides?: Record<string, unknown> },
): ConfigValues<S> {
  let fromFile: Record<string, unknown> = {};
  if (options.file) {
    try {
      fromFile = JSON.parse(readFileSync(options.file, "utf8")) as Record<string, unknown>;
    } catch (error) {
      throw new ConfigValueError(
        "config",
        options.file,
        `cannot be read as JSON: ${(error as Error).message}`,
      );
    }
    for (const key of Object.keys(fromFile)) {
      if (!(key in schema))
        throw new ConfigValueError(
          key,
          options.file,
          `is not a known key (known: ${Object.keys(schema).join(", ")})`,
        );
    }
  }
  const env = options.env ?? process.env;
  const values: Record<string, unknown> = {};
  for (const [key, field] of Object.entries(schema)) {
    const envName = environmentName(options.envPrefix, key);
    let raw: unknown;
    let source: string;
    if (options.overrides?.[key] !== undefined) {
      raw = options.overrides[key];
      source = "the command line";
    } else if (env[envName] !== undefined) {
      raw = env[envName];
      source = `$${envName}`;
    } else if (fromFile[key] !== undefined) {
      raw = fromFile[key];
      source = options.file!;
    } else {
      if (field.default === undefined)
        throw new ConfigValueError(key, "the configuration", `is required: ${field.description}`);
      values[key] = field.default === null ? undefined : field.default;
      continue;
    }
    values[key] = coerce(key, field, raw, source);
  }
  return values as ConfigValues<S>;
}

function coerce(key: string, field: ConfigField, raw: unknown, source: string): string | number | boolean {
  switch (field.type) {
    case "string": {
      if (typeof raw !== "string" || raw === "")
        throw new ConfigValueError(key, source, `must be a non-empty string, got ${JSON.stringify(raw)}`);
      if (field.choices && !field.choices.includes(raw))
        throw new ConfigValueError(key, source, `must be one of ${field.choices.join(", ")}, got "${raw}"`);
      return raw;
    }
    case "boolean": {
      if (typeof raw === "boolean") return raw;
      if (raw === "true" || raw === "1") return true;
      if (raw === "false" || raw === "0") return false;
      throw new ConfigValueError(key, source, `must be true or false, got ${JSON.stringify(raw)}`);
    }
    default: {
      const value =
        typeof raw === "number" ? raw : typeof raw === "string" && raw.trim() !== "" ? Number(raw) : NaN;
      if (!Number.isFinite(value) || (field.type === "integer" && !Number.isInteger(value))) {
        throw new ConfigValueError(
          key,
          source,
          `must be ${field.type === "integer" ? "an integer" : "a number"}, got ${JSON.stringify(raw)}`,
        );
      }
      if (field.min !== undefined && value < field.min)
        throw new ConfigValueError(key, source, `must be ≥ ${field.min}, got ${value}`);
      if (field.max !== undefined && value > field.max)
        throw new ConfigValueError(key, source, `must be ≤ ${field.max}, got ${value}`);
      return value;
    }
  }
}

/** A table of the schema, for --help and the README. */
export function describeSchema(schema: ConfigSchema, envPrefix: string): string {
  return Object.entries(schema)
    .map(
      ([key, f]) =>
        `  ${key.padEnd(22)} ${environmentName(envPrefix, key).padEnd(34)} ${f.description}${f.default === undefined ? " (required)" : f.default === null ? "" : ` (default ${f.default})`}`,
    )
    .join("\n");
}

/** Command-line flags for a schema: `--config FILE`, `--help`, and `--<key> value` for each key. */
export function parseConfigArgs(
  schema: ConfigSchema,
  argv: string[],
): { file?: string; help: boolean; overrides: Record<string, string> } {
  const options: Record<string, { type: "string" | "boolean" }> = {
    config: { type: "string" },
    help: { type: "boolean" },
  };
  for (const key of Object.keys(schema)) options[key] = { type: "string" };
  const { values } = parseArgs({ args: argv, options, strict: true });
  const flags = values as Record<string, string | boolean | undefined>;
  const overrides: Record<string, string> = {};
  for (const key of Object.keys(schema))
    if (typeof flags[key] === "string") overrides[key] = flags[key] as string;
  return { file: flags.config as string | undefined, help: flags.help === true, overrides };
}
