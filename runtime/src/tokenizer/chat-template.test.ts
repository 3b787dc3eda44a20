/**
 * Chat templates render as transformers renders them: the real templates of Llama 3.2,
 * Qwen2.5 and SmolLM2 (runtime/test-data/chat-templates, with their licences) give, byte
 * for byte, the text Python's jinja2 gives in apply_chat_template's environment
 * (render_expected.py beside them wrote expected.json).
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { CheckpointError, InvalidArgumentError } from "@tandem/common";
import { ChatTemplate, strftime, type ChatMessage } from "./chat-template.ts";

const TEST_DATA = join(import.meta.dirname, "..", "..", "test-data", "chat-templates");

interface Expected {
  now: string;
  models: Record<
    string,
    {
      special_tokens: Record<string, string>;
      conversations: { name: string; messages: ChatMessage[]; expected: string }[];
    }
  >;
}
const expected = JSON.parse(readFileSync(join(TEST_DATA, "expected.json"), "utf8")) as Expected;
// An ISO date-time without an offset is local time in JavaScript, as NOW is in Python.
const now = () => new Date(expected.now);

const dir = mkdtempSync(join(tmpdir(), "tandem-chat-template-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let counter = 0;
/** A tokenizer directory holding these files (objects are written as JSON). */
function tokenizerDir(files: Record<string, string | object>): string {
  const sub = join(dir, `t${counter++}`);
  mkdirSync(sub);
  for (const [name, content] of Object.entries(files))
    writeFileSync(join(sub, name), typeof content === "string" ? content : JSON.stringify(content));
  return sub;
}

const USER_ONLY: ChatMessage[] = [{ role: "user", content: "Hi" }];
const CHATML = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}";

describe("ChatTemplate renders the real templates exactly as transformers does", () => {
  for (const [model, { special_tokens, conversations }] of Object.entries(expected.models)) {
    const template = readFileSync(join(TEST_DATA, `${model}.jinja`), "utf8");
    for (const conversation of conversations) {
      it(`${model}: ${conversation.name}`, async () => {
        // As the model ships it: the template in tokenizer_config.json beside its special tokens.
        const chat = await ChatTemplate.find(
          tokenizerDir({ "tokenizer_config.json": { ...special_tokens, chat_template: template } }),
        );
        expect(chat!.render(conversation.messages, { now })).toBe(conversation.expected);
      });
    }
  }
});

describe("ChatTemplate.find", () => {
  it("takes chat_template.jinja over tokenizer_config.json's template, as transformers does", async () => {
    const chat = await ChatTemplate.find(
      tokenizerDir({
        "tokenizer_config.json": { chat_template: "from the config" },
        "chat_template.jinja": "from the file: {{ messages[0].content }}",
      }),
    );
    expect(chat!.render(USER_ONLY)).toBe("from the file: Hi");
    expect(chat!.source).toMatch(/chat_template\.jinja$/);
  });

  it("uses the template named default when tokenizer_config.json lists several", async () => {
    const chat = await ChatTemplate.find(
      tokenizerDir({
        "tokenizer_config.json": {
          chat_template: [
            { name: "tool_use", template: "tools" },
            { name: "default", template: "default: {{ messages | length }}" },
          ],
        },
      }),
    );
    expect(chat!.render(USER_ONLY)).toBe("default: 1");
  });

  it("hands the template bos_token and eos_token, written as strings or as AddedToken objects", async () => {
    const chat = await ChatTemplate.find(
      tokenizerDir({
        "tokenizer_config.json": {
          bos_token: { content: "<s>", lstrip: false, normalized: false, __type: "AddedToken" },
          eos_token: "</s>",
          chat_template:
            "{{ bos_token }}" +
            CHATML +
            "{{ eos_token }}{% if add_generation_prompt %}<|assistant|>{% endif %}",
        },
      }),
    );
    expect(chat!.render(USER_ONLY)).toBe("<s><|user|>Hi</s><|assistant|>");
  });

  it("finds nothing in a checkpoint without a template", async () => {
    expect(await ChatTemplate.find(tokenizerDir({}))).toBeUndefined();
    expect(
      await ChatTemplate.find(tokenizerDir({ "tokenizer_config.json": { eos_token: "</s>" } })),
    ).toBeUndefined();
  });

  it("renders the demo model's own plain template: one `Role: content` line per message", async () => {
    const demo = join(import.meta.dirname, "..", "..", "..", "models", "tandem-demo");
    const chat = await ChatTemplate.find(demo);
    expect(chat?.source).toMatch(/chat_template\.jinja$/);
    expect(
      chat!.render([
        { role: "system", content: "Answer briefly. " },
        { role: "user", content: "What is a list?" },
      ]),
    ).toBe("System: Answer briefly.\nUser: What is a list?\nAssistant:");
  });

  const broken: [string, Record<string, string | object>, RegExp][] = [
    [
      "a list without a default",
      { "tokenizer_config.json": { chat_template: [{ name: "rag", template: "x" }] } },
      /tokenizer_config\.json: "chat_template" names "rag" but no "default"/,
    ],
    [
      "a template of the wrong type",
      { "tokenizer_config.json": { chat_template: 42 } },
      /tokenizer_config\.json: "chat_template" must be a string/,
    ],
    [
      "a template that is not Jinja",
      { "chat_template.jinja": "{% for %}" },
      /chat_template\.jinja: has a chat template the renderer cannot parse/,
    ],
  ];
  for (const [name, files, message] of broken) {
    it(`rejects ${name} with a CheckpointError naming the file`, async () => {
      const error = await ChatTemplate.find(tokenizerDir(files)).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(CheckpointError);
      expect((error as Error).message).toMatch(message);
    });
  }
});

describe("ChatTemplate.render", () => {
  const ALTERNATING =
    "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}" +
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}" +
    CHATML.slice("{% for m in messages %}".length).replaceAll("m.", "message.");

  it("turns a template's raise_exception into INVALID_ARGUMENT naming the messages and the template's message", async () => {
    const chat = await ChatTemplate.find(tokenizerDir({ "chat_template.jinja": ALTERNATING }));
    const twoUsers = [...USER_ONLY, ...USER_ONLY];
    expect(() => chat!.render(twoUsers)).toThrow(
      new InvalidArgumentError(
        "messages",
        "Conversation roles must alternate user/assistant/user/assistant/...",
      ),
    );
    const error = (() => {
      try {
        chat!.render(twoUsers, { field: "prompt.messages" });
      } catch (e) {
        return e as InvalidArgumentError;
      }
    })();
    expect(error).toBeInstanceOf(InvalidArgumentError);
    expect(error!.field).toBe("prompt.messages");
    expect(chat!.render([...USER_ONLY, { role: "assistant", content: "Yo" }])).toBe(
      "<|user|>Hi<|assistant|>Yo",
    );
  });

  it("blames the template, not the caller, when it fails any other way", async () => {
    const chat = await ChatTemplate.find(tokenizerDir({ "chat_template.jinja": "{{ no_such_function() }}" }));
    expect(() => chat!.render(USER_ONLY)).toThrow(CheckpointError);
    expect(() => chat!.render(USER_ONLY)).toThrow(
      /chat_template\.jinja: has a chat template that fails to render/,
    );
  });

  it("gives templates tools and documents as none, and the library's other globals", async () => {
    const chat = await ChatTemplate.find(
      tokenizerDir({
        "chat_template.jinja":
          "{% if tools is none and documents is none %}none{% endif %}|{{ range(3) | join(',') }}|{% if True and not False %}yes{% endif %}",
      }),
    );
    expect(chat!.render(USER_ONLY)).toBe("none|0,1,2|yes");
  });
});

describe("strftime", () => {
  const date = new Date(2025, 0, 5, 15, 4, 9);
  const cases: [string, string][] = [
    ["%d %b %Y", "05 Jan 2025"],
    ["%Y-%m-%d %H:%M:%S", "2025-01-05 15:04:09"],
    ["%A %a %B %y", "Sunday Sun January 25"],
    ["%I %p, day %j, 100%%", "03 PM, day 005, 100%"],
  ];
  for (const [format, text] of cases)
    it(`formats ${JSON.stringify(format)} as Python's strftime does in the C locale`, () =>
      expect(strftime(date, format)).toBe(text));
});
