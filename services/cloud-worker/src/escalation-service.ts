/**
 * The CloudWorker/Escalate handler: the gRPC transport of one escalation stream per edge
 * session. Each message goes, in order, to the session's EscalationSession (the
 * protocol's upper side in @tandem/runtime), which checks it before it touches any
 * state; a bad one ends the stream with the status of its error code (INVALID_ARGUMENT
 * or FAILED_PRECONDITION naming the field), while the session's context and the worker
 * stay as they were. Messages arrive as bytes (the service is registered
 * withUndecodedRequests) and are decoded here, in turn: bytes that are no EdgeMessage are
 * such a bad message too, refused, counted and logged like any other, where grpc-js would
 * answer them INTERNAL and tell no one.
 *
 * Over mutual TLS the device named by the client certificate owns its sessions: they live
 * in its namespace of the context manager, and a revoked certificate is refused when a
 * stream starts. One stream writes a session at a time: a newer stream opening the same
 * session (a device reconnecting while its old stream still has frames queued) supersedes
 * the older, which ends with ABORTED and drops what it had queued before the newer
 * stream's open applies. Only an open that passes its checks takes a session over: a
 * refused one leaves the session's stream as it was.
 *
 * In a cluster the worker serves only the sessions the placement map gives it: another
 * worker's session gets SessionMoved (its owner's advertised address) at its open, or at
 * its next frame once the map has moved it, and the stream ends without applying it. An
 * edge outside the cluster thus needs only one address, and follows each session to its
 * owner itself (see SECURITY.md for why a redirect rather than a relay).
 */
import * as grpc from "@grpc/grpc-js";
import { AbortedError, ResourceExhaustedError, UnauthenticatedError, type Logger } from "@tandem/common";
import {
  decodeRequest,
  deviceOf,
  failCall,
  whenWritable,
  type CloudMessage,
  type DeviceIdentity,
} from "@tandem/proto";
import type { RevocationList } from "@tandem/proto/certificates";
import {
  DEFAULT_ESCALATION_LIMITS,
  EscalationSession,
  SessionMovedError,
  movedReply,
  sessionIdOfContextKey,
  type EscalationCounters,
  type EscalationLimits,
  type SessionContexts,
  type UpperSideIdentity,
} from "@tandem/runtime";
import { inFrameSpan } from "./worker-tracing.ts";

/** What the worker's streams did, for logs, heartbeats and tests. */
export interface WorkerCounters extends EscalationCounters {
  streams: number;
  /** Streams ended by a bad message (the edge's fault). */
  rejected: number;
  /** Streams sent to another worker, which owns their session. */
  redirected: number;
}

export function emptyWorkerCounters(): WorkerCounters {
  return {
    streams: 0,
    frames: 0,
    positions: 0,
    tokens: 0,
    rejected: 0,
    redirected: 0,
    bytesReceived: 0,
    bytesReceivedByCodec: {},
    contextLost: 0,
    verifiedTokens: 0,
    verifyRejections: 0,
  };
}

/** How many sessions a worker holds, in all and per device. */
export interface SessionLimits {
  /** @default 4096 */
  maxSessions: number;
  /** @default 64 */
  maxSessionsPerDevice: number;
}

export const DEFAULT_SESSION_LIMITS: SessionLimits = { maxSessions: 4096, maxSessionsPerDevice: 64 };

/**
 * The largest legal message, bytes: a frame of the most positions, in fp32, and its
 * fields. What the server is told to accept.
 */
export function maxMessageBytes(limits: EscalationLimits, hiddenSize: number): number {
  return limits.maxFrameTokens * hiddenSize * 4 + 64 * 1024;
}

/** CloudWorker's handlers, each message taken as its bytes (registered withUndecodedRequests). */
export interface EscalationHandlers extends grpc.UntypedServiceImplementation {
  Escalate: grpc.handleBidiStreamingCall<Buffer, CloudMessage>;
}

/** Where the cluster places sessions, as far as this worker knows (its placement map). */
export interface SessionPlacement {
  /** The owner of `sessionId` when the map names another worker; undefined when this one owns it, or no map says. */
  elsewhere(sessionId: string): { workerId: string; address: string } | undefined;
}

/** What a worker's handlers may be given; each has a default. */
export interface EscalationOptions {
  /** Sizes a message may have. @default DEFAULT_ESCALATION_LIMITS */
  limits?: EscalationLimits;
  /** Refuse devices whose certificate this revokes (mutual TLS). @default none refused */
  revocations?: RevocationList;
  /** @default DEFAULT_SESSION_LIMITS */
  sessionLimits?: SessionLimits;
  /** Serve only the sessions placed here, redirecting the others. @default every session served (a standalone worker) */
  placement?: SessionPlacement;
}

/** Messages a stream may have waiting before the worker stops reading it (HTTP/2 flow control then slows the edge). */
const MAX_QUEUED_MESSAGES = 8;

/** The stream currently writing a session, so a newer one can take over from it. */
interface SessionWriter {
  supersede(): Promise<void>;
}

export function escalationHandlers(
  upper: UpperSideIdentity,
  contexts: SessionContexts & { sessionIds(): string[] },
  log: Logger,
  counters: WorkerCounters,
  options: EscalationOptions = {},
): EscalationHandlers {
  const {
    limits = DEFAULT_ESCALATION_LIMITS,
    revocations,
    sessionLimits = DEFAULT_SESSION_LIMITS,
    placement,
  } = options;
  /** Each session's writer, by context key, from the open that claimed it until it closes or its stream ends. */
  const writers = new Map<string, SessionWriter>();
  /**
   * Refuses a session the worker does not hold yet when it holds as many as it may. A
   * session counts from its open (its writer), not only from its first frame (its context):
   * otherwise streams a device opens together would all get through.
   */
  const checkRoom = (key: string, deviceId: string | undefined) => {
    const held = new Set([...contexts.sessionIds(), ...writers.keys()]);
    if (held.has(key)) return;
    if (held.size >= sessionLimits.maxSessions)
      throw new ResourceExhaustedError("sessions", `this worker holds ${held.size}, its limit`);
    if (deviceId !== undefined) {
      let mine = 0;
      for (const id of held) if (id.startsWith(`${deviceId}/`)) mine++;
      if (mine >= sessionLimits.maxSessionsPerDevice)
        throw new ResourceExhaustedError(
          "sessions",
          `device "${deviceId}" holds ${mine}, its limit on this worker`,
        );
    }
  };
  return {
    Escalate(call) {
      counters.streams++;
      let ended = false;
      let device: DeviceIdentity | undefined;
      let session: EscalationSession | undefined;
      /** The context key this stream is registered under in `writers`, if any. */
      let writing: string | undefined;
      const stopWriting = () => {
        if (writing !== undefined && writers.get(writing) === writer) writers.delete(writing);
        writing = undefined;
      };

      const fail = (error: unknown) => {
        if (ended) return;
        ended = true;
        stopWriting();
        const status = failCall(call, error);
        // Streams refused for their own messages; a takeover by a newer stream, or a fault of ours, is neither.
        if (status.code !== grpc.status.INTERNAL && status.code !== grpc.status.ABORTED) counters.rejected++;
        log.warn(
          {
            deviceId: device?.deviceId,
            sessionId: session?.sessionId,
            code: grpc.status[status.code],
            err: status.logged,
          },
          "escalation stream rejected",
        );
      };

      /** Sends the edge to the session's owner and ends the stream; nothing of the message applied. */
      const redirect = (owner: { workerId: string; address: string }) => {
        if (ended) return;
        ended = true;
        stopWriting();
        counters.redirected++;
        log.debug(
          { deviceId: device?.deviceId, sessionId: session?.sessionId, owner: owner.workerId },
          "session redirected to its owner",
        );
        call.write(movedReply(owner));
        call.end();
      };

      // Who is calling, checked before any message is read.
      let chain: Promise<void> = (async () => {
        device = deviceOf(call);
        if (device && revocations && (await revocations.isRevoked(device.serial)))
          throw new UnauthenticatedError(`the certificate of device "${device.deviceId}" is revoked`);
        session = new EscalationSession(upper, contexts, limits, counters, device?.deviceId);
      })().catch(fail);

      const writer: SessionWriter = {
        // Ends this stream and waits for the message it is applying; the queued ones are skipped.
        supersede: async () => {
          fail(new AbortedError("a newer stream opened this session"));
          await chain;
        },
      };

      /**
       * Takes the session `key` over for this stream, once EscalationSession has checked the
       * open and before it applies. Registering comes before waiting, so a stream opening the
       * session after this one supersedes this one rather than the same older stream: exactly
       * one stream, the newest, is ever the writer.
       */
      const claim = async (key: string) => {
        const owner = placement?.elsewhere(sessionIdOfContextKey(key));
        if (owner) throw new SessionMovedError(owner.address, owner.workerId);
        checkRoom(key, device?.deviceId);
        const previous = writers.get(key);
        writers.set(key, writer);
        writing = key;
        // The older stream ends, and the message it is applying finishes before this open applies.
        if (previous && previous !== writer) await previous.supersede();
        // This stream ended meanwhile (a newer one superseded it, or the edge cancelled it):
        // its open must not apply. Its stream has its status already; this only stops the open.
        if (ended) throw new AbortedError("a newer stream opened this session");
      };

      // Backpressure: past a few waiting messages the stream is not read until they are done.
      let queued = 0;
      call.on("data", (bytes: Buffer) => {
        if (++queued >= MAX_QUEUED_MESSAGES) call.pause();
        chain = chain.then(async () => {
          try {
            if (ended || !session) return;
            const message = decodeRequest("tandem.v1.EdgeMessage", bytes, "message");
            // A session the map has moved away since its open: its frames go to the new owner.
            const owner =
              message.frame && session.sessionId !== undefined
                ? placement?.elsewhere(session.sessionId)
                : undefined;
            if (owner) return redirect(owner);
            const serving = session;
            const reply = await inFrameSpan(message, serving.sessionId, () => serving.handle(message, claim));
            if (message.close) stopWriting();
            // An edge that does not read its replies is not given more work until it does.
            if (reply && !ended && !call.writableEnded && !call.write(reply)) await whenWritable(call);
          } catch (error) {
            if (error instanceof SessionMovedError) redirect(error);
            else fail(error);
          } finally {
            if (--queued < MAX_QUEUED_MESSAGES && !ended) call.resume();
          }
        });
      });
      call.on("end", () => {
        void chain.then(() => {
          stopWriting();
          if (!ended) {
            ended = true;
            call.end();
          }
        });
      });
      // A stream the edge cancelled (or whose deadline passed) ends here too: it must not
      // stay registered as its session's writer, yet stays so until the message it is
      // applying is done, so that a newer stream's open waits for that message and the
      // session counts against the limits meanwhile.
      for (const event of ["error", "cancelled"])
        call.on(event, () => {
          ended = true;
          void chain.then(stopWriting);
        });
    },
  };
}
