/**
 * tandem.v1.Inference: Generate decodes and validates the request (INVALID_ARGUMENT
 * naming the field, or the message when its bytes are no GenerateRequest), then streams
 * a TokenEvent per token as soon as it is produced and a summary last; a client that
 * cancels stops the generation. ListModels names the model this agent serves. The
 * generation itself (generation.ts) is the one the HTTP API runs.
 */
import * as grpc from "@grpc/grpc-js";
import {
  decodeRequest,
  failCall,
  whenWritable,
  type ApiKeys,
  type GenerateEvent,
  type GenerateRequest__Output,
  type ListModelsResponse,
  type ModelInfo,
} from "@tandem/proto";
import { penaltyFromWire, type ExitMetric, type TokenLogprobs, type TokenSource } from "@tandem/runtime";
import { InvalidArgumentError, type Logger } from "@tandem/common";
import {
  type GenerationInput,
  type RequestContext,
  type RequestFieldNames,
  type RequestLimits,
  type ValidRequest,
  validateRequest,
} from "./generation-request.ts";
import {
  GenerationAdmission,
  runGeneration,
  type GenerationContext,
  type GenerationEvent,
} from "./generation.ts";

export { DEFAULT_REQUEST_LIMITS, type RequestLimits } from "./generation-request.ts";

export interface InferenceContext extends RequestContext, GenerationContext {
  /** The model's name (its directory's), as callers are told it; never its path on this device. */
  modelId: string;
  /** Layers run on this device. */
  split: number;
  log: Logger;
  /** When set, every call must carry one of these keys. */
  apiKeys?: ApiKeys;
  /** Shared with the HTTP API: its generations count against the same limits. */
  admission: GenerationAdmission;
}

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

/** The model as ListModels (and the HTTP API's /v1/models) describe it. */
export function modelInfo(context: InferenceContext): ModelInfo {
  return {
    id: context.modelId,
    layers: context.config.numLayers,
    split: context.split,
    vocabSize: context.config.vocabSize,
    maxPositions: context.config.maxPositions,
    chatTemplate: context.chatTemplate !== undefined,
  };
}

/** How the gRPC API spells each request field in its errors. */
export const GRPC_FIELDS: RequestFieldNames = {
  prompt: "prompt",
  text: "prompt.text",
  tokenIds: "prompt.token_ids",
  messages: "prompt.messages",
  maxTokens: "max_tokens",
  stop: "stop",
  sampling: "sampling",
  mode: "mode",
  exitPolicy: "exit_policy",
  topLogprobs: "top_logprobs",
  verify: "verify",
  maxDraftTokens: "max_draft_tokens",
};

const METRICS: Record<string, ExitMetric> = {
  CONFIDENCE_METRIC_PROB: "prob",
  CONFIDENCE_METRIC_MARGIN: "margin",
  CONFIDENCE_METRIC_ENTROPY: "entropy",
  CONFIDENCE_METRIC_LEARNED: "learned",
};

/** A GenerateRequest in the terms every API shares. */
function inputOf(request: GenerateRequest__Output): GenerationInput {
  const wireSampling = request.sampling ?? {
    temperature: 0,
    topP: 0,
    seed: "0",
    topK: 0,
    repetitionPenalty: 0,
    presencePenalty: 0,
    frequencyPenalty: 0,
  };
  const override = request.exitPolicy;
  let exitPolicy: GenerationInput["exitPolicy"];
  if (override) {
    if (override.metric !== "CONFIDENCE_METRIC_UNSPECIFIED" && !Object.hasOwn(METRICS, override.metric))
      throw new InvalidArgumentError("exit_policy.metric", `unknown value ${override.metric}`);
    exitPolicy = {
      metric: override.metric === "CONFIDENCE_METRIC_UNSPECIFIED" ? undefined : METRICS[override.metric],
      threshold: override.threshold,
      targetEscalationRate: override.targetEscalationRate,
    };
  }
  if (request.topLogprobs > 0 && !request.logprobs)
    throw new InvalidArgumentError("top_logprobs", "needs logprobs set");
  return {
    prompt:
      request.prompt === "text"
        ? { text: request.text ?? "" }
        : request.prompt === "tokenIds"
          ? { tokenIds: request.tokenIds?.ids ?? [] }
          : request.prompt === "messages"
            ? { messages: request.messages?.messages ?? [] }
            : undefined,
    maxTokens: request.maxTokens,
    stop: request.stop,
    sampling: {
      temperature: wireSampling.temperature,
      topP: wireSampling.topP,
      topK: wireSampling.topK,
      seed: BigInt(wireSampling.seed),
      repetitionPenalty: penaltyFromWire(wireSampling.repetitionPenalty),
      presencePenalty: penaltyFromWire(wireSampling.presencePenalty),
      frequencyPenalty: penaltyFromWire(wireSampling.frequencyPenalty),
    },
    mode: request.mode,
    exitPolicy,
    topLogprobs: request.logprobs ? request.topLogprobs : undefined,
    verify: request.verify,
    maxDraftTokens: request.maxDraftTokens,
  };
}

const FINISH_REASONS = {
  length: "FINISH_REASON_LENGTH",
  stop: "FINISH_REASON_STOP",
  eos: "FINISH_REASON_EOS",
} as const;

const SOURCES: Record<
  TokenSource,
  "TOKEN_SOURCE_EDGE" | "TOKEN_SOURCE_CLOUD" | "TOKEN_SOURCE_EDGE_FALLBACK"
> = {
  edge: "TOKEN_SOURCE_EDGE",
  cloud: "TOKEN_SOURCE_CLOUD",
  edge_fallback: "TOKEN_SOURCE_EDGE_FALLBACK",
};

/** Inference's handlers; Generate takes its request as bytes (registered withUndecodedRequests). */
export interface InferenceHandlers extends grpc.UntypedServiceImplementation {
  Generate: grpc.handleServerStreamingCall<Buffer, GenerateEvent>;
  ListModels: grpc.handleUnaryCall<Buffer, ListModelsResponse>;
}

/** A generation's event as the stream carries it. */
function eventMessage(event: GenerationEvent, context: InferenceContext): GenerateEvent {
  if (event.kind === "token")
    return {
      token: {
        id: event.id,
        text: event.text,
        source: SOURCES[event.source],
        exitLayer: event.exitLayer,
        confidence: event.confidence,
        position: event.position,
        logprobs: wireLogprobs(event.logprobs, context),
      },
    };
  if (event.kind === "rollback") return { rollback: { position: event.position } };
  return {
    summary: {
      promptTokens: event.promptTokens,
      edgeTokens: event.edgeTokens,
      cloudTokens: event.cloudTokens,
      fallbackTokens: event.fallbackTokens,
      escalations: event.escalations,
      bytesSent: String(event.bytesSent),
      bytesReceived: String(event.bytesReceived),
      finishReason: FINISH_REASONS[event.finishReason],
      draftedTokens: event.draftedTokens,
      acceptedTokens: event.acceptedTokens,
      rolledBackTokens: event.rolledBackTokens,
      timings: {
        firstTokenMs: event.firstTokenMs,
        totalMs: event.totalMs,
        edgeComputeMs: event.edgeComputeMs,
        cloudWaitMs: event.cloudWaitMs,
      },
    },
  };
}

function wireLogprobs(logprobs: TokenLogprobs | undefined, context: InferenceContext) {
  return (
    logprobs && {
      logprob: logprobs.logprob,
      top: logprobs.top.map((t) => ({
        id: t.token,
        text: context.tokenizer.decode([t.token]),
        logprob: t.logprob,
      })),
    }
  );
}

export function inferenceHandlers(context: InferenceContext): InferenceHandlers {
  return {
    ListModels(call, callback) {
      try {
        context.apiKeys?.check(call.metadata);
        decodeRequest("tandem.v1.ListModelsRequest", call.request, "request");
        callback(null, { models: [modelInfo(context)] });
      } catch (error) {
        failCall({ emit: (_event, status) => callback(status as grpc.ServiceError) }, error);
      }
    },
    Generate(call) {
      void (async () => {
        let release: () => void;
        let request: ValidRequest;
        try {
          const key = context.apiKeys?.check(call.metadata);
          request = validateRequest(
            inputOf(decodeRequest("tandem.v1.GenerateRequest", call.request, "request")),
            context,
            GRPC_FIELDS,
          );
          release = context.admission.admit(key);
        } catch (error) {
          const status = failCall(call, error);
          if (status.code === grpc.status.INTERNAL)
            context.log.error({ err: status.logged }, "generation refused by a fault of ours");
          return;
        }
        try {
          await runGeneration(context, request, {
            api: "grpc",
            headers: call.metadata.getMap(),
            emit: async (event) => {
              if (call.cancelled) return false;
              if (!call.write(eventMessage(event, context)))
                await whenWritable(call, context.limits.stallTimeoutMs);
              return !call.cancelled;
            },
          });
          if (!call.cancelled) call.end();
        } catch (error) {
          const status = failCall(call, error);
          context.log.error({ code: grpc.status[status.code], err: status.logged }, "generation failed");
        } finally {
          release();
        }
      })();
    },
  };
}
