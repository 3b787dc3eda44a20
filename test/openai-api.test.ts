/**
 * The OpenAI-compatible HTTP API of a real edge agent process, escalating to a real cloud
 * worker process, spoken to by the official `openai` client unmodified (only its base URL
 * changed), and byte for byte as server-sent events. The gRPC API's answers to the same
 * requests are the reference: both APIs run one generation path.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import fc from "fast-check";
import OpenAI from "openai";
import { createParser, type EventSourceMessage } from "eventsource-parser";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hashApiKey, newApiKey } from "@tandem/proto";
import { loadCheckpoint, Tokenizer } from "@tandem/runtime";
import { ReferenceModel } from "@tandem/runtime/testing";
import {
  generate,
  inferenceClient,
  metricsAddressOf,
  type RunningProcess,
  scrapeMetrics,
  startProgram,
} from "@tandem/testkit";

const DEMO = join(import.meta.dirname, "..", "models", "tandem-demo");
const MODEL = "tandem-demo";
const PROMPT = "The list type";
const CONVERSATION = [
  { role: "system" as const, content: "You document Python." },
  { role: "user" as const, content: "What does a list hold?" },
];
/** The demo model's own template (models/tandem-demo/chat_template.jinja) renders the conversation so. */
const RENDERED = "System: You document Python.\nUser: What does a list hold?\nAssistant:";

let dir: string;
let worker: RunningProcess;
/**
 * Allows one generation at a time, so a place that is not given back shows at once.
 * Tandem's own options (`tandem: {...}`) go in the request body as any undocumented
 * parameter does with this client: typed by a cast, sent as given.
 */
let edge: RunningProcess;
let client: OpenAI;
let edgeMetrics: string;
const env = () => ({ TANDEM_CACHE_DIR: join(dir, "cache") });

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "tandem-openai-"));
  worker = await startProgram(
    "tandem-cloud-worker",
    { model: DEMO, split: 3, port: 0, workerId: "w" },
    env(),
  );
  edge = await startProgram(
    "tandem-edge",
    {
      model: DEMO,
      split: 3,
      exitLayers: "2,3",
      threshold: 0.5,
      cloudAddress: worker.address,
      codec: "fp32",
      port: 0,
      maxStreams: 1,
      metricsAddress: "127.0.0.1:0",
      // A loaded machine must not turn cloud answers into fallbacks: the tests compare them.
      cloudDeadlineMs: 20_000,
    },
    // Info, for the line that gives the metrics address.
    { ...env(), TANDEM_LOG_LEVEL: "info" },
  );
  edgeMetrics = await metricsAddressOf(edge);
  client = new OpenAI({ baseURL: `http://${edge.httpAddress}/v1`, apiKey: "unused", maxRetries: 0 });
});

afterAll(async () => {
  await edge?.kill();
  await worker?.kill();
  rmSync(dir, { recursive: true, force: true });
});

describe("the OpenAI API on the edge agent, through the official client", () => {
  it("lists the one model the agent serves, and finds it by id", async () => {
    const models = [];
    for await (const model of client.models.list()) models.push(model);
    expect(models.map((m) => [m.id, m.object, m.owned_by])).toEqual([[MODEL, "model", "tandem"]]);
    expect((await client.models.retrieve(MODEL)).id).toBe(MODEL);
    await expect(client.models.retrieve("gpt-4o")).rejects.toMatchObject({
      status: 404,
      code: "model_not_found",
    });
  });

  it("completes a prompt with the very tokens gRPC generates for it, with usage and Tandem's extension", async () => {
    const completion = await client.completions.create({ model: MODEL, prompt: PROMPT, max_tokens: 24 });
    const reference = await generate(edge.address, { text: PROMPT, maxTokens: 24 });
    expect(reference.error).toBeUndefined();
    expect(completion.object).toBe("text_completion");
    expect(completion.choices).toHaveLength(1);
    expect(completion.choices[0].text).toBe(reference.text);
    expect(completion.choices[0].finish_reason).toBe("length");
    expect(completion.usage).toEqual({
      prompt_tokens: reference.summary!.promptTokens,
      completion_tokens: 24,
      total_tokens: reference.summary!.promptTokens + 24,
    });
    const tandem = (completion as unknown as { tandem: { tokens: { token_id: number; source: string }[] } })
      .tandem;
    expect(tandem.tokens.map((t) => t.token_id)).toEqual(reference.tokens.map((t) => t.id));
    // Threshold 0.5 on the demo model: some tokens answered on the device, some in the cloud.
    expect(new Set(tandem.tokens.map((t) => t.source))).toEqual(new Set(["edge", "cloud"]));
  });

  it("verifies the edge's tokens: exact (streamed) and rollback (applied before the answer) give the cloud-only text", async () => {
    const create = (tandem: object, stream = false) =>
      client.completions.create({ model: MODEL, prompt: PROMPT, max_tokens: 32, stream, tandem } as never);
    const cloud = (await create({ mode: "cloud_only" })) as unknown as OpenAI.Completion;
    let streamed = "";
    for await (const chunk of (await create(
      { verify: "exact" },
      true,
    )) as unknown as AsyncIterable<OpenAI.Completion>)
      streamed += chunk.choices[0]?.text ?? "";
    expect(streamed).toBe(cloud.choices[0].text);
    const rolled = (await create({
      verify: "rollback",
      max_draft_tokens: 2,
    })) as unknown as OpenAI.Completion & {
      tandem: { tokens: { token_id: number }[] };
    };
    expect(rolled.choices[0].text).toBe(cloud.choices[0].text);
    expect(rolled.tandem.tokens).toHaveLength(32);
  });

  it("answers a conversation through the model's chat template, as gRPC answers its rendered text", async () => {
    const chat = await client.chat.completions.create({
      model: MODEL,
      messages: CONVERSATION,
      max_tokens: 16,
    });
    const reference = await generate(edge.address, { text: RENDERED, maxTokens: 16 });
    expect(chat.object).toBe("chat.completion");
    expect(chat.choices[0].message).toMatchObject({ role: "assistant", content: reference.text });
    expect(chat.usage?.prompt_tokens).toBe(reference.summary!.promptTokens);
    // max_completion_tokens is the newer name of the same limit.
    const newer = await client.chat.completions.create({
      model: MODEL,
      messages: CONVERSATION,
      max_completion_tokens: 16,
    });
    expect(newer.choices[0].message.content).toBe(reference.text);
  });

  it("streams a chat answer chunk by chunk: the role first, one chunk per token, the finish reason, the usage", async () => {
    const whole = await client.chat.completions.create({
      model: MODEL,
      messages: CONVERSATION,
      max_tokens: 12,
    });
    const stream = await client.chat.completions.create({
      model: MODEL,
      messages: CONVERSATION,
      max_tokens: 12,
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    expect(chunks[0].choices[0].delta).toEqual({ role: "assistant", content: "" });
    const tokens = chunks.filter((c) => c.choices[0]?.delta.content);
    expect(tokens.length).toBeGreaterThan(0);
    expect(tokens.length).toBeLessThanOrEqual(12);
    expect(chunks.map((c) => c.choices[0]?.delta.content ?? "").join("")).toBe(
      whole.choices[0].message.content,
    );
    expect(new Set(chunks.map((c) => c.id)).size).toBe(1);
    const finish = chunks.find((c) => c.choices[0]?.finish_reason);
    expect(finish?.choices[0].finish_reason).toBe("length");
    const usage = chunks.at(-1)!;
    expect(usage.choices).toEqual([]);
    expect(usage.usage).toEqual(whole.usage);
    // Per token, where the answer came from.
    const extension = (tokens[0] as unknown as { tandem: { source: string; exit_layer: number } }).tandem;
    expect(["edge", "cloud"]).toContain(extension.source);
    expect(extension.exit_layer === 6 || extension.exit_layer <= 3).toBe(true);
  });

  it("stops before a stop sequence, given as a string or a list", async () => {
    const free = await client.completions.create({ model: MODEL, prompt: PROMPT, max_tokens: 24 });
    const text = free.choices[0].text;
    // A stop sequence from the middle of what the model writes unhindered.
    const stop = text.slice(6, 9);
    const cut = text.slice(0, text.indexOf(stop));
    for (const given of [stop, ["\u0000never", stop]]) {
      const stopped = await client.completions.create({
        model: MODEL,
        prompt: PROMPT,
        max_tokens: 24,
        stop: given,
      });
      expect(stopped.choices[0].text).toBe(cut);
      expect(stopped.choices[0].finish_reason).toBe("stop");
    }
    const streamed = await client.completions.create({
      model: MODEL,
      prompt: PROMPT,
      max_tokens: 24,
      stop,
      stream: true,
    });
    let joined = "";
    for await (const chunk of streamed) joined += chunk.choices[0]?.text ?? "";
    expect(joined).toBe(cut);
  });

  it("samples reproducibly from a seed, and top_k 1 is greedy at the edge and in the cloud alike", async () => {
    const sampled = (seed: number) =>
      client.completions.create({
        model: MODEL,
        prompt: PROMPT,
        max_tokens: 16,
        temperature: 1.2,
        top_p: 0.95,
        seed,
      });
    const [a, b, c] = [await sampled(7), await sampled(7), await sampled(8)];
    expect(a.choices[0].text).toBe(b.choices[0].text);
    expect(a.choices[0].text).not.toBe(c.choices[0].text);
    const greedy = await client.completions.create({ model: MODEL, prompt: PROMPT, max_tokens: 16 });
    const topK1 = await client.completions.create({
      model: MODEL,
      prompt: PROMPT,
      max_tokens: 16,
      temperature: 1.5,
      seed: 3,
      // @ts-expect-error top_k is vLLM's and llama.cpp's extension, not in OpenAI's types
      top_k: 1,
    });
    expect(topK1.choices[0].text).toBe(greedy.choices[0].text);
  });

  it("gives each token's log-probability and alternatives under the layer that answered it", async () => {
    const chat = await client.chat.completions.create({
      model: MODEL,
      messages: CONVERSATION,
      max_tokens: 12,
      logprobs: true,
      top_logprobs: 3,
      tandem: { mode: "cloud_only" },
    } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    const content = chat.choices[0].logprobs!.content!;
    expect(content).toHaveLength(12);
    for (const entry of content) {
      expect(entry.logprob).toBeLessThanOrEqual(0);
      expect(entry.top_logprobs).toHaveLength(3);
      // Greedy: the answer is the most probable token, and the alternatives come most probable first.
      expect(entry.top_logprobs[0].token).toBe(entry.token);
      expect(entry.top_logprobs[0].logprob).toBeCloseTo(entry.logprob, 5);
      expect(entry.top_logprobs[1].logprob).toBeLessThanOrEqual(entry.top_logprobs[0].logprob);
      expect(Buffer.from(entry.bytes!).toString("utf8")).toBe(entry.token);
    }
    const tandem = (chat as unknown as { tandem: { cloud_tokens: number } }).tandem;
    expect(tandem.cloud_tokens).toBe(12);
    const completion = await client.completions.create({
      model: MODEL,
      prompt: PROMPT,
      max_tokens: 6,
      logprobs: 2,
      tandem: { mode: "edge_only" },
    } as OpenAI.CompletionCreateParamsNonStreaming);
    const logprobs = completion.choices[0].logprobs!;
    expect(logprobs.tokens).toHaveLength(6);
    expect(logprobs.token_logprobs!.every((l) => l <= 0)).toBe(true);
    expect(logprobs.top_logprobs!.every((top) => Object.keys(top).length <= 2)).toBe(true);
    expect(logprobs.text_offset![0]).toBe(0);
    expect(logprobs.tokens!.join("")).toBe(completion.choices[0].text);
  });

  it("ends the generation and gives its place back when the client aborts mid-stream", async () => {
    const controller = new AbortController();
    const stream = await client.completions.create(
      {
        model: MODEL,
        prompt: PROMPT,
        max_tokens: 900,
        stream: true,
        tandem: { mode: "cloud_only" },
      } as OpenAI.CompletionCreateParamsStreaming,
      { signal: controller.signal },
    );
    let seen = 0;
    try {
      for await (const chunk of stream) {
        if (chunk.choices[0]?.text !== undefined && ++seen === 3) controller.abort();
      }
    } catch (error) {
      expect(error).toBeInstanceOf(OpenAI.APIUserAbortError);
    }
    expect(seen).toBe(3);
    // The agent allows one generation at a time: the next is admitted only once the aborted one has ended.
    await expect
      .poll(
        async () => {
          try {
            return (await client.completions.create({ model: MODEL, prompt: "x", max_tokens: 1 })).choices
              .length;
          } catch (error) {
            return (error as { status?: number }).status;
          }
        },
        { timeout: 5000, interval: 100 },
      )
      .toBe(1);
    const metrics = await scrapeMetrics(edgeMetrics);
    expect(metrics.value("tandem_edge_active_generations", { api: "http" })).toBe(0);
    expect(metrics.value("tandem_edge_generations_total", { api: "http", outcome: "cancelled" })).toBe(1);
  });

  it("refuses a second generation while the one place is taken, with 429", async () => {
    const stream = await client.chat.completions.create({
      model: MODEL,
      messages: CONVERSATION,
      max_tokens: 900,
      stream: true,
    });
    const iterator = stream[Symbol.asyncIterator]();
    await iterator.next();
    try {
      await expect(
        client.completions.create({ model: MODEL, prompt: "x", max_tokens: 1 }),
      ).rejects.toMatchObject({
        status: 429,
        error: { type: "rate_limit_error" },
      });
    } finally {
      stream.controller.abort();
    }
  });

  const refused: [string, object, number, string | null, RegExp][] = [
    ["more than one choice", { n: 2 }, 400, "n", /^n: only 1 choice/],
    ["a model it does not serve", { model: "llama-3-70b" }, 404, "model", /`llama-3-70b` does not exist/],
    [
      "a temperature out of range",
      { temperature: 500 },
      400,
      "temperature",
      /^temperature: must be in \[0, 100\]/,
    ],
    [
      "max_tokens over the limit",
      { max_tokens: 5000 },
      400,
      "max_tokens",
      /^max_tokens: 5000 exceeds the limit 1024/,
    ],
    ["a top_p out of range", { top_p: 2 }, 400, "top_p", /^top_p: must be in \[0, 1\]/],
    ["a negative seed", { seed: -1 }, 400, "seed", /^seed: must be an unsigned 64-bit integer/],
    ["an empty stop sequence", { stop: [""] }, 400, "stop[0]", /^stop\[0\]: must hold 1 to 64 characters/],
    [
      "a presence penalty out of range",
      { presence_penalty: 2.5 },
      400,
      "presence_penalty",
      /must be in \[-2, 2\]/,
    ],
    ["no messages", { messages: [] }, 400, "messages", /^messages: must hold at least one message/],
    [
      "a role no template knows",
      { messages: [{ role: "wizard", content: "hi" }] },
      400,
      "messages[0].role",
      /must be one of system, user, assistant/,
    ],
    [
      "content of the wrong type",
      { messages: [{ role: "user", content: 42 }] },
      400,
      "messages[0].content",
      /./,
    ],
    [
      "tools",
      { tools: [{ type: "function", function: { name: "f" } }] },
      400,
      "tools",
      /tool calls are not supported/,
    ],
    ["an unknown Tandem mode", { tandem: { mode: "warp" } }, 400, "tandem.mode", /./],
    [
      "verify rollback on a stream, whose chunks cannot withdraw text",
      { stream: true, tandem: { verify: "rollback" } },
      400,
      "tandem.verify",
      /use "exact", or stream: false/,
    ],
    [
      "a draft limit out of range",
      { tandem: { verify: "exact", max_draft_tokens: 99 } },
      400,
      "tandem.max_draft_tokens",
      /\[0, 64\]/,
    ],
    [
      "the learned confidence on an agent without a calibration",
      { tandem: { exit_policy: { metric: "learned", threshold: 0.9 } } },
      400,
      "tandem.exit_policy.metric",
      /needs the agent to run with a calibration/,
    ],
    [
      "stream_options without stream",
      { stream_options: { include_usage: true } },
      400,
      "stream_options",
      /only with stream: true/,
    ],
  ];
  it.each(refused)(
    "refuses %s with OpenAI's error shape and the field named",
    async (_, change, status, param, message) => {
      const request = { model: MODEL, messages: CONVERSATION, max_tokens: 4, ...change };
      const error = await client.chat.completions.create(request as never).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(OpenAI.APIError);
      expect(error).toMatchObject({ status, param });
      expect((error as InstanceType<typeof OpenAI.APIError>).error).toMatchObject({
        message: expect.stringMatching(message),
        type: status === 404 ? "invalid_request_error" : "invalid_request_error",
      });
    },
  );

  it("refuses a body that is no JSON, too large or of another type, and an unknown path, in the same shape", async () => {
    const bad = await fetch(`http://${edge.httpAddress}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{not json",
    });
    expect(bad.status).toBe(400);
    expect(await bad.json()).toMatchObject({
      error: { type: "invalid_request_error", message: expect.any(String) },
    });
    // Just over the body limit (1.5 × the largest valid request, 435 KiB by default): the edge answers from the
    // Content-Length and closes the connection, so a body much larger than the socket's
    // buffers could still be in the client's write when it does (EPIPE instead of the answer).
    const tooLarge = await fetch(`http://${edge.httpAddress}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: MODEL, prompt: "x".repeat(450 * 1024) }),
    });
    expect(tooLarge.status).toBe(413);
    expect(await tooLarge.json()).toMatchObject({ error: { type: "invalid_request_error" } });
    const notJson = await fetch(`http://${edge.httpAddress}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "text/plain" },
      body: "The list type",
    });
    expect(notJson.status).toBe(415);
    const unknown = await fetch(`http://${edge.httpAddress}/v1/embeddings`, { method: "POST", body: "{}" });
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toMatchObject({ error: { code: "unknown_url" } });
  });
});

describe("hostile bodies", () => {
  /** Values of every JSON type, and those a request's fields expect, near their limits. */
  const value = fc.oneof(
    fc.jsonValue({ maxDepth: 2 }),
    fc.integer({ min: -3, max: 3000 }),
    fc.double({ noNaN: false }),
    fc.string({ maxLength: 8 }),
    fc.constantFrom(MODEL, "user", "system", "wizard", "auto", "cloud_only", "text", ""),
  );
  const FIELDS = [
    "model",
    "prompt",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "stop",
    "n",
    "stream",
    "stream_options",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "echo",
    "tools",
    "response_format",
    "tandem",
    "user",
    "__proto__",
    "constructor",
  ];
  const message = fc.record(
    {
      role: value,
      content: fc.oneof(value, fc.array(fc.record({ type: value, text: value }), { maxLength: 2 })),
    },
    { requiredKeys: [] },
  );
  /** A valid request of each endpoint with up to three fields replaced by anything, or messages by hostile ones. */
  const body = (path: "completions" | "chat/completions") =>
    fc
      .tuple(
        fc.dictionary(fc.constantFrom(...FIELDS), value, { maxKeys: 3 }),
        fc.option(fc.array(message, { maxLength: 3 }), { freq: 4 }),
      )
      .map(([fields, messages]) => ({
        model: MODEL,
        // Short generations: a fuzz case should take milliseconds.
        max_tokens: 3,
        ...(path === "completions" ? { prompt: PROMPT } : { messages: messages ?? CONVERSATION }),
        ...fields,
      }));

  it("answers every body with a status that says whose fault it is (never 5xx), in OpenAI's shape, and keeps serving", async () => {
    const statuses = new Map<number, number>();
    await fc.assert(
      fc.asyncProperty(
        fc
          .constantFrom("completions" as const, "chat/completions" as const)
          .chain((path) => body(path).map((request) => ({ path, request }))),
        async ({ path, request }) => {
          const response = await fetch(`http://${edge.httpAddress}/v1/${path}`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify(request),
          });
          const text = await response.text();
          statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1);
          expect([200, 400, 404], text).toContain(response.status);
          if (response.status !== 200) {
            const error = JSON.parse(text).error;
            expect(typeof error.message).toBe("string");
            expect(error.type).toBe("invalid_request_error");
          }
        },
      ),
      { numRuns: 300, seed: 12 },
    );
    // Both kinds happened: requests the fuzzer got right, and refusals.
    expect(statuses.get(200)).toBeGreaterThan(0);
    expect(statuses.get(400)).toBeGreaterThan(0);
    expect(
      (await client.completions.create({ model: MODEL, prompt: PROMPT, max_tokens: 2 })).choices,
    ).toHaveLength(1);
  });
});

describe("server-sent events on the wire", () => {
  it("writes each chunk as one `data: JSON` event and ends with `data: [DONE]`", async () => {
    const response = await fetch(`http://${edge.httpAddress}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: MODEL, prompt: PROMPT, max_tokens: 5, stream: true }),
    });
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toBe("text/event-stream; charset=utf-8");
    expect(response.headers.get("cache-control")).toBe("no-cache");
    const raw = await response.text();
    // Byte for byte: every event is a single `data:` line followed by a blank line, nothing else.
    expect(raw).toMatch(/^(data: [^\n]+\n\n)+$/);
    const events: EventSourceMessage[] = [];
    const parser = createParser({ onEvent: (event) => events.push(event) });
    parser.feed(raw);
    expect(events.at(-1)!.data).toBe("[DONE]");
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e.data));
    expect(chunks).toHaveLength(6); // five tokens, then the finish reason
    expect(chunks.every((c) => c.object === "text_completion" && c.model === MODEL)).toBe(true);
    expect(chunks.slice(0, 5).every((c) => c.choices[0].finish_reason === null)).toBe(true);
    expect(chunks[5].choices[0]).toMatchObject({ text: "", finish_reason: "length" });
    expect(events.every((e) => e.event === undefined && e.id === undefined)).toBe(true);
  });

  it("reports an error found before streaming as a status, not as an event", async () => {
    const response = await fetch(`http://${edge.httpAddress}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: MODEL, prompt: "", max_tokens: 5, stream: true }),
    });
    expect(response.status).toBe(400);
    expect(await response.json()).toEqual({
      error: {
        message: "prompt: must not be empty",
        type: "invalid_request_error",
        param: "prompt",
        code: "invalid_argument",
      },
    });
  });
});

describe("the gRPC API's share of the same features", () => {
  it("lists the model with its split and whether it takes conversations", async () => {
    const grpcClient = inferenceClient(edge.address);
    try {
      const response = await new Promise<{ models: object[] }>((resolve, reject) =>
        grpcClient.ListModels({}, (error: grpc.ServiceError | null, value?: { models: object[] }) =>
          error ? reject(error) : resolve(value!),
        ),
      );
      expect(response.models).toEqual([
        { id: MODEL, layers: 6, split: 3, vocabSize: 4096, maxPositions: 1024, chatTemplate: true },
      ]);
    } finally {
      grpcClient.close();
    }
  });

  it("gives log-probabilities with alternatives per token, edge and cloud, and takes top_k", async () => {
    const result = await generate(edge.address, {
      text: PROMPT,
      maxTokens: 16,
      logprobs: true,
      topLogprobs: 2,
    });
    expect(result.error).toBeUndefined();
    expect(new Set(result.tokens.map((t) => t.source))).toEqual(
      new Set(["TOKEN_SOURCE_EDGE", "TOKEN_SOURCE_CLOUD"]),
    );
    for (const token of result.tokens) {
      expect(token.logprobs!.top).toHaveLength(2);
      expect(token.logprobs!.top[0].id).toBe(token.id);
      expect(token.logprobs!.logprob).toBeCloseTo(token.logprobs!.top[0].logprob, 5);
      expect(Math.exp(token.logprobs!.logprob)).toBeCloseTo(token.confidence, 4);
    }
    const plain = await generate(edge.address, { text: PROMPT, maxTokens: 16 });
    expect(plain.tokens.every((t) => t.logprobs === null)).toBe(true);
    const topK1 = await generate(edge.address, {
      text: PROMPT,
      maxTokens: 16,
      sampling: { temperature: 2, topK: 1, seed: 5 },
    });
    expect(topK1.tokens.map((t) => t.id)).toEqual(plain.tokens.map((t) => t.id));
    const refused = await generate(edge.address, { text: PROMPT, topLogprobs: 2 });
    expect(refused.error?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(refused.error?.details).toMatch(/^top_logprobs: needs logprobs set$/);
  });

  it("applies repetition, presence and frequency penalties as vLLM does, on the device and in the cloud alike", async () => {
    const checkpoint = await loadCheckpoint(DEMO);
    const reference = new ReferenceModel(checkpoint.config, checkpoint.weights);
    const vocab = checkpoint.config.vocabSize;
    const prompt = (await Tokenizer.forCheckpoint(checkpoint)).encode("The list type");
    const penalties = { repetitionPenalty: 3, presencePenalty: 2, frequencyPenalty: 1.5 };
    /** Greedy decoding of the first `layers` layers and their exit (its adapter, then the shared head), penalized here, independently. */
    const expected = (layers: number, steps: number, p: typeof penalties | undefined) => {
      const ids = [...prompt];
      for (let step = 0; step < steps; step++) {
        const { hiddenAfterLayer } = reference.forward({ ids }, 0, layers, reference.newCache());
        // A fresh exit cache each step, as the layers' (an attending adapter has one of its own).
        const all = reference.exitHead(
          hiddenAfterLayer[hiddenAfterLayer.length - 1],
          ids.length,
          layers,
          reference.newCache(),
        );
        const logits = Array.from(all.subarray((ids.length - 1) * vocab));
        if (p) {
          for (const id of new Set(ids))
            logits[id] = logits[id] > 0 ? logits[id] / p.repetitionPenalty : logits[id] * p.repetitionPenalty;
          const generated = ids.slice(prompt.length);
          for (const id of new Set(generated))
            logits[id] -= p.presencePenalty + p.frequencyPenalty * generated.filter((g) => g === id).length;
        }
        ids.push(logits.indexOf(Math.max(...logits)));
      }
      return ids.slice(prompt.length);
    };
    const run = async (mode: "MODE_EDGE_ONLY" | "MODE_CLOUD_ONLY", p: typeof penalties | undefined) => {
      const result = await generate(edge.address, {
        tokenIds: { ids: prompt },
        maxTokens: 12,
        mode,
        sampling: { temperature: 0, ...p },
      });
      expect(result.error).toBeUndefined();
      return result.tokens.map((t) => t.id);
    };
    const cloudPenalized = await run("MODE_CLOUD_ONLY", penalties);
    expect(cloudPenalized).toEqual(expected(6, 12, penalties));
    expect(await run("MODE_EDGE_ONLY", penalties)).toEqual(expected(3, 12, penalties));
    // The penalties change this generation: without them the model repeats itself differently.
    expect(await run("MODE_CLOUD_ONLY", undefined)).toEqual(expected(6, 12, undefined));
    expect(cloudPenalized).not.toEqual(expected(6, 12, undefined));
    // The HTTP API's penalties are the same ones.
    const http = await client.completions.create({
      model: MODEL,
      prompt,
      max_tokens: 12,
      presence_penalty: 2,
      frequency_penalty: 1.5,
      repetition_penalty: 3,
      tandem: { mode: "cloud_only" },
    } as OpenAI.CompletionCreateParamsNonStreaming);
    const tandem = (http as unknown as { tandem: { tokens: { token_id: number }[] } }).tandem;
    expect(tandem.tokens.map((t) => t.token_id)).toEqual(cloudPenalized);
    const refused = await generate(edge.address, {
      tokenIds: { ids: prompt },
      sampling: { presencePenalty: 3 },
    });
    expect(refused.error?.details).toMatch(/^sampling\.presence_penalty: must be in \[-2, 2\], got 3$/);
    // Only proto3's 0 means "not set": NaN is refused, not read as no penalty.
    const notANumber = await generate(edge.address, {
      tokenIds: { ids: prompt },
      sampling: { presencePenalty: NaN },
    });
    expect(notANumber.error?.details).toMatch(/^sampling\.presence_penalty: must be in \[-2, 2\], got NaN$/);
  });

  it("sends the text held back for a stop sequence with the last token, so the events add up to the text", async () => {
    const free = await generate(edge.address, { text: PROMPT, maxTokens: 20 });
    // A stop sequence that starts in what is generated but is never completed: held back, then released at the end.
    const last = free.text.slice(-1);
    const result = await generate(edge.address, { text: PROMPT, maxTokens: 20, stop: [`${last}\u0000`] });
    expect(result.text).toBe(free.text);
    expect(result.tokens.map((t) => t.text).join("")).toBe(free.text);
  });
});

describe("API keys on the HTTP API", () => {
  it("takes `Authorization: Bearer KEY` like gRPC, and refuses others with 401", async () => {
    const key = newApiKey();
    const secured = await startProgram(
      "tandem-edge",
      { model: DEMO, split: 3, exitLayers: "3", port: 0, apiKeys: hashApiKey(key) },
      env(),
    );
    try {
      const base = `http://${secured.httpAddress}/v1`;
      const good = new OpenAI({ baseURL: base, apiKey: key, maxRetries: 0 });
      expect(
        (await good.completions.create({ model: MODEL, prompt: PROMPT, max_tokens: 2 })).choices,
      ).toHaveLength(1);
      for (const apiKey of ["wrong", ""]) {
        const bad = new OpenAI({
          baseURL: base,
          apiKey: apiKey || "x",
          maxRetries: 0,
          defaultHeaders: apiKey ? {} : { authorization: null },
        });
        await expect(bad.models.list()).rejects.toMatchObject({
          status: 401,
          error: { type: "authentication_error" },
        });
      }
    } finally {
      await secured.kill();
    }
  });
});
