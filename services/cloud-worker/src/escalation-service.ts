/**
 * The CloudWorker/Escalate handler: one bidirectional stream per edge session. Every
 * message is validated before it touches a session; a bad one ends the stream with
 * INVALID_ARGUMENT or FAILED_PRECONDITION and a message naming the field, while the
 * session's context and the worker stay as they were.
 */
import * as grpc from "@grpc/grpc-js";
import type {
  CloudMessage,
  CloudWorkerHandlers,
  EdgeMessage__Output,
  HiddenStateFrame__Output,
  OpenSession__Output,
} from "@tandem/proto";
import { getCodec, type CodecName, type HiddenStateCodec } from "@tandem/runtime";
import type { ModelConfig } from "@tandem/runtime";
import { RuntimeError } from "@tandem/common";
import { sampleToken, type SamplingOptions } from "@tandem/runtime";
import { ContextLostError } from "@tandem/runtime";
import type { ContextManager } from "./context-manager.ts";
import type { Logger } from "pino";

export interface EscalationLimits {
  /** Largest frame, in positions. @default 4096 */
  maxFrameTokens: number;
  /** Longest session id. @default 128 */
  maxSessionIdLength: number;
}

export const DEFAULT_ESCALATION_LIMITS: EscalationLimits = { maxFrameTokens: 4096, maxSessionIdLength: 128 };

export interface WorkerModel {
  workerId: string;
  modelId: string;
  weightsHash: string;
  split: number;
  config: ModelConfig;
}

const CODECS: Record<string, CodecName> = {
  HIDDEN_STATE_CODEC_FP32: "fp32",
  HIDDEN_STATE_CODEC_FP16: "fp16",
  HIDDEN_STATE_CODEC_INT8: "int8",
  HIDDEN_STATE_CODEC_INT4: "int4",
};

/** A client error with the gRPC status it ends the stream with. */
class StreamError extends Error {
  constructor(
    readonly code: grpc.status,
    message: string,
  ) {
    super(message);
  }
}

export interface EscalationCounters {
  streams: number;
  frames: number;
  positions: number;
  tokens: number;
  rejected: number;
  bytesReceived: number;
}

export function escalationHandlers(
  model: WorkerModel,
  contexts: ContextManager,
  log: Logger,
  counters: EscalationCounters,
  limits: EscalationLimits = DEFAULT_ESCALATION_LIMITS,
): CloudWorkerHandlers {
  return {
    Escalate(call) {
      counters.streams++;
      let session: { id: string; codec: HiddenStateCodec } | undefined;
      let chain: Promise<void> = Promise.resolve();
      let ended = false;

      const fail = (error: unknown) => {
        if (ended) return;
        ended = true;
        const streamError =
          error instanceof StreamError
            ? error
            : error instanceof RuntimeError
              ? new StreamError(grpc.status.INVALID_ARGUMENT, error.message)
              : new StreamError(grpc.status.INTERNAL, `worker error: ${(error as Error).message}`);
        if (streamError.code !== grpc.status.INTERNAL) counters.rejected++;
        log.warn(
          { sessionId: session?.id, code: grpc.status[streamError.code], err: streamError.message },
          "escalation stream rejected",
        );
        call.emit("error", { code: streamError.code, details: streamError.message } as grpc.ServiceError);
      };
      const send = (message: CloudMessage) => {
        if (!ended && !call.writableEnded) call.write(message);
      };

      const open = (message: OpenSession__Output) => {
        if (session)
          throw new StreamError(grpc.status.FAILED_PRECONDITION, "open: the stream already has a session");
        if (!message.sessionId || message.sessionId.length > limits.maxSessionIdLength) {
          throw new StreamError(
            grpc.status.INVALID_ARGUMENT,
            `open.session_id: must hold 1 to ${limits.maxSessionIdLength} characters`,
          );
        }
        if (message.weightsHash !== model.weightsHash) {
          throw new StreamError(
            grpc.status.FAILED_PRECONDITION,
            `open.weights_hash: worker serves ${model.weightsHash.slice(0, 16)}…, edge has ${message.weightsHash.slice(0, 16) || "(empty)"}…`,
          );
        }
        if (message.splitLayer !== model.split) {
          throw new StreamError(
            grpc.status.FAILED_PRECONDITION,
            `open.split_layer: worker runs layers from ${model.split}, edge split at ${message.splitLayer}`,
          );
        }
        if (message.hiddenSize !== model.config.hiddenSize) {
          throw new StreamError(
            grpc.status.FAILED_PRECONDITION,
            `open.hidden_size: model has ${model.config.hiddenSize}, edge sent ${message.hiddenSize}`,
          );
        }
        const codec = CODECS[message.codec];
        if (!codec)
          throw new StreamError(
            grpc.status.INVALID_ARGUMENT,
            `open.codec: must be one of ${Object.keys(CODECS).join(", ")}, got ${message.codec}`,
          );
        session = { id: message.sessionId, codec: getCodec(codec) };
        send({
          opened: { contextLength: contexts.contextLength(message.sessionId), workerId: model.workerId },
        });
      };

      const frame = async (message: HiddenStateFrame__Output) => {
        if (!session)
          throw new StreamError(grpc.status.FAILED_PRECONDITION, "frame: the stream must start with open");
        const { count, start } = message;
        if (count < 1 || count > limits.maxFrameTokens) {
          throw new StreamError(
            grpc.status.INVALID_ARGUMENT,
            `frame.count: must be in [1, ${limits.maxFrameTokens}], got ${count}`,
          );
        }
        if (start + count > model.config.maxPositions) {
          throw new StreamError(
            grpc.status.INVALID_ARGUMENT,
            `frame.start: positions up to ${start + count} exceed the model's ${model.config.maxPositions}`,
          );
        }
        const expected = session.codec.encodedBytes(count, model.config.hiddenSize);
        if (message.payload.length !== expected) {
          throw new StreamError(
            grpc.status.INVALID_ARGUMENT,
            `frame.payload: ${session.codec.name} for ${count} positions of ${model.config.hiddenSize} needs ${expected} bytes, got ${message.payload.length}`,
          );
        }
        if (!(message.temperature >= 0 && message.temperature <= 100)) {
          throw new StreamError(
            grpc.status.INVALID_ARGUMENT,
            `frame.temperature: must be in [0, 100], got ${message.temperature}`,
          );
        }
        if (!(message.topP >= 0 && message.topP <= 1))
          throw new StreamError(
            grpc.status.INVALID_ARGUMENT,
            `frame.top_p: must be in [0, 1], got ${message.topP}`,
          );
        let hidden: Float32Array;
        try {
          hidden = session.codec.decode(message.payload, count, model.config.hiddenSize);
        } catch (error) {
          throw new StreamError(grpc.status.INVALID_ARGUMENT, `frame.payload: ${(error as Error).message}`);
        }
        counters.frames++;
        counters.bytesReceived += message.payload.length;
        let step;
        try {
          step = await contexts.append(session.id, start, hidden, count);
        } catch (error) {
          if (error instanceof ContextLostError) {
            send({
              contextLost: {
                resumeFrom: error.resumeFrom,
                reason: error.message,
                requestId: message.requestId,
              },
            });
            return;
          }
          throw error;
        }
        counters.positions += count;
        if (!message.wantToken) return;
        const head = step.exits[step.exits.length - 1];
        const sampling: SamplingOptions = {
          temperature: message.temperature,
          topP: message.topP,
          seed: BigInt(message.seed),
        };
        const answer =
          message.temperature === 0 || !head.logits
            ? { token: head.token[head.token.length - 1], prob: head.prob[head.prob.length - 1] }
            : sampleToken(
                head.logits.subarray(head.logits.length - model.config.vocabSize),
                sampling,
                start + count,
              );
        counters.tokens++;
        send({
          token: {
            requestId: message.requestId,
            position: start + count,
            token: answer.token,
            prob: answer.prob,
          },
        });
      };

      call.on("data", (message: EdgeMessage__Output) => {
        chain = chain.then(async () => {
          if (ended) return;
          try {
            if (message.message === "open" && message.open) open(message.open);
            else if (message.message === "frame" && message.frame) await frame(message.frame);
            else if (message.message === "close") {
              if (session) contexts.release(session.id);
              session = undefined;
            } else
              throw new StreamError(grpc.status.INVALID_ARGUMENT, "message: must be open, frame or close");
          } catch (error) {
            fail(error);
          }
        });
      });
      call.on("end", () => {
        void chain.then(() => {
          if (!ended) {
            ended = true;
            call.end();
          }
        });
      });
      call.on("error", () => {
        ended = true;
      });
    },
  };
}
