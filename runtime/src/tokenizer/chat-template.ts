/**
 * A checkpoint's chat template: the Jinja program its authors ship to turn a conversation
 * into the text the model was trained on, rendered with @huggingface/jinja the way
 * transformers' `apply_chat_template(messages, add_generation_prompt=True)` renders it.
 *
 * Where the template is (transformers' order): `chat_template.jinja` beside tokenizer.json,
 * which newer transformers write and which wins over the config; else tokenizer_config.json's
 * `chat_template`, a string or a list of `{name, template}` of which "default" is used.
 *
 * What the template sees (transformers' ImmutableSandboxedEnvironment, trim_blocks and
 * lstrip_blocks, which @huggingface/jinja always applies): `messages`,
 * `add_generation_prompt` = true, `tools` = `documents` = none, the special tokens of
 * tokenizer_config.json as strings (`bos_token`, `eos_token`, …), and the globals
 * `raise_exception(message)` and `strftime_now(format)`. The rendered text holds every
 * special token the model expects (Llama 3's template writes `<|begin_of_text|>` itself),
 * so it is encoded without adding any: `Tokenizer.encode`, not `encodePrompt`.
 */
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { Environment, Interpreter, Template } from "@huggingface/jinja";
import { CheckpointError, InvalidArgumentError } from "@tandem/common";
import { readTokenizerConfig, TOKENIZER_CONFIG_FILE, tokenContent } from "./tokenizer.ts";

/** The template file newer transformers write beside tokenizer.json; it wins over the config's. */
export const CHAT_TEMPLATE_FILE = "chat_template.jinja";

/** One turn of a conversation. */
export interface ChatMessage {
  role: string;
  content: string;
}

export interface ChatRenderOptions {
  /** The request field the messages came in, named when the template refuses them. @default "messages" */
  field?: string;
  /** The clock `strftime_now` reads (Llama 3.x's template prints today's date). @default () => new Date() */
  now?: () => Date;
}

/** tokenizer_config.json keys whose tokens transformers hands every template, as strings. */
const SPECIAL_TOKEN_KEYS = ["bos_token", "eos_token", "unk_token", "pad_token"] as const;

export class ChatTemplate {
  private constructor(
    private readonly program: Template,
    /** The file the template came from, for errors. */
    readonly source: string,
    private readonly specialTokens: Readonly<Record<string, string>>,
  ) {}

  /**
   * The chat template of the tokenizer in `dir` (the directory of its tokenizer.json), or
   * undefined when it has none. A template that is there but unreadable or not Jinja the
   * renderer parses is a CheckpointError naming its file.
   */
  static async find(dir: string): Promise<ChatTemplate | undefined> {
    const configPath = join(dir, TOKENIZER_CONFIG_FILE);
    const config = await readTokenizerConfig(dir);
    const filePath = join(dir, CHAT_TEMPLATE_FILE);
    let text: string | undefined;
    let source = filePath;
    if (existsSync(filePath)) {
      try {
        text = await readFile(filePath, "utf8");
      } catch (error) {
        throw new CheckpointError(filePath, `cannot be read (${(error as Error).message})`, { cause: error });
      }
    } else {
      text = templateOfConfig(config.chat_template, configPath);
      source = configPath;
    }
    if (text === undefined) return undefined;
    let program: Template;
    try {
      program = new Template(text);
    } catch (error) {
      throw new CheckpointError(
        source,
        `has a chat template the renderer cannot parse (${(error as Error).message})`,
        {
          cause: error,
        },
      );
    }
    const specialTokens: Record<string, string> = {};
    for (const key of SPECIAL_TOKEN_KEYS) {
      const token = tokenContent(config[key]);
      if (token !== undefined) specialTokens[key] = token;
    }
    return new ChatTemplate(program, source, specialTokens);
  }

  /**
   * The text of `messages` with the prompt for the assistant's reply appended. A template
   * that refuses the conversation (`raise_exception`, e.g. roles that do not alternate) is
   * an InvalidArgumentError naming `options.field` with the template's message; one that
   * fails otherwise is a fault of the model's files (CheckpointError naming the template).
   */
  render(messages: readonly ChatMessage[], options: ChatRenderOptions = {}): string {
    const field = options.field ?? "messages";
    const now = options.now ?? (() => new Date());
    const context: Record<string, unknown> = {
      ...JINJA_GLOBALS,
      raise_exception: (message: unknown) => {
        throw new InvalidArgumentError(field, String(message));
      },
      strftime_now: (format: unknown) => strftime(now(), String(format)),
      ...this.specialTokens,
      messages: messages.map((m) => ({ role: m.role, content: m.content })),
      add_generation_prompt: true,
      tools: null,
      documents: null,
    };
    // Template.render declares its own raise_exception and strftime_now (a real clock,
    // month names in the process's locale) and refuses to redeclare them, so the program
    // runs in an environment of ours that also holds the library's other globals.
    const env = new Environment();
    for (const [name, value] of Object.entries(context)) env.set(name, value);
    try {
      const result = new Interpreter(env).run(this.program.parsed).value;
      if (typeof result !== "string") throw new TypeError(`rendered ${typeof result}, not text`);
      return result;
    } catch (error) {
      if (error instanceof InvalidArgumentError) throw error;
      throw new CheckpointError(
        this.source,
        `has a chat template that fails to render (${(error as Error).message})`,
        {
          cause: error,
        },
      );
    }
  }
}

/** The globals @huggingface/jinja's Template.render declares besides the two we replace. */
const JINJA_GLOBALS: Record<string, unknown> = {
  true: true,
  false: false,
  none: null,
  True: true,
  False: false,
  None: null,
  range: (start: number, stop?: number, step = 1): number[] => {
    if (stop === undefined) [start, stop] = [0, start];
    if (step === 0) throw new RangeError("range() step must not be zero");
    const out: number[] = [];
    for (let i = start; step > 0 ? i < stop : i > stop; i += step) out.push(i);
    return out;
  },
};

/** tokenizer_config.json's `chat_template`: a string, or the "default" of a list of named templates. */
function templateOfConfig(value: unknown, configPath: string): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === "string") return value;
  if (Array.isArray(value)) {
    const named = value.filter(
      (t): t is { name: string; template: string } =>
        typeof t === "object" && t !== null && typeof t.name === "string" && typeof t.template === "string",
    );
    if (named.length !== value.length)
      throw new CheckpointError(configPath, `"chat_template" lists entries that are not {name, template}`);
    const chosen = named.find((t) => t.name === "default");
    if (!chosen)
      throw new CheckpointError(
        configPath,
        `"chat_template" names ${named.map((t) => `"${t.name}"`).join(", ")} but no "default"`,
      );
    return chosen.template;
  }
  throw new CheckpointError(configPath, `"chat_template" must be a string or a list of {name, template}`);
}

const MONTHS = [
  "January",
  "February",
  "March",
  "April",
  "May",
  "June",
  "July",
  "August",
  "September",
  "October",
  "November",
  "December",
];
const DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];

/**
 * Python's `datetime.now().strftime(format)` in the C locale, for the directives chat
 * templates use; others are left as written. Local time, like Python's.
 */
export function strftime(date: Date, format: string): string {
  const pad = (n: number, width = 2) => String(n).padStart(width, "0");
  return format.replace(/%[aAbBdHIjmMpSyY%]/g, (directive) => {
    switch (directive) {
      case "%a":
        return DAYS[date.getDay()].slice(0, 3);
      case "%A":
        return DAYS[date.getDay()];
      case "%b":
        return MONTHS[date.getMonth()].slice(0, 3);
      case "%B":
        return MONTHS[date.getMonth()];
      case "%d":
        return pad(date.getDate());
      case "%H":
        return pad(date.getHours());
      case "%I":
        return pad(date.getHours() % 12 || 12);
      case "%j": {
        const dayNumber = (d: Date) => Date.UTC(d.getFullYear(), d.getMonth(), d.getDate()) / 86_400_000;
        return pad(dayNumber(date) - dayNumber(new Date(date.getFullYear(), 0, 1)) + 1, 3);
      }
      case "%m":
        return pad(date.getMonth() + 1);
      case "%M":
        return pad(date.getMinutes());
      case "%p":
        return date.getHours() < 12 ? "AM" : "PM";
      case "%S":
        return pad(date.getSeconds());
      case "%y":
        return pad(date.getFullYear() % 100);
      case "%Y":
        return String(date.getFullYear());
      default:
        return "%";
    }
  });
}
