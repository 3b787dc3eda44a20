/**
 * A program's settings as people read them: the --help listing and the README's
 * configuration tables, both generated from the schema (a test fails when the README
 * drifts from it).
 */
import type { z } from "zod";
import {
  fieldKind,
  fieldSchemas,
  isRequired,
  type FieldKind,
  type JsonSchemaField,
} from "../schema-validation.ts";
import { environmentName, type ConfigSchema } from "./config-loader.ts";

/** One field of an object schema as people read it, in --help and in the README. */
export interface FieldDoc {
  key: string;
  /** "(required)", "none", or the default as written in a config file. */
  default: string;
  description: string;
  /** Allowed values or range, e.g. "fp32, fp16" or "≥ 1". */
  values: string;
  /** "list" for a list (written a,b,… on a command line), else the field's kind. */
  kind: FieldKind;
}

/** A program setting: a field, and the environment variable that sets it. */
export interface SettingDoc extends FieldDoc {
  env: string;
}

export function fieldDocs(schema: z.ZodObject): FieldDoc[] {
  const fields = fieldSchemas(schema);
  return Object.keys(schema.shape).map((key) => {
    const field = fields[key] ?? {};
    return {
      key,
      default: isRequired(schema, key)
        ? "(required)"
        : field.default === undefined
          ? "none"
          : formatDefault(field.default),
      description: field.description ?? "",
      values: allowedValues(field),
      kind: fieldKind(field),
    };
  });
}

export function settingDocs(schema: ConfigSchema, envPrefix: string): SettingDoc[] {
  return fieldDocs(schema).map((doc) => ({ ...doc, env: environmentName(envPrefix, doc.key) }));
}

/** "default 3; ≥ 1", "required", …: what a usage line says after a field's description. */
export function usageNote(doc: FieldDoc): string {
  return [
    doc.default === "(required)" ? "required" : doc.default === "none" ? "" : `default ${doc.default}`,
    doc.values,
  ]
    .filter(Boolean)
    .join("; ");
}

function formatDefault(value: unknown): string {
  if (Array.isArray(value)) return value.join(",");
  // An empty text (a setting off unless given) reads as "" rather than as nothing.
  return typeof value === "string" && value !== "" ? value : JSON.stringify(value);
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
      const note = usageNote(d);
      return `  --${d.key.padEnd(20)} ${d.env.padEnd(34)} ${d.description}${note ? ` (${note})` : ""}`;
    })
    .join("\n");
}

/** The README's Markdown table of a program's settings. */
export function configMarkdownTable(schema: ConfigSchema, envPrefix: string): string {
  const rows = settingDocs(schema, envPrefix).map(
    (d) =>
      `| \`${d.key}\` | \`${d.env}\` | ${markdownDefault(d.default)} | ${d.values} | ${markdownCell(d.description)} |`,
  );
  return ["| key | environment | default | values | meaning |", "|---|---|---|---|---|", ...rows].join("\n");
}

/** Text as a Markdown table cell: a "|" in it must not end the cell. */
export function markdownCell(text: string): string {
  return text.replace(/\|/g, "\\|");
}

/** A default as a Markdown table cell: literal values in code font. */
export function markdownDefault(value: string): string {
  return value === "(required)" || value === "none" ? value : `\`${value}\``;
}
