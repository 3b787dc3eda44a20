/**
 * What a `tandem` command is: its options as a zod schema (camelCase keys, given as
 * kebab-case flags: `maxTokens` is `--max-tokens`), its positional arguments, and a
 * run function that gets the options typed and validated. Usage text is generated from
 * the schema, so `--help`, the usage printed after a mistake and the parsing agree.
 */
import { z } from "zod";
import {
  UsageError,
  camelCaseWords,
  fieldDocs,
  fieldKind,
  fieldSchemas,
  fromText,
  PARSE_ONCE,
  parseFlags,
  schemaProblems,
  topLevelKey,
  usageNote,
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
function flagName(key: string): string {
  return camelCaseWords(key).join("-");
}

export function commandUsage(command: CommandDefinition): string {
  const positionals = (command.positionals ?? [])
    .map((p) => (p.required === false ? `[${p.name}]` : p.name))
    .join(" ");
  const lines = fieldDocs(command.options).map((doc) => {
    const flag = `--${flagName(doc.key)}${doc.kind === "boolean" ? "" : doc.kind === "list" ? " a,b,…" : " VALUE"}`;
    const note = usageNote(doc);
    return `  ${flag.padEnd(26)} ${doc.description}${note ? ` (${note})` : ""}`;
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
  const result = command.options.safeParse(raw, PARSE_ONCE);
  if (!result.success) {
    const [first] = schemaProblems(result.error, command.options);
    throw new UsageError(`--${flagName(topLevelKey(first.field))}`, first.message);
  }
  return command.run(result.data, parsed.positionals);
}
