/**
 * Inference/Generate: decodes and validates the request (INVALID_ARGUMENT naming the
 * field, or the message when its bytes are no GenerateRequest), turns its prompt into
 * token ids (text as the tokenizer's authors intend, with BOS where they add one; a
 * conversation through the model's chat template, which writes its own BOS), then runs
 * the collaborative loop for one session and streams a TokenEvent per token and a
 * summary last. A client that cancels stops the generation.
 */
import { randomUUID } from "node:crypto";
import { whenWritable, type ApiKeys } from "@tandem/proto";
import * as grpc from "@grpc/grpc-js";
import { decodeRequest, failCall, type GenerateEvent, type GenerateRequest__Output } from "@tandem/proto";
import {
  AlwaysDeferPolicy,
  AlwaysExitPolicy,
  BudgetExitPolicy,
  type ChatMessage,
  type ChatTemplate,
  DEFAULT_GENERATE_OPTIONS,
  type ConfidenceMetric,
  type ExitPolicy,
  IncrementalDecoder,
  type ModelConfig,
  type SamplingOptions,
  type SegmentSessions,
  SplitGenerator,
  ThresholdExitPolicy,
  validateSampling,
  type Tokenizer,
  type TokenSource,
} from "@tandem/runtime";
import {
  FailedPreconditionError,
  InvalidArgumentError,
  ResourceExhaustedError,
  type Logger,
} from "@tandem/common";
import type { CloudLinks, CloudSession } from "./cloud-link.ts";
import { StopSequenceFilter } from "./stop-sequences.ts";

export interface InferenceContext {
  config: ModelConfig;
  /** The model's name (its directory's), as callers are told it; never its path on this device. */
  modelId: string;
  lower: SegmentSessions;
  tokenizer: Tokenizer;
  /** Renders `messages` prompts; undefined when the checkpoint has none (such prompts are then refused). */
  chatTemplate?: ChatTemplate;
  /** Undefined: no cloud configured (edge only). */
  cloud?: CloudLinks;
  /** A new policy for AUTO mode, per session (policies may keep state). */
  autoPolicy: () => ExitPolicy;
  exitLayers: number[];
  limits: RequestLimits;
  log: Logger;
  /** When set, every call must carry one of these keys. */
  apiKeys?: ApiKeys;
}

/** What one Generate request may ask for. */
export interface RequestLimits {
  /** Largest max_tokens. @default 1024 */
  maxTokensLimit: number;
  /** max_tokens when a request leaves it 0. @default 64 */
  defaultMaxTokens: number;
  /** Longest prompt, in tokens. @default 2048 */
  maxPromptTokens: number;
  /** Most stop sequences. @default 8 */
  maxStops: number;
  /** Longest stop sequence, in characters. @default 64 */
  maxStopLength: number;
  /** Longest prompt text, in characters (checked before tokenizing); for messages, their contents together. @default 65536 */
  maxPromptChars: number;
  /** Most messages in a `messages` prompt. @default 256 */
  maxMessages: number;
  /** Generations running at once; one more gets RESOURCE_EXHAUSTED. @default 64 */
  maxStreams: number;
  /** Generations running at once per API key (when keys are configured). @default 16 */
  maxStreamsPerKey: number;
  /** A client that takes no event for this long is cut (CANCELLED) and its session released. @default 30000 */
  stallTimeoutMs: number;
}

export const DEFAULT_REQUEST_LIMITS: RequestLimits = {
  maxTokensLimit: 1024,
  defaultMaxTokens: DEFAULT_GENERATE_OPTIONS.maxTokens,
  maxPromptTokens: 2048,
  maxStops: 8,
  maxStopLength: 64,
  maxPromptChars: 64 * 1024,
  maxMessages: 256,
  maxStreams: 64,
  maxStreamsPerKey: 16,
  stallTimeoutMs: 30_000,
};

/**
 * The largest legal Generate request, bytes: a prompt of the most characters (up to 4
 * bytes each in UTF-8), token ids (up to 10 bytes each) or messages (their framing and
 * role, under 32 bytes each, besides the characters), the stop sequences, and the other
 * fields. What the server is told to accept.
 */
export function maxRequestBytes(limits: RequestLimits): number {
  return (
    4 * limits.maxPromptChars +
    10 * limits.maxPromptTokens +
    32 * limits.maxMessages +
    4 * limits.maxStops * limits.maxStopLength +
    4096
  );
}

interface ValidRequest {
  ids: number[];
  maxTokens: number;
  stops: string[];
  sampling: SamplingOptions;
  mode: "MODE_AUTO" | "MODE_EDGE_ONLY" | "MODE_CLOUD_ONLY";
  policy: () => ExitPolicy;
}

/**
 * The roles a `messages` prompt may use: those every chat template knows. "tool" (and
 * Llama's "ipython") are left out: a tool's answer belongs to an assistant tool call,
 * which the API cannot carry, and templates render a lone one inconsistently.
 */
const CHAT_ROLES: readonly string[] = ["system", "user", "assistant"];

const METRICS: Record<string, ConfidenceMetric> = {
  CONFIDENCE_METRIC_PROB: "prob",
  CONFIDENCE_METRIC_MARGIN: "margin",
  CONFIDENCE_METRIC_ENTROPY: "entropy",
};

function validate(request: GenerateRequest__Output, context: InferenceContext): ValidRequest {
  const { limits, config } = context;
  let ids: number[];
  if (request.prompt === "text") {
    if (!request.text) throw new InvalidArgumentError("prompt.text", "must not be empty");
    if (request.text.length > limits.maxPromptChars)
      throw new InvalidArgumentError(
        "prompt.text",
        `${request.text.length} characters exceed the limit ${limits.maxPromptChars}`,
      );
    ids = context.tokenizer.encodePrompt(request.text);
  } else if (request.prompt === "messages") {
    if (!context.chatTemplate)
      throw new FailedPreconditionError(
        "prompt.messages",
        `the model ${context.modelId} has no chat template (neither chat_template.jinja nor a chat_template in tokenizer_config.json); send text or token_ids`,
      );
    const messages = validMessages(request.messages?.messages ?? [], limits);
    const text = context.chatTemplate.render(messages, { field: "prompt.messages" });
    // The template writes BOS and every other special token itself, as transformers has it.
    ids = context.tokenizer.encode(text);
  } else if (request.prompt === "tokenIds") {
    ids = request.tokenIds?.ids ?? [];
    const bad = ids.findIndex((id) => id >= config.vocabSize);
    if (bad >= 0)
      throw new InvalidArgumentError(
        `prompt.token_ids[${bad}]`,
        `${ids[bad]} is outside the vocabulary [0, ${config.vocabSize})`,
      );
  } else {
    throw new InvalidArgumentError("prompt", "set text, token_ids or messages");
  }
  if (ids.length === 0) throw new InvalidArgumentError("prompt", "encodes to no tokens");
  if (ids.length > limits.maxPromptTokens)
    throw new InvalidArgumentError(
      "prompt",
      `${ids.length} tokens exceed the limit ${limits.maxPromptTokens}`,
    );
  const maxTokens = request.maxTokens === 0 ? limits.defaultMaxTokens : request.maxTokens;
  if (maxTokens > limits.maxTokensLimit)
    throw new InvalidArgumentError("max_tokens", `${maxTokens} exceeds the limit ${limits.maxTokensLimit}`);
  if (ids.length + maxTokens > config.maxPositions)
    throw new InvalidArgumentError(
      "max_tokens",
      `prompt + max_tokens = ${ids.length + maxTokens} exceeds the model's ${config.maxPositions} positions`,
    );
  if (request.stop.length > limits.maxStops)
    throw new InvalidArgumentError(
      "stop",
      `at most ${limits.maxStops} sequences, got ${request.stop.length}`,
    );
  request.stop.forEach((s, i) => {
    if (s.length === 0 || s.length > limits.maxStopLength)
      throw new InvalidArgumentError(`stop[${i}]`, `must hold 1 to ${limits.maxStopLength} characters`);
  });
  const wireSampling = request.sampling ?? { temperature: 0, topP: 0, seed: "0" };
  const sampling: SamplingOptions = {
    temperature: wireSampling.temperature,
    topP: wireSampling.topP,
    seed: BigInt(wireSampling.seed),
  };
  validateSampling(sampling, "sampling");
  const mode = request.mode as ValidRequest["mode"];
  if (!["MODE_AUTO", "MODE_EDGE_ONLY", "MODE_CLOUD_ONLY"].includes(mode))
    throw new InvalidArgumentError("mode", `unknown value ${request.mode}`);
  if (mode === "MODE_CLOUD_ONLY" && !context.cloud)
    throw new FailedPreconditionError(
      "mode",
      "CLOUD_ONLY needs a cloud worker, and this agent has none configured",
    );

  let policy = context.autoPolicy;
  const override = request.exitPolicy;
  if (
    override &&
    (override.metric !== "CONFIDENCE_METRIC_UNSPECIFIED" || override.targetEscalationRate !== 0)
  ) {
    let metric: ConfidenceMetric = "prob";
    if (override.metric !== "CONFIDENCE_METRIC_UNSPECIFIED") {
      if (!Object.hasOwn(METRICS, override.metric))
        throw new InvalidArgumentError("exit_policy.metric", `unknown value ${override.metric}`);
      metric = METRICS[override.metric];
    }
    if (override.targetEscalationRate !== 0) {
      if (!(override.targetEscalationRate > 0 && override.targetEscalationRate < 1))
        throw new InvalidArgumentError(
          "exit_policy.target_escalation_rate",
          `must be in (0, 1), got ${override.targetEscalationRate}`,
        );
      policy = () => new BudgetExitPolicy(override.targetEscalationRate, metric);
    } else {
      if (!Number.isFinite(override.threshold))
        throw new InvalidArgumentError("exit_policy.threshold", "must be finite");
      policy = () => ThresholdExitPolicy.uniform(context.exitLayers, metric, override.threshold);
    }
  }
  if (mode === "MODE_EDGE_ONLY") policy = () => new AlwaysExitPolicy();
  if (mode === "MODE_CLOUD_ONLY") policy = () => new AlwaysDeferPolicy();
  return {
    ids,
    maxTokens,
    stops: request.stop,
    sampling,
    mode,
    policy,
  };
}

/** The messages of a request, each with a known role and some content, within the limits. */
function validMessages(messages: readonly ChatMessage[], limits: RequestLimits): ChatMessage[] {
  if (messages.length === 0)
    throw new InvalidArgumentError("prompt.messages", "must hold at least one message");
  if (messages.length > limits.maxMessages)
    throw new InvalidArgumentError(
      "prompt.messages",
      `${messages.length} messages exceed the limit ${limits.maxMessages}`,
    );
  let chars = 0;
  return messages.map(({ role, content }, i) => {
    if (!role) throw new InvalidArgumentError(`prompt.messages[${i}].role`, "must not be empty");
    if (!CHAT_ROLES.includes(role))
      throw new InvalidArgumentError(
        `prompt.messages[${i}].role`,
        `must be one of ${CHAT_ROLES.join(", ")}, got ${JSON.stringify(role.slice(0, 32))}`,
      );
    if (!content) throw new InvalidArgumentError(`prompt.messages[${i}].content`, "must not be empty");
    chars += content.length;
    if (chars > limits.maxPromptChars)
      throw new InvalidArgumentError(
        `prompt.messages[${i}].content`,
        `the messages' content reaches ${chars} characters here, over the limit ${limits.maxPromptChars}`,
      );
    return { role, content };
  });
}

const SOURCES: Record<
  TokenSource,
  "TOKEN_SOURCE_EDGE" | "TOKEN_SOURCE_CLOUD" | "TOKEN_SOURCE_EDGE_FALLBACK"
> = {
  edge: "TOKEN_SOURCE_EDGE",
  cloud: "TOKEN_SOURCE_CLOUD",
  edge_fallback: "TOKEN_SOURCE_EDGE_FALLBACK",
};

/** Inference's handlers, each request taken as its bytes (registered withUndecodedRequests). */
export interface GenerateHandlers extends grpc.UntypedServiceImplementation {
  Generate: grpc.handleServerStreamingCall<Buffer, GenerateEvent>;
}

export function inferenceHandlers(context: InferenceContext): GenerateHandlers {
  let running = 0;
  const runningByKey = new Map<string, number>();
  /** Takes a place for one generation, or throws RESOURCE_EXHAUSTED; returns its release. */
  const admit = (key: string | undefined): (() => void) => {
    const { maxStreams, maxStreamsPerKey } = context.limits;
    if (running >= maxStreams)
      throw new ResourceExhaustedError(
        "streams",
        `${running} generations are running, the limit is ${maxStreams}`,
      );
    const mine = key === undefined ? 0 : (runningByKey.get(key) ?? 0);
    if (key !== undefined && mine >= maxStreamsPerKey)
      throw new ResourceExhaustedError(
        "streams",
        `${mine} generations of this API key are running, the limit is ${maxStreamsPerKey}`,
      );
    running++;
    if (key !== undefined) runningByKey.set(key, mine + 1);
    return () => {
      running--;
      if (key === undefined) return;
      const left = (runningByKey.get(key) ?? 1) - 1;
      if (left === 0) runningByKey.delete(key);
      else runningByKey.set(key, left);
    };
  };
  return {
    Generate(call) {
      void (async () => {
        let request: ValidRequest;
        let release: () => void;
        try {
          const key = context.apiKeys?.check(call.metadata);
          request = validate(decodeRequest("tandem.v1.GenerateRequest", call.request, "request"), context);
          release = admit(key);
        } catch (error) {
          const status = failCall(call, error);
          if (status.code === grpc.status.INTERNAL)
            context.log.error({ err: status.logged }, "generation refused by a fault of ours");
          return;
        }
        const sessionId = randomUUID();
        const started = performance.now();
        let firstTokenMs = 0;
        let cloudSession: CloudSession | undefined;
        let finish: "FINISH_REASON_LENGTH" | "FINISH_REASON_STOP" | "FINISH_REASON_EOS" =
          "FINISH_REASON_LENGTH";
        const eos = new Set(context.config.eosTokenId ?? []);
        // Each event is written when the next token arrives, so text held back at the end
        // (a partial stop sequence, an unfinished character) can join the last event.
        let previous: GenerateEvent | undefined;
        // Everything from here on runs inside the try: a throw while setting up must still
        // answer the call and give back the admitted place.
        try {
          if (request.mode !== "MODE_EDGE_ONLY" && context.cloud)
            cloudSession = context.cloud.session(sessionId);
          const generator = new SplitGenerator(context.lower, cloudSession, request.policy(), sessionId);
          const decoder = new IncrementalDecoder(context.tokenizer);
          const stops = new StopSequenceFilter(request.stops);
          for await (const token of generator.generate(request.ids, {
            maxTokens: request.maxTokens,
            stopTokenIds: [...eos],
            sampling: request.sampling,
          })) {
            if (call.cancelled) break;
            if (firstTokenMs === 0) firstTokenMs = performance.now() - started;
            const text = eos.has(token.token) ? "" : stops.push(decoder.push(token.token));
            if (previous && !call.write(previous)) await whenWritable(call, context.limits.stallTimeoutMs);
            previous = {
              token: {
                id: token.token,
                text,
                source: SOURCES[token.source],
                exitLayer: token.exitLayer,
                confidence: token.confidence,
                position: token.position,
              },
            };
            if (eos.has(token.token)) {
              finish = "FINISH_REASON_EOS";
              break;
            }
            if (stops.stopped) {
              finish = "FINISH_REASON_STOP";
              break;
            }
          }
          if (call.cancelled) return;
          if (previous) {
            previous.token!.text += stops.push(decoder.flush()) + stops.flush();
            call.write(previous);
          }
          const stats = generator.stats;
          call.write({
            summary: {
              promptTokens: stats.promptTokens,
              edgeTokens: stats.edgeTokens,
              cloudTokens: stats.cloudTokens,
              fallbackTokens: stats.fallbackTokens,
              escalations: stats.escalations,
              bytesSent: String(cloudSession?.bytesSent ?? 0),
              bytesReceived: String(cloudSession?.bytesReceived ?? 0),
              finishReason: finish,
              timings: {
                firstTokenMs,
                totalMs: performance.now() - started,
                edgeComputeMs: stats.lowerMs,
                cloudWaitMs: stats.upperMs,
              },
            },
          });
          call.end();
        } catch (error) {
          const status = failCall(call, error);
          context.log.error(
            { sessionId, code: grpc.status[status.code], err: status.logged },
            "generation failed",
          );
        } finally {
          release();
          await cloudSession?.close();
        }
      })();
    },
  };
}
