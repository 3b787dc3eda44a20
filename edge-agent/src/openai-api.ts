/**
 * The OpenAI-compatible HTTP API of the edge agent, served by fastify in the same process
 * as the gRPC API and running the same generation (generation.ts): an application written
 * for OpenAI's API (or vLLM's, Ollama's, llama.cpp's server) works by changing only its
 * base URL.
 *
 *   GET  /v1/models                 the model this agent serves
 *   GET  /v1/models/{id}
 *   POST /v1/completions            prompt: text, [text] or token ids
 *   POST /v1/chat/completions       messages, rendered with the model's chat template
 *
 * `stream: true` answers with server-sent events, one chunk per token as soon as it is
 * produced, ending in `data: [DONE]`; a client that disconnects ends the generation.
 * Tandem's own options ride in an extension object `tandem: {mode, exit_policy}`, and each
 * chunk (and a whole response) carries a `tandem` field with the token's source and exit
 * layer: OpenAI clients ignore both. Errors come in OpenAI's shape,
 * `{"error": {"message", "type", "param", "code"}}`, with the HTTP status of the error's
 * code (the table below, from the same error codes as the gRPC statuses).
 */
import { randomUUID } from "node:crypto";
import { readFile } from "node:fs/promises";
import type { ServerResponse } from "node:http";
import Fastify, {
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  type FastifyServerOptions,
} from "fastify";
import { status as GrpcStatus } from "@grpc/grpc-js";
import { statusOf, whenWritable } from "@tandem/proto";
import type { ChatMessage } from "@tandem/runtime";
import {
  CancelledError,
  FailedPreconditionError,
  InvalidArgumentError,
  InternalError,
  TandemError,
  hostPort,
  type Logger,
} from "@tandem/common";
import {
  type GenerationInput,
  type RequestFieldNames,
  type ValidRequest,
  validateRequest,
} from "./generation-request.ts";
import { runGeneration, type GeneratedTokenEvent, type GenerationSummary } from "./generation.ts";
import { type InferenceContext, maxRequestBytes, modelInfo } from "./inference-service.ts";
import {
  CHAT_REQUEST,
  COMPLETION_REQUEST,
  type ChatRequest,
  type CompletionRequest,
  parseBody,
  refuseUnsupported,
} from "./openai-schemas.ts";

export interface HttpApiOptions {
  host: string;
  /** 0 picks a free one. */
  port: number;
  /** Files of the PEM certificate and key: serve HTTPS (the gRPC API's, re-read as it re-reads them). */
  tls?: { cert: string; key: string };
}

export interface RunningHttpApi {
  /** host:port it listens on. */
  address: string;
  /** Stops taking requests; those in flight get `graceMs` to finish. @default 0 */
  close(graceMs?: number): Promise<void>;
}

/** An error as OpenAI's API reports it, and the HTTP status it comes with. */
interface HttpError {
  status: number;
  body: { error: { message: string; type: string; param: string | null; code: string | null } };
}

/** The HTTP status of each gRPC status (the error table's other face), as gRPC gateways map them. */
const HTTP_STATUS: Partial<Record<GrpcStatus, number>> = {
  [GrpcStatus.INVALID_ARGUMENT]: 400,
  [GrpcStatus.FAILED_PRECONDITION]: 400,
  [GrpcStatus.UNAUTHENTICATED]: 401,
  [GrpcStatus.NOT_FOUND]: 404,
  [GrpcStatus.ABORTED]: 409,
  [GrpcStatus.RESOURCE_EXHAUSTED]: 429,
  [GrpcStatus.CANCELLED]: 499,
  [GrpcStatus.INTERNAL]: 500,
  [GrpcStatus.UNIMPLEMENTED]: 501,
  [GrpcStatus.UNAVAILABLE]: 503,
};

function errorType(status: number): string {
  if (status === 401) return "authentication_error";
  if (status === 429) return "rate_limit_error";
  if (status >= 500) return "server_error";
  return "invalid_request_error";
}

/** A thrown error as the client sees it: faults of ours only as an incident id (statusOf). */
function httpErrorOf(error: unknown, log: Logger): HttpError {
  if (error instanceof ModelNotFoundError)
    return {
      status: 404,
      body: {
        error: {
          message: error.message,
          type: "invalid_request_error",
          param: "model",
          code: "model_not_found",
        },
      },
    };
  // fastify's own refusals (a body that is no JSON, too large, of another type).
  if (!(error instanceof TandemError) && isFastifyClientError(error)) {
    return {
      status: error.statusCode,
      body: {
        error: {
          message: error.message,
          type: "invalid_request_error",
          param: null,
          code: error.code ?? null,
        },
      },
    };
  }
  const wire = statusOf(error);
  const status = HTTP_STATUS[wire.code] ?? 500;
  if (status >= 500) log.error({ err: wire.logged }, "HTTP request failed by a fault of ours or a peer's");
  const param =
    error instanceof InvalidArgumentError || error instanceof FailedPreconditionError ? error.field : null;
  const code = error instanceof TandemError ? error.code.toLowerCase() : "internal";
  return { status, body: { error: { message: wire.details, type: errorType(status), param, code } } };
}

function isFastifyClientError(
  error: unknown,
): error is { statusCode: number; message: string; code?: string } {
  const statusCode = (error as { statusCode?: unknown })?.statusCode;
  return typeof statusCode === "number" && statusCode >= 400 && statusCode < 500;
}

/**
 * The request names a model this agent does not serve: 404 with OpenAI's code. Only the
 * HTTP API names a model (a gRPC agent serves its one), so this lives here, outside the
 * error codes every API shares.
 */
class ModelNotFoundError extends Error {
  constructor(model: string, served: string) {
    super(`The model \`${model.slice(0, 128)}\` does not exist; this agent serves \`${served}\``);
    this.name = "ModelNotFoundError";
  }
}

const MODES = { auto: "MODE_AUTO", edge_only: "MODE_EDGE_ONLY", cloud_only: "MODE_CLOUD_ONLY" } as const;

/** How the HTTP API spells each field in errors: top-level sampling fields, the extension object. */
function fieldsOf(
  promptField: "prompt" | "messages",
  maxTokensField: string,
  topLogprobsField: string,
): RequestFieldNames {
  return {
    prompt: promptField,
    text: promptField,
    tokenIds: promptField,
    messages: promptField,
    maxTokens: maxTokensField,
    stop: "stop",
    sampling: "",
    mode: "tandem.mode",
    exitPolicy: "tandem.exit_policy",
    topLogprobs: topLogprobsField,
    verify: "tandem.verify",
    maxDraftTokens: "tandem.max_draft_tokens",
  };
}

/** The fields both endpoints share, in the terms every API shares. */
function commonInput(
  body: CompletionRequest | ChatRequest,
): Omit<GenerationInput, "prompt" | "maxTokens" | "topLogprobs"> {
  const policy = body.tandem?.exit_policy;
  return {
    stop: body.stop == null ? [] : typeof body.stop === "string" ? [body.stop] : body.stop,
    sampling: {
      // OpenAI's default temperature is 1; Tandem keeps greedy unless asked, as its gRPC API does.
      temperature: body.temperature ?? 0,
      topP: body.top_p ?? 1,
      topK: body.top_k ?? 0,
      seed: BigInt(body.seed ?? 0),
      repetitionPenalty: body.repetition_penalty ?? undefined,
      presencePenalty: body.presence_penalty ?? undefined,
      frequencyPenalty: body.frequency_penalty ?? undefined,
    },
    mode: MODES[body.tandem?.mode ?? "auto"],
    verify: `VERIFY_${(body.tandem?.verify ?? "none").toUpperCase()}`,
    maxDraftTokens: body.tandem?.max_draft_tokens,
    exitPolicy: policy && {
      metric: policy.metric,
      threshold: policy.threshold,
      targetEscalationRate: policy.target_escalation_rate,
    },
  };
}

function completionInput(body: CompletionRequest): GenerationInput {
  let prompt: GenerationInput["prompt"];
  if (typeof body.prompt === "string") prompt = { text: body.prompt };
  else if (body.prompt.length > 0 && body.prompt.every((p) => typeof p === "number"))
    prompt = { tokenIds: body.prompt as number[] };
  else if (body.prompt.length === 1) prompt = { text: body.prompt[0] as string };
  else
    throw new InvalidArgumentError(
      "prompt",
      "must be one text, a list of one text, or token ids (one prompt per request)",
    );
  return {
    ...commonInput(body),
    prompt,
    maxTokens: body.max_tokens ?? undefined,
    topLogprobs: body.logprobs ?? undefined,
  };
}

function chatInput(body: ChatRequest): GenerationInput {
  const messages: ChatMessage[] = body.messages.map((m) => ({
    role: m.role,
    content: typeof m.content === "string" ? m.content : m.content.map((part) => part.text).join(""),
  }));
  if (body.top_logprobs && !body.logprobs)
    throw new InvalidArgumentError("top_logprobs", "needs logprobs: true");
  return {
    ...commonInput(body),
    prompt: { messages },
    maxTokens: body.max_completion_tokens ?? body.max_tokens ?? undefined,
    topLogprobs: body.logprobs ? (body.top_logprobs ?? 0) : undefined,
  };
}

const FINISH_REASONS = { length: "length", stop: "stop", eos: "stop" } as const;

/** Per token (and per response): where the answer came from, for a Tandem-aware client. */
function tokenExtension(event: GeneratedTokenEvent) {
  return {
    token_id: event.id,
    source: event.source,
    exit_layer: event.exitLayer,
    confidence: event.confidence,
    position: event.position,
  };
}

function summaryExtension(summary: GenerationSummary) {
  return {
    edge_tokens: summary.edgeTokens,
    cloud_tokens: summary.cloudTokens,
    fallback_tokens: summary.fallbackTokens,
    escalations: summary.escalations,
    bytes_sent: summary.bytesSent,
    bytes_received: summary.bytesReceived,
    finish_reason: summary.finishReason,
    timings: {
      first_token_ms: summary.firstTokenMs,
      total_ms: summary.totalMs,
      edge_compute_ms: summary.edgeComputeMs,
      cloud_wait_ms: summary.cloudWaitMs,
    },
  };
}

function usageOf(summary: GenerationSummary) {
  return {
    prompt_tokens: summary.promptTokens,
    completion_tokens: summary.completionTokens,
    total_tokens: summary.promptTokens + summary.completionTokens,
  };
}

/** What one endpoint makes of the generation's events: chunks while streaming, one response otherwise. */
interface Endpoint {
  object: string;
  idPrefix: string;
  /** The first chunk of a stream (chat: the assistant's role), if any. */
  opening?(): object;
  chunk(event: GeneratedTokenEvent): object;
  closing(summary: GenerationSummary): object;
  response(tokens: GeneratedTokenEvent[], summary: GenerationSummary): object;
}

/**
 * No route has a JSON schema (zod checks the bodies, openai-schemas.ts): compilers that are
 * never called keep fastify from building ajv and fast-json-stringify at start, ~50 ms of
 * the edge's time to ready. (Cast: fastify types them as ajv's compile functions.)
 */
const NO_SCHEMA_COMPILERS = {
  compilersFactory: {
    buildValidator: () => () => () => true,
    buildSerializer: () => () => (data: unknown) => JSON.stringify(data),
  },
} as unknown as FastifyServerOptions["schemaController"];

export async function startHttpApi(
  context: InferenceContext,
  options: HttpApiOptions,
  log: Logger,
): Promise<RunningHttpApi> {
  const created = Math.floor(Date.now() / 1000);
  const limits = context.limits;
  const certificate = options.tls && (await readCertificate(options.tls));
  const app: FastifyInstance = Fastify({
    // JSON escapes a character in at most 6 bytes ("\uXXXX"), against 4 in protobuf.
    bodyLimit: Math.ceil(1.5 * maxRequestBytes(limits)),
    https: certificate ?? null,
    logger: false,
    schemaController: NO_SCHEMA_COMPILERS,
  });
  // A renewed certificate is taken up without a restart, as the gRPC server takes it.
  let certificateTimer: NodeJS.Timeout | undefined;
  if (options.tls && certificate) {
    let current = certificate;
    const files = options.tls;
    certificateTimer = setInterval(() => {
      readCertificate(files).then(
        (next) => {
          if (next.cert.equals(current.cert) && next.key.equals(current.key)) return;
          (app.server as unknown as { setSecureContext(context: object): void }).setSecureContext(next);
          current = next;
        },
        (error: unknown) =>
          log.warn({ err: error }, "cannot re-read the HTTP API's certificate; serving the old one"),
      );
    }, CERTIFICATE_REFRESH_MS).unref();
  }
  // Bodies are JSON: any other type is 415, not a string for the schema to refuse.
  app.removeContentTypeParser("text/plain");
  const tokenText = (id: number) => context.tokenizer.decode([id]);

  const send = (reply: FastifyReply, error: unknown) => {
    const { status, body } = httpErrorOf(error, log);
    return reply.code(status).send(body);
  };
  app.setErrorHandler((error, _request, reply) => send(reply, error));
  app.setNotFoundHandler((request, reply) =>
    reply.code(404).send({
      error: {
        message: `Unknown request URL: ${request.method} ${request.url.slice(0, 256)}`,
        type: "invalid_request_error",
        param: null,
        code: "unknown_url",
      },
    }),
  );
  const authorize = (request: FastifyRequest): string | undefined =>
    context.apiKeys?.checkAuthorization(request.headers.authorization);
  const model = () => ({
    id: context.modelId,
    object: "model",
    created,
    owned_by: "tandem",
    tandem: modelInfo(context),
  });

  app.get("/v1/models", async (request) => {
    authorize(request);
    return { object: "list", data: [model()] };
  });
  app.get<{ Params: { id: string } }>("/v1/models/:id", async (request) => {
    authorize(request);
    if (request.params.id !== context.modelId)
      throw new ModelNotFoundError(request.params.id, context.modelId);
    return model();
  });

  /** Validates, admits and runs one request of `endpoint`, streaming or not. */
  const serve = async (
    request: FastifyRequest,
    reply: FastifyReply,
    body: CompletionRequest | ChatRequest,
    input: GenerationInput,
    fields: RequestFieldNames,
    endpoint: Endpoint,
  ) => {
    const key = authorize(request);
    refuseUnsupported(body);
    if (body.model !== context.modelId) throw new ModelNotFoundError(body.model, context.modelId);
    if (!body.stream && body.stream_options)
      throw new InvalidArgumentError("stream_options", "only with stream: true");
    if (body.stream && body.tandem?.verify === "rollback")
      throw new InvalidArgumentError(
        "tandem.verify",
        'streamed chunks cannot withdraw text, which "rollback" needs: use "exact", or stream: false (rollbacks are applied before the answer)',
      );
    const valid: ValidRequest = validateRequest(input, context, fields);
    const release = context.admission.admit(key);
    const id = `${endpoint.idPrefix}-${randomUUID().replaceAll("-", "")}`;
    const envelope = () => ({ id, object: endpoint.object, created, model: context.modelId });
    // The client gone (disconnected, or aborted its request): end the generation at the next token.
    let gone = false;
    reply.raw.on("close", () => {
      if (!reply.raw.writableFinished) gone = true;
    });
    try {
      if (!body.stream) {
        const tokens: GeneratedTokenEvent[] = [];
        let summary: GenerationSummary | undefined;
        await runGeneration(context, valid, {
          api: "http",
          headers: request.headers,
          emit: async (event) => {
            if (event.kind === "token") tokens.push(event);
            // Withdrawn tokens leave the answer (verify "rollback").
            else if (event.kind === "rollback") {
              const withdrawn = tokens.findIndex((t) => t.position >= event.position);
              if (withdrawn >= 0) tokens.length = withdrawn;
            } else summary = event;
            return !gone;
          },
        });
        if (!summary) return reply.code(499).send();
        return reply.send({ ...envelope(), ...endpoint.response(tokens, summary) });
      }
      const includeUsage = body.stream_options?.include_usage === true;
      reply.hijack();
      const raw = reply.raw;
      raw.writeHead(200, {
        "content-type": "text/event-stream; charset=utf-8",
        "cache-control": "no-cache",
        connection: "keep-alive",
        "x-accel-buffering": "no",
      });
      const write = async (data: object | string) => {
        const line = `data: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`;
        if (!raw.write(line)) await whenWritable(raw, limits.stallTimeoutMs);
      };
      const withUsage = (chunk: object) => (includeUsage ? { ...chunk, usage: null } : chunk);
      try {
        if (endpoint.opening) await write(withUsage({ ...envelope(), ...endpoint.opening() }));
        await runGeneration(context, valid, {
          api: "http",
          headers: request.headers,
          emit: async (event) => {
            if (gone) return false;
            if (event.kind === "token") {
              await write(withUsage({ ...envelope(), ...endpoint.chunk(event) }));
            } else if (event.kind === "rollback") {
              // Refused above: a stream is never asked for rollbacks.
              throw new InternalError("a rollback in an HTTP stream");
            } else {
              await write(withUsage({ ...envelope(), ...endpoint.closing(event) }));
              if (includeUsage) await write({ ...envelope(), choices: [], usage: usageOf(event) });
              await write("[DONE]");
            }
            return !gone;
          },
        });
      } catch (error) {
        // A client that read nothing for stallTimeoutMs would read no error either: cut it.
        if (error instanceof CancelledError) raw.destroy();
        // Mid-stream the status is sent: the error goes as an event, then the stream ends.
        else if (!gone) await write(httpErrorOf(error, log).body).catch(() => {});
      } finally {
        endStream(raw);
      }
      return reply;
    } finally {
      release();
    }
  };

  app.post("/v1/completions", async (request, reply) => {
    const body = parseBody(COMPLETION_REQUEST, request.body);
    const logprobsOf = (event: GeneratedTokenEvent, offset: number) =>
      event.logprobs && {
        tokens: [tokenText(event.id)],
        token_logprobs: [event.logprobs.logprob],
        top_logprobs: [Object.fromEntries(event.logprobs.top.map((t) => [tokenText(t.token), t.logprob]))],
        text_offset: [offset],
      };
    let streamedChars = 0;
    return serve(request, reply, body, completionInput(body), fieldsOf("prompt", "max_tokens", "logprobs"), {
      object: "text_completion",
      idPrefix: "cmpl",
      chunk(event) {
        const logprobs = logprobsOf(event, streamedChars) ?? null;
        streamedChars += event.text.length;
        return {
          choices: [{ index: 0, text: event.text, logprobs, finish_reason: null }],
          tandem: tokenExtension(event),
        };
      },
      closing: (summary) => ({
        choices: [
          { index: 0, text: "", logprobs: null, finish_reason: FINISH_REASONS[summary.finishReason] },
        ],
        tandem: summaryExtension(summary),
      }),
      response(tokens, summary) {
        let offset = 0;
        const perToken = tokens.map((t) => {
          const entry = logprobsOf(t, offset);
          offset += t.text.length;
          return entry;
        });
        const logprobs =
          body.logprobs != null
            ? {
                tokens: perToken.flatMap((e) => e!.tokens),
                token_logprobs: perToken.flatMap((e) => e!.token_logprobs),
                top_logprobs: perToken.flatMap((e) => e!.top_logprobs),
                text_offset: perToken.flatMap((e) => e!.text_offset),
              }
            : null;
        return {
          choices: [
            {
              index: 0,
              text: tokens.map((t) => t.text).join(""),
              logprobs,
              finish_reason: FINISH_REASONS[summary.finishReason],
            },
          ],
          usage: usageOf(summary),
          tandem: { ...summaryExtension(summary), tokens: tokens.map(tokenExtension) },
        };
      },
    });
  });

  app.post("/v1/chat/completions", async (request, reply) => {
    const body = parseBody(CHAT_REQUEST, request.body);
    const logprobEntry = (id: number, logprob: number) => {
      const token = tokenText(id);
      return { token, logprob, bytes: [...Buffer.from(token, "utf8")] };
    };
    const contentLogprobs = (event: GeneratedTokenEvent) =>
      event.logprobs && {
        ...logprobEntry(event.id, event.logprobs.logprob),
        top_logprobs: event.logprobs.top.map((t) => logprobEntry(t.token, t.logprob)),
      };
    return serve(
      request,
      reply,
      body,
      chatInput(body),
      fieldsOf(
        "messages",
        body.max_completion_tokens != null ? "max_completion_tokens" : "max_tokens",
        "top_logprobs",
      ),
      {
        object: "chat.completion.chunk",
        idPrefix: "chatcmpl",
        opening: () => ({
          choices: [
            { index: 0, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null },
          ],
        }),
        chunk: (event) => ({
          choices: [
            {
              index: 0,
              delta: { content: event.text },
              logprobs: event.logprobs ? { content: [contentLogprobs(event)], refusal: null } : null,
              finish_reason: null,
            },
          ],
          tandem: tokenExtension(event),
        }),
        closing: (summary) => ({
          choices: [
            { index: 0, delta: {}, logprobs: null, finish_reason: FINISH_REASONS[summary.finishReason] },
          ],
          tandem: summaryExtension(summary),
        }),
        response: (tokens, summary) => ({
          object: "chat.completion",
          choices: [
            {
              index: 0,
              message: { role: "assistant", content: tokens.map((t) => t.text).join(""), refusal: null },
              logprobs: body.logprobs
                ? { content: tokens.map((t) => contentLogprobs(t)), refusal: null }
                : null,
              finish_reason: FINISH_REASONS[summary.finishReason],
            },
          ],
          usage: usageOf(summary),
          tandem: { ...summaryExtension(summary), tokens: tokens.map(tokenExtension) },
        }),
      },
    );
  });

  try {
    await app.listen({ host: options.host, port: options.port });
  } catch (error) {
    await app.close();
    throw new FailedPreconditionError(
      "httpAddress",
      `cannot listen on ${hostPort(options.host, options.port)}: ${(error as Error).message}`,
      { cause: error },
    );
  }
  const bound = app.server.address();
  const address =
    typeof bound === "object" && bound
      ? hostPort(options.host, bound.port)
      : hostPort(options.host, options.port);
  return {
    address,
    async close(graceMs = 0) {
      clearInterval(certificateTimer);
      // Requests in flight get the grace; streams still open after it are cut.
      const timer = setTimeout(() => app.server.closeAllConnections(), graceMs);
      try {
        await app.close();
      } finally {
        clearTimeout(timer);
      }
    },
  };
}

/** How often the certificate files are re-read (as the gRPC server does). */
const CERTIFICATE_REFRESH_MS = 5000;

async function readCertificate(files: { cert: string; key: string }): Promise<{ cert: Buffer; key: Buffer }> {
  const read = (path: string, field: string) =>
    readFile(path).catch((error: Error) => {
      throw new FailedPreconditionError(field, `cannot read ${path}: ${error.message}`, { cause: error });
    });
  return { cert: await read(files.cert, "tlsCert"), key: await read(files.key, "tlsKey") };
}

function endStream(raw: ServerResponse): void {
  if (!raw.writableEnded) raw.end();
}
