/**
 * Prompts as the model's authors intended, through a real edge agent process: a
 * `messages` prompt rendered with the checkpoint's chat template at the edge, hostile
 * conversations refused with the field named, and generation stopping on any of the
 * model's end tokens. The checkpoints are copies of models/tandem-demo, one given a
 * tokenizer_config.json with a chat template, one a generation_config.json with two end
 * tokens.
 */
import { cpSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generate, type RunningProcess, startProgram } from "@tandem/testkit";

const DEMO = join(import.meta.dirname, "..", "models", "tandem-demo");
/** Refuses two turns of one role in a row, as many real templates do. */
const TEMPLATE =
  "{% for m in messages %}" +
  "{% if loop.index0 > 0 and m.role == messages[loop.index0 - 1].role %}" +
  "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}" +
  "{{ m.role + ': ' + m.content + '\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ 'assistant:' }}{% endif %}";
const CONVERSATION = [
  { role: "system", content: "You write Python." },
  { role: "user", content: "A function that adds two numbers." },
];
const RENDERED = "system: You write Python.\nuser: A function that adds two numbers.\nassistant:";

let dir: string;
/** The demo model with a chat template. */
let chat: RunningProcess;
/** The demo model without one, and with a second end token in generation_config.json. */
let plain: RunningProcess;
let plainModel: string;
const env = () => ({ TANDEM_CACHE_DIR: join(dir, "cache") });
const edgeFlags = (model: string) => ({ model, split: 3, exitLayers: "3", port: 0 });

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "tandem-chat-"));
  const chatModel = join(dir, "with-template");
  plainModel = join(dir, "two-end-tokens");
  for (const model of [chatModel, plainModel]) {
    cpSync(DEMO, model, { recursive: true });
    // The demo's own template would take precedence over tokenizer_config.json's.
    rmSync(join(model, "chat_template.jinja"));
  }
  writeFileSync(
    join(chatModel, "tokenizer_config.json"),
    JSON.stringify({ eos_token: "<|endoftext|>", chat_template: TEMPLATE }),
  );
  chat = await startProgram("tandem-edge", edgeFlags(chatModel), env());
});

afterAll(async () => {
  await chat?.kill();
  await plain?.kill();
  rmSync(dir, { recursive: true, force: true });
});

describe("a messages prompt", () => {
  it("generates the very tokens of its rendered text sent as a text prompt", async () => {
    const request = { maxTokens: 16, mode: "MODE_EDGE_ONLY" as const };
    const fromMessages = await generate(chat.address, { ...request, messages: { messages: CONVERSATION } });
    const fromText = await generate(chat.address, { ...request, text: RENDERED });
    expect(fromMessages.error).toBeUndefined();
    expect(fromMessages.tokens).toHaveLength(16);
    expect(fromMessages.tokens.map((t) => t.id)).toEqual(fromText.tokens.map((t) => t.id));
    expect(fromMessages.summary?.promptTokens).toBe(fromText.summary?.promptTokens);
  });

  const long = "x".repeat(40_000);
  const bad: [string, object[], RegExp][] = [
    ["an empty list", [], /^prompt\.messages: must hold at least one message$/],
    ["an empty role", [{ role: "", content: "Hi" }], /^prompt\.messages\[0\]\.role: must not be empty$/],
    [
      "a role no template knows",
      [
        { role: "user", content: "Hi" },
        { role: "assistant", content: "Hello" },
        { role: "wizard", content: "Abracadabra" },
      ],
      /^prompt\.messages\[2\]\.role: must be one of system, user, assistant, got "wizard"$/,
    ],
    [
      "a tool message, which the API cannot pair with a tool call",
      [{ role: "tool", content: "42" }],
      /^prompt\.messages\[0\]\.role: must be one of/,
    ],
    ["empty content", [{ role: "user", content: "" }], /^prompt\.messages\[0\]\.content: must not be empty$/],
    [
      "contents over the prompt's character limit together",
      [
        { role: "user", content: long },
        { role: "assistant", content: long },
      ],
      /^prompt\.messages\[1\]\.content: the messages' content reaches 80000 characters here, over the limit 65536$/,
    ],
    [
      "more messages than the limit",
      Array.from({ length: 257 }, (_, i) => ({ role: i % 2 ? "assistant" : "user", content: "a" })),
      /^prompt\.messages: 257 messages exceed the limit 256$/,
    ],
    [
      "a conversation the template refuses",
      [
        { role: "user", content: "Hi" },
        { role: "user", content: "Hi again" },
      ],
      /^prompt\.messages: Conversation roles must alternate user\/assistant\/user\/assistant\/\.\.\.$/,
    ],
  ];
  for (const [name, messages, details] of bad) {
    it(`is refused with INVALID_ARGUMENT naming the field: ${name}`, async () => {
      const result = await generate(chat.address, { messages: { messages } });
      expect(result.error?.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(result.error?.details).toMatch(details);
    });
  }

  it("leaves the agent serving after all that", async () => {
    const result = await generate(chat.address, { messages: { messages: CONVERSATION }, maxTokens: 2 });
    expect(result.error).toBeUndefined();
  });
});

describe("a model without a chat template, with two end tokens", () => {
  let free: Awaited<ReturnType<typeof generate>>;
  let end: number;

  beforeAll(async () => {
    // Where the demo model goes on its own: its output picks the second end token.
    free = await generate(chat.address, { text: RENDERED, maxTokens: 12, mode: "MODE_EDGE_ONLY" });
    const ids = free.tokens.map((t) => t.id);
    end = ids.findIndex((id, i) => i >= 2 && !ids.slice(0, i).includes(id));
    writeFileSync(
      join(plainModel, "generation_config.json"),
      JSON.stringify({ eos_token_id: [4095, ids[end]] }),
    );
    plain = await startProgram("tandem-edge", edgeFlags(plainModel), env());
  });

  it("refuses a messages prompt with FAILED_PRECONDITION naming the model, not its path", async () => {
    const result = await generate(plain.address, { messages: { messages: CONVERSATION } });
    expect(result.error?.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(result.error?.details).toMatch(/^prompt\.messages: the model two-end-tokens has no chat template/);
    expect(result.error?.details).not.toContain(dir);
  });

  it("stops at the end token generation_config.json adds to config.json's, reporting EOS", async () => {
    expect(end).toBeGreaterThanOrEqual(2);
    const result = await generate(plain.address, { text: RENDERED, maxTokens: 12, mode: "MODE_EDGE_ONLY" });
    expect(result.summary?.finishReason).toBe("FINISH_REASON_EOS");
    expect(result.tokens.map((t) => t.id)).toEqual(free.tokens.slice(0, end + 1).map((t) => t.id));
  });
});
