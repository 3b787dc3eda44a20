/**
 * A program's settings as people read them: the --help listing and the README's
 * configuration tables, both generated from the schema (a test fails when the README
 * drifts from it).
 */
import { fieldSchemas, type JsonSchemaField } from "../schema-validation.ts";
import { environmentName, type ConfigSchema } from "./config-loader.ts";

export interface SettingDoc {
  key: string;
  env: string;
  /** "(required)", "none", or the default as written in a config file. */
  default: string;
  description: string;
  /** Allowed values or range, e.g. "fp32, fp16" or "≥ 1". */
  values: string;
}

export function settingDocs(schema: ConfigSchema, envPrefix: string): SettingDoc[] {
  const fields = fieldSchemas(schema);
  const required = new Set(
    Object.keys(schema.shape).filter((k) => !schema.shape[k].safeParse(undefined).success),
  );
  return Object.keys(schema.shape).map((key) => {
    const field = fields[key] ?? {};
    return {
      key,
      env: environmentName(envPrefix, key),
      default: required.has(key)
        ? "(required)"
        : field.default === undefined
          ? "none"
          : formatDefault(field.default),
      description: field.description ?? "",
      values: allowedValues(field),
    };
  });
}

function formatDefault(value: unknown): string {
  if (Array.isArray(value)) return value.join(",");
  return typeof value === "string" ? value : JSON.stringify(value);
}

function allowedValues(field: JsonSchemaField): string {
  const inner = field.anyOf?.find((f) => f.type !== "null") ?? field;
  if (inner.enum) return inner.enum.join(", ");
  if (inner.items?.enum) return `list of ${inner.items.enum.join(", ")}`;
  const bounded = (value: number | undefined) =>
    value !== undefined && Math.abs(value) < Number.MAX_SAFE_INTEGER ? value : undefined;
  const low = bounded(inner.minimum) ?? bounded(inner.exclusiveMinimum);
  const high = bounded(inner.maximum) ?? bounded(inner.exclusiveMaximum);
  const open = inner.exclusiveMinimum !== undefined ? "(" : "[";
  const close = inner.exclusiveMaximum !== undefined ? ")" : "]";
  if (low !== undefined && high !== undefined) return `${open}${low}, ${high}${close}`;
  if (low !== undefined) return `${open === "(" ? ">" : "≥"} ${low}`;
  if (high !== undefined) return `${close === ")" ? "<" : "≤"} ${high}`;
  return "";
}

/** The --help listing of a program's settings. */
export function describeConfig(schema: ConfigSchema, envPrefix: string): string {
  return settingDocs(schema, envPrefix)
    .map((d) => {
      const extra = [
        d.default === "(required)" ? "required" : d.default === "none" ? "" : `default ${d.default}`,
        d.values,
      ]
        .filter(Boolean)
        .join("; ");
      return `  --${d.key.padEnd(20)} ${d.env.padEnd(34)} ${d.description}${extra ? ` (${extra})` : ""}`;
    })
    .join("\n");
}

/** The README's Markdown table of a program's settings. */
export function configMarkdownTable(schema: ConfigSchema, envPrefix: string): string {
  const rows = settingDocs(schema, envPrefix).map(
    (d) =>
      `| \`${d.key}\` | \`${d.env}\` | ${markdownDefault(d.default)} | ${d.values} | ${d.description.replace(/\|/g, "\\|")} |`,
  );
  return ["| key | environment | default | values | meaning |", "|---|---|---|---|---|", ...rows].join("\n");
}

/** A default as a Markdown table cell: literal values in code font. */
export function markdownDefault(value: string): string {
  return value === "(required)" || value === "none" ? value : `\`${value}\``;
}
