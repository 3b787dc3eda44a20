/**
 * Program configuration: one zod schema per program (every key with its type, bounds,
 * default and description), values from a JSON file, then environment variables
 * (PREFIX_KEY_NAME for keyName), then the command line. Validated once at start; every
 * problem is reported (ConfigErrors), each naming the key and where its value came from.
 */
import { readFileSync } from "node:fs";
import type { z } from "zod";
import { ConfigErrors, ConfigValueError } from "../errors.ts";
import {
  camelCaseWords,
  fieldKind,
  fieldSchemas,
  fromText,
  PARSE_ONCE,
  schemaProblems,
  topLevelKey,
} from "../schema-validation.ts";

/** A program's configuration schema: a strict object of keys with defaults and descriptions. */
export type ConfigSchema = z.ZodObject;

export interface LoadConfigOptions {
  /** A JSON file of key → value. */
  file?: string;
  /** @default process.env */
  env?: NodeJS.ProcessEnv;
  /** Prefix of the environment variables, e.g. TANDEM_EDGE. */
  envPrefix: string;
  /** Values from the command line (text, or values of the field's type); undefined is absent. */
  overrides?: Record<string, unknown>;
}

/** `cloudAddress` → `TANDEM_EDGE_CLOUD_ADDRESS` for prefix `TANDEM_EDGE`. */
export function environmentName(prefix: string, key: string): string {
  return `${prefix}_${camelCaseWords(key).join("_").toUpperCase()}`;
}

export function loadConfig<S extends ConfigSchema>(schema: S, options: LoadConfigOptions): z.output<S> {
  const fields = fieldSchemas(schema);
  const keys = Object.keys(schema.shape);
  const errors: ConfigValueError[] = [];
  let fromFile: Record<string, unknown> = {};
  if (options.file) {
    try {
      const parsed: unknown = JSON.parse(readFileSync(options.file, "utf8"));
      if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed))
        throw new Error("the file must hold a JSON object of key → value");
      fromFile = parsed as Record<string, unknown>;
    } catch (error) {
      throw new ConfigErrors([
        new ConfigValueError("config", options.file, `cannot be read as JSON: ${(error as Error).message}`),
      ]);
    }
    for (const key of Object.keys(fromFile))
      if (!keys.includes(key))
        errors.push(
          new ConfigValueError(key, options.file, `is not a known key (known: ${keys.join(", ")})`),
        );
  }
  const env = options.env ?? process.env;
  const raw: Record<string, unknown> = {};
  const sources: Record<string, string> = {};
  for (const key of keys) {
    const envName = environmentName(options.envPrefix, key);
    const kind = fieldKind(fields[key]);
    const override = options.overrides?.[key];
    if (override !== undefined) {
      raw[key] = typeof override === "string" ? fromText(kind, override, fields[key]?.items) : override;
      sources[key] = "the command line";
    } else if (env[envName] !== undefined) {
      raw[key] = fromText(kind, env[envName]!, fields[key]?.items);
      sources[key] = `$${envName}`;
    } else if (fromFile[key] !== undefined) {
      // A list may be written as text in a file too ("2,3"), as in the environment.
      const value = fromFile[key];
      raw[key] =
        kind === "list" && typeof value === "string" ? fromText(kind, value, fields[key]?.items) : value;
      sources[key] = options.file!;
    }
  }
  const result = schema.safeParse(raw, PARSE_ONCE);
  if (result.success && errors.length === 0) return result.data;
  if (!result.success) {
    const problems = schemaProblems(result.error, schema);
    for (const problem of problems) {
      const key = topLevelKey(problem.field);
      errors.push(new ConfigValueError(problem.field, sources[key] ?? "the configuration", problem.message));
    }
  }
  throw new ConfigErrors(errors);
}
