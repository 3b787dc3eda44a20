/**
 * Validation with zod schemas, reported the way Tandem reports every bad input: one
 * message per problem, naming the field (`prompts[1]`, `sampling.temperature`, `port`)
 * and saying what it must be and what it got. Program configuration, batch job data and
 * command-line options all go through here, so they word their errors alike.
 */
import { z } from "zod";
import { InvalidArgumentError } from "./errors.ts";

export interface SchemaProblem {
  /** The field's path: `a.b[2].c`; empty for the value as a whole. */
  field: string;
  message: string;
}

/** `["sampling", "seed"]` → `sampling.seed`, `["prompts", 1]` → `prompts[1]`. */
export function fieldName(path: readonly PropertyKey[]): string {
  let name = "";
  for (const part of path) {
    if (typeof part === "number") name += `[${part}]`;
    else name += name === "" ? String(part) : `.${String(part)}`;
  }
  return name;
}

const show = (value: unknown): string =>
  typeof value === "bigint" ? `${value}` : value === undefined ? "nothing" : JSON.stringify(value);

/**
 * Every problem zod found, in Tandem's wording. With the schema, messages can say what a
 * field is (its description, for a missing one) and that a number must be an integer.
 */
export function schemaProblems(error: z.ZodError, schema?: z.ZodType): SchemaProblem[] {
  const json = schema
    ? (z.toJSONSchema(schema, { io: "input", unrepresentable: "any" }) as JsonSchemaField)
    : undefined;
  const problems: SchemaProblem[] = [];
  for (const issue of error.issues) {
    const field = fieldName(issue.path);
    if (issue.code === "unrecognized_keys") {
      for (const key of issue.keys)
        problems.push({ field: fieldName([...issue.path, key]), message: "is not a known key" });
      continue;
    }
    problems.push({ field, message: issueMessage(issue, json && schemaAt(json, issue.path)) });
  }
  return problems;
}

/** The JSON Schema of the value at `path` inside `root` (objects by key, lists by index). */
function schemaAt(root: JsonSchemaField, path: readonly PropertyKey[]): JsonSchemaField | undefined {
  let node: JsonSchemaField | undefined = root;
  for (const part of path) {
    const inner: JsonSchemaField | undefined = node?.anyOf?.find((f) => f.type !== "null") ?? node;
    node = typeof part === "number" ? inner?.items : inner?.properties?.[String(part)];
  }
  return node;
}

function issueMessage(issue: z.core.$ZodIssue, field: JsonSchemaField | undefined): string {
  const input = (issue as { input?: unknown }).input;
  switch (issue.code) {
    case "invalid_type": {
      if (input === undefined)
        return field?.description ? `is required: ${field.description}` : "is required";
      const expected = fieldKind(field) === "integer" ? "int" : (issue.expected as string);
      const what: Record<string, string> = {
        int: "an integer",
        number: "a number",
        string: "a string",
        boolean: "true or false",
        array: "a list",
        object: "an object",
        bigint: "an integer",
      };
      return `must be ${what[expected] ?? expected}, got ${show(input)}`;
    }
    case "too_small": {
      if (issue.origin === "string")
        return Number(issue.minimum) <= 1
          ? "must not be empty"
          : `must hold at least ${issue.minimum} characters`;
      if (issue.origin === "array" || issue.origin === "set")
        return `must hold at least ${issue.minimum} item${Number(issue.minimum) === 1 ? "" : "s"}`;
      return `must be ${issue.inclusive ? "≥" : ">"} ${issue.minimum}, got ${show(input)}`;
    }
    case "too_big": {
      if (issue.origin === "string") return `must hold at most ${issue.maximum} characters`;
      if (issue.origin === "array" || issue.origin === "set")
        return `must hold at most ${issue.maximum} items`;
      return `must be ${issue.inclusive ? "≤" : "<"} ${issue.maximum}, got ${show(input)}`;
    }
    case "invalid_value":
      return `must be one of ${issue.values.map((v) => String(v)).join(", ")}, got ${show(input)}`;
    case "invalid_format":
      return `must be ${issue.format === "regex" ? `text matching ${(issue as { pattern?: string }).pattern}` : `a valid ${issue.format}`}, got ${show(input)}`;
    case "not_multiple_of":
      return `must be a multiple of ${issue.divisor}, got ${show(input)}`;
    default:
      return issue.message;
  }
}

/**
 * Parse options for what a process parses once (its settings, its command line): zod's
 * compiled fast path would cost more to build (~10 ms for a worker's settings, from a CPU
 * profile of its start) than it saves; problems report the value given.
 */
export const PARSE_ONCE = { reportInput: true, jitless: true } as const;

/**
 * Parses `value` with `schema`; on failure throws InvalidArgumentError naming the first
 * bad field (prefixed with `prefix`, e.g. "data"), with the others in its message.
 */
export function parseOrThrow<S extends z.ZodType>(schema: S, value: unknown, prefix = ""): z.output<S> {
  const result = schema.safeParse(value, { reportInput: true });
  if (result.success) return result.data;
  const problems = schemaProblems(result.error, schema);
  const name = (field: string) => (prefix && field ? `${prefix}.${field}` : prefix || field || "value");
  const [first, ...rest] = problems;
  const others =
    rest.length > 0 ? ` (and ${rest.map((p) => `${name(p.field)}: ${p.message}`).join("; ")})` : "";
  throw new InvalidArgumentError(name(first.field), first.message + others);
}

/** The longest wait a Node timer keeps: setTimeout fires at once beyond it (with only a warning). */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** A duration setting in milliseconds: an integer from `min` up to what a timer can wait. */
export function durationMs(min: number) {
  return z.int().min(min).max(MAX_TIMER_MS);
}

/** Whether an object schema's `key` must be given (no default, not optional). */
export function isRequired(schema: z.ZodObject, key: string): boolean {
  return !schema.shape[key].safeParse(undefined).success;
}

/** The top-level key a problem's field lies under: `sampling.seed` → `sampling`, `ids[2]` → `ids`. */
export function topLevelKey(field: string): string {
  return field.split(/[.[]/)[0];
}

/** `cloudDeadlineMs` → `["cloud", "deadline", "ms"]`: for environment names and flags. */
export function camelCaseWords(key: string): string[] {
  return key
    .replace(/([a-z0-9])([A-Z])/g, "$1 $2")
    .toLowerCase()
    .split(" ");
}

/** What kind of value a field of an object schema takes, for turning command-line text into it. */
export type FieldKind = "string" | "integer" | "number" | "boolean" | "list" | "other";

/** The JSON Schema of each field of an object schema (types, bounds, defaults, descriptions). */
export function fieldSchemas(schema: z.ZodObject): Record<string, JsonSchemaField> {
  const json = z.toJSONSchema(schema, { io: "input", unrepresentable: "any" }) as {
    properties?: Record<string, JsonSchemaField>;
  };
  return json.properties ?? {};
}

export interface JsonSchemaField {
  type?: string | string[];
  properties?: Record<string, JsonSchemaField>;
  description?: string;
  default?: unknown;
  enum?: unknown[];
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  items?: JsonSchemaField;
  anyOf?: JsonSchemaField[];
}

export function fieldKind(field: JsonSchemaField | undefined): FieldKind {
  const type = Array.isArray(field?.type) ? field.type.find((t) => t !== "null") : field?.type;
  if (type === "string" || type === "integer" || type === "number" || type === "boolean") return type;
  if (type === "array") return "list";
  const inner = field?.anyOf?.find((f) => f.type !== "null");
  return inner ? fieldKind(inner) : "other";
}

/**
 * Text from an environment variable or a flag, as the field's kind: numbers and booleans
 * are converted when they read as such (otherwise left as text, so validation names the
 * bad value), lists split on commas.
 */
export function fromText(kind: FieldKind, text: string, items?: JsonSchemaField): unknown {
  switch (kind) {
    case "integer":
    case "number": {
      const value = text.trim() === "" ? NaN : Number(text);
      return Number.isFinite(value) ? value : text;
    }
    case "boolean":
      return text === "true" || text === "1" ? true : text === "false" || text === "0" ? false : text;
    case "list":
      return text
        .split(",")
        .map((s) => s.trim())
        .filter((s) => s.length > 0)
        .map((s) => fromText(fieldKind(items), s));
    default:
      return text;
  }
}
