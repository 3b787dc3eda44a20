/**
 * The request bodies of the OpenAI-compatible HTTP API, as zod schemas: the fields Tandem
 * honours, with their types; the fields of OpenAI's API it cannot honour, refused by name
 * when a request sets them to anything but their default (an application must not get a
 * silently different answer); and Tandem's own options in the `tandem` extension object.
 * Unknown fields are ignored, as OpenAI's own clients send new ones before servers know
 * them.
 */
import { z } from "zod";
import { InvalidArgumentError } from "@tandem/common";
import { MAX_TOP_LOGPROBS } from "@tandem/runtime";

const STOP = z.union([z.string(), z.array(z.string())]).nullish();

/** Tandem's per-request options: an OpenAI client passes them through untouched (extra_body). */
const TANDEM_OPTIONS = z
  .object({
    mode: z.enum(["auto", "edge_only", "cloud_only"]).optional(),
    /** tandem.v1.Verify: "rollback" only without stream (OpenAI's chunks cannot withdraw text). */
    verify: z.enum(["none", "rollback", "exact"]).optional(),
    max_draft_tokens: z.int().optional(),
    exit_policy: z
      .object({
        metric: z.enum(["prob", "margin", "entropy", "learned"]).optional(),
        threshold: z.number().optional(),
        target_escalation_rate: z.number().optional(),
      })
      .strict()
      .optional(),
  })
  .strict()
  .nullish();

/** Fields both endpoints take. */
const SAMPLING_FIELDS = {
  model: z.string(),
  max_tokens: z.int().nullish(),
  temperature: z.number().nullish(),
  top_p: z.number().nullish(),
  /** Not OpenAI's, but vLLM's and llama.cpp's server's: clients send it in extra_body. */
  top_k: z.int().nullish(),
  /** vLLM's (transformers' semantics); also not OpenAI's. */
  repetition_penalty: z.number().nullish(),
  seed: z.int().nullish(),
  stop: STOP,
  n: z.int().nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.object({ include_usage: z.boolean().nullish() }).nullish(),
  presence_penalty: z.number().nullish(),
  frequency_penalty: z.number().nullish(),
  logit_bias: z.record(z.string(), z.number()).nullish(),
  user: z.string().nullish(),
  tandem: TANDEM_OPTIONS,
};

export const COMPLETION_REQUEST = z.object({
  ...SAMPLING_FIELDS,
  prompt: z.union([z.string(), z.array(z.string()), z.array(z.int())]),
  logprobs: z.int().min(0).max(5).nullish(),
  echo: z.boolean().nullish(),
  suffix: z.string().nullish(),
  best_of: z.int().nullish(),
});
export type CompletionRequest = z.output<typeof COMPLETION_REQUEST>;

const CONTENT_PART = z.object({ type: z.literal("text"), text: z.string() });

export const CHAT_REQUEST = z.object({
  ...SAMPLING_FIELDS,
  messages: z.array(
    z.object({
      role: z.string(),
      content: z.union([z.string(), z.array(CONTENT_PART)]),
      name: z.string().nullish(),
    }),
  ),
  max_completion_tokens: z.int().nullish(),
  logprobs: z.boolean().nullish(),
  top_logprobs: z.int().min(0).max(MAX_TOP_LOGPROBS).nullish(),
  tools: z.array(z.unknown()).nullish(),
  tool_choice: z.unknown().optional(),
  functions: z.array(z.unknown()).nullish(),
  response_format: z.object({ type: z.string() }).loose().nullish(),
});
export type ChatRequest = z.output<typeof CHAT_REQUEST>;

/**
 * Parses a body with `schema`; the first issue becomes an InvalidArgumentError naming its
 * field as the body spells it (`messages[0].content`).
 */
export function parseBody<S extends z.ZodType>(schema: S, body: unknown): z.output<S> {
  if (typeof body !== "object" || body === null || Array.isArray(body))
    throw new InvalidArgumentError("body", "must be a JSON object");
  const result = schema.safeParse(body);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  throw new InvalidArgumentError(fieldPath(issue.path) || "body", issue.message);
}

function fieldPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const part of path)
    out += typeof part === "number" ? `[${part}]` : out ? `.${String(part)}` : String(part);
  return out;
}

/** Refuses, by name, what the common fields set that Tandem cannot honour. */
export function refuseUnsupported(body: CompletionRequest | ChatRequest): void {
  if (body.n != null && body.n !== 1)
    throw new InvalidArgumentError("n", `only 1 choice per request is supported, got ${body.n}`);
  if (body.logit_bias && Object.keys(body.logit_bias).length > 0)
    throw new InvalidArgumentError("logit_bias", "is not supported");
  if ("echo" in body) {
    if (body.echo) throw new InvalidArgumentError("echo", "is not supported");
    if (body.suffix) throw new InvalidArgumentError("suffix", "is not supported");
    if (body.best_of != null && body.best_of !== 1)
      throw new InvalidArgumentError("best_of", `only 1 is supported, got ${body.best_of}`);
  }
  if ("messages" in body) {
    if ((body.tools && body.tools.length > 0) || (body.functions && body.functions.length > 0))
      throw new InvalidArgumentError(body.tools ? "tools" : "functions", "tool calls are not supported");
    if (body.response_format && body.response_format.type !== "text")
      throw new InvalidArgumentError(
        "response_format",
        `only {"type": "text"} is supported, got ${JSON.stringify(body.response_format.type)}`,
      );
  }
}
