/**
 * What a `tandem` command is: its options as a zod schema (camelCase keys, given as
 * kebab-case flags: `maxTokens` is `--max-tokens`), its positional arguments, and a
 * run function that gets the options typed and validated. Usage text is generated from
 * the schema, so `--help`, the usage printed after a mistake and the parsing agree.
 */
import { z } from "zod";
import {
  UsageError,
  fieldKind,
  fieldSchemas,
  fromText,
  parseFlags,
  schemaProblems,
  type FlagSpec,
} from "@tandem/common";

export interface Positional {
  name: string;
  description: string;
  /** @default true */
  required?: boolean;
}

export interface CommandDefinition<S extends z.ZodObject = z.ZodObject> {
  name: string;
  /** One line, for `tandem --help`. */
  summary: string;
  /** What it does, for `tandem <name> --help`. */
  description?: string;
  options: S;
  positionals?: Positional[];
  run(options: z.output<S>, positionals: string[]): Promise<number>;
}

/** `maxTokens` → `max-tokens`. */
export function flagName(key: string): string {
  return key.replace(/([a-z0-9])([A-Z])/g, "$1-$2").toLowerCase();
}

export function commandUsage(command: CommandDefinition): string {
  const fields = fieldSchemas(command.options);
  const required = (key: string) => !command.options.shape[key].safeParse(undefined).success;
  const positionals = (command.positionals ?? [])
    .map((p) => (p.required === false ? `[${p.name}]` : p.name))
    .join(" ");
  const lines = Object.keys(command.options.shape).map((key) => {
    const field = fields[key] ?? {};
    const kind = fieldKind(field);
    const flag = `--${flagName(key)}${kind === "boolean" ? "" : kind === "list" ? " a,b,…" : " VALUE"}`;
    const allowed = field.enum ? `one of ${field.enum.join(", ")}` : undefined;
    const extra = [
      required(key)
        ? "required"
        : field.default !== undefined
          ? `default ${formatDefault(field.default)}`
          : undefined,
      allowed,
    ]
      .filter(Boolean)
      .join("; ");
    return `  ${flag.padEnd(26)} ${field.description ?? ""}${extra ? ` (${extra})` : ""}`;
  });
  const positionalLines = (command.positionals ?? []).map((p) => `  ${p.name.padEnd(26)} ${p.description}`);
  return [
    `usage: tandem ${command.name}${positionals ? ` ${positionals}` : ""} [options]`,
    "",
    command.description ?? command.summary,
    "",
    ...positionalLines,
    ...lines,
    `  ${"--help".padEnd(26)} this text`,
  ].join("\n");
}

function formatDefault(value: unknown): string {
  return Array.isArray(value) ? value.join(",") : typeof value === "string" ? value : JSON.stringify(value);
}

/** Parses `args` against the command, then runs it. UsageError for anything that does not fit. */
export async function runCommand(command: CommandDefinition, args: string[]): Promise<number> {
  const fields = fieldSchemas(command.options);
  const flags: FlagSpec = { help: { type: "boolean" } };
  for (const key of Object.keys(command.options.shape))
    flags[flagName(key)] = { type: fieldKind(fields[key]) === "boolean" ? "boolean" : "string" };
  const parsed = parseFlags(args, flags, (command.positionals ?? []).length > 0);
  if (parsed.values.help) {
    console.log(commandUsage(command));
    return 0;
  }
  const positionals = command.positionals ?? [];
  if (parsed.positionals.length > positionals.length)
    throw new UsageError(parsed.positionals[positionals.length], "is not expected here");
  const missing = positionals.find((p, i) => p.required !== false && parsed.positionals[i] === undefined);
  if (missing) throw new UsageError(missing.name, "is required");
  const raw: Record<string, unknown> = {};
  for (const key of Object.keys(command.options.shape)) {
    const value = parsed.values[flagName(key)];
    if (value !== undefined)
      raw[key] =
        typeof value === "string" ? fromText(fieldKind(fields[key]), value, fields[key]?.items) : value;
  }
  const result = command.options.safeParse(raw, { reportInput: true });
  if (!result.success) {
    const [first] = schemaProblems(result.error, command.options);
    const key = first.field.split(/[.[]/)[0];
    throw new UsageError(`--${flagName(key)}`, first.message);
  }
  return command.run(result.data, parsed.positionals);
}
