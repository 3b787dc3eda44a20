/**
 * The CloudWorker/Escalate handler: the gRPC transport of one escalation stream per edge
 * session. Each message goes, in order, to the session's EscalationSession (the
 * protocol's upper side in @tandem/runtime), which checks it before it touches any
 * state; a bad one ends the stream with the status of its error code (INVALID_ARGUMENT
 * or FAILED_PRECONDITION naming the field), while the session's context and the worker
 * stay as they were.
 */
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "@tandem/common";
import { failCall, type CloudWorkerHandlers, type EdgeMessage__Output } from "@tandem/proto";
import {
  DEFAULT_ESCALATION_LIMITS,
  EscalationSession,
  type EscalationCounters,
  type EscalationLimits,
  type SessionContexts,
  type UpperSideIdentity,
} from "@tandem/runtime";

/** What the worker's streams did, for logs, heartbeats and tests. */
export interface WorkerCounters extends EscalationCounters {
  streams: number;
  /** Streams ended by a bad message (the edge's fault). */
  rejected: number;
}

export function emptyWorkerCounters(): WorkerCounters {
  return { streams: 0, frames: 0, positions: 0, tokens: 0, rejected: 0, bytesReceived: 0 };
}

export function escalationHandlers(
  upper: UpperSideIdentity,
  contexts: SessionContexts,
  log: Logger,
  counters: WorkerCounters,
  limits: EscalationLimits = DEFAULT_ESCALATION_LIMITS,
): CloudWorkerHandlers {
  return {
    Escalate(call) {
      counters.streams++;
      const session = new EscalationSession(upper, contexts, limits, counters);
      let chain: Promise<void> = Promise.resolve();
      let ended = false;

      const fail = (error: unknown) => {
        if (ended) return;
        ended = true;
        const status = failCall(call, error);
        if (status.code !== grpc.status.INTERNAL) counters.rejected++;
        log.warn(
          { sessionId: session.sessionId, code: grpc.status[status.code], err: status.details },
          "escalation stream rejected",
        );
      };

      call.on("data", (message: EdgeMessage__Output) => {
        chain = chain.then(async () => {
          if (ended) return;
          try {
            const reply = await session.handle(message);
            if (reply && !ended && !call.writableEnded) call.write(reply);
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
