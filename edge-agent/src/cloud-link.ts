/**
 * The edge's connection to cloud workers. One gRPC channel (with keepalive) per worker
 * address, guarded by a circuit breaker (cockatiel) that opens on a failure and lets a
 * test call through after a jittered, growing backoff (the retry policy's
 * CLOUD_LINK_BACKOFF): while it is open escalations fail at once, so the edge answers
 * from its exits without waiting on a dead cloud. One Escalate stream per session,
 * opened on the first escalation and reopened after a failure; messages are built and
 * replies checked by the escalation protocol (@tandem/runtime).
 *
 * cockatiel is loaded when the first link is used (and warmed once the agent serves),
 * so an edge's start does not wait for it.
 */
import * as grpc from "@grpc/grpc-js";
import type { CircuitBreakerPolicy, IHalfOpenAfterBackoffContext } from "cockatiel";
import {
  CLOUD_LINK_BACKOFF,
  ContextLostError,
  InternalError,
  UnavailableError,
  backoffDelayMs,
  isRetryable,
  type BackoffPolicy,
  type Context,
  type Span,
} from "@tandem/common";
import {
  channelCredentials,
  errorOfStatus,
  loadTandemProtos,
  type ClientTlsFiles,
  type CloudMessage__Output,
  type EdgeMessage,
} from "@tandem/proto";
import {
  CLOSE_MESSAGE,
  InvalidReplyError,
  MAX_REDIRECTS,
  SessionMovedError,
  checkFrameReply,
  checkOpenedReply,
  frameMessage,
  getCodec,
  openMessage,
  replyRequestId,
  sessionMovedOf,
  type CodecName,
  type HiddenStateCodec,
  type SplitIdentity,
  type UpperAnswer,
  type UpperFrame,
  type UpperSegment,
} from "@tandem/runtime";
import type { CloudRoute } from "./cloud-route.ts";
import type { EdgeMetrics } from "./edge-metrics.ts";
import { inEscalationSpan, traceFrame } from "./edge-tracing.ts";

export interface CloudLinkOptions {
  codec: CodecName;
  /**
   * Longest wait for an answer, for a stream to open, or — when the worker is gone — for
   * the session's new owner, from the frame's start. Covers the control plane's failover
   * at its default timings (a node is dead after CLUSTER_DEFAULTS.heartbeatTtlMs; the
   * leader notices within a tick). @default 3000
   */
  deadlineMs: number;
  /** Interval of HTTP/2 keepalive pings. @default 10000 */
  keepaliveMs: number;
  /** How long the circuit stays open after a failure. @default CLOUD_LINK_BACKOFF */
  backoff: BackoffPolicy;
  /** TLS to workers: the deployment's CA, and this device's certificate (mutual TLS). @default plaintext */
  tls?: ClientTlsFiles;
}

export const DEFAULT_CLOUD_LINK_OPTIONS = {
  deadlineMs: 3000,
  keepaliveMs: 10_000,
  backoff: CLOUD_LINK_BACKOFF,
} as const satisfies Omit<CloudLinkOptions, "codec">;

/** The split this edge runs, as a worker must run it too; `modelId` is informative. */
export interface EdgeIdentity extends SplitIdentity {
  modelId: string;
}

/** cockatiel, loaded once on first need. */
let cockatiel: Promise<typeof import("cockatiel")> | undefined;
export function loadCircuitBreakers(): Promise<typeof import("cockatiel")> {
  cockatiel ??= import("cockatiel");
  return cockatiel;
}

/**
 * Escalate's messages, serialized by the session itself rather than by grpc-js: it counts
 * the bytes it sends and receives from the very buffers on the wire, so no message is
 * serialized twice (once to count, once to send) on the escalation path.
 */
interface EscalateMessages {
  path: string;
  serialize(message: EdgeMessage): Buffer;
  deserialize(bytes: Buffer): CloudMessage__Output;
}

let escalateMessages: EscalateMessages | undefined;
function loadEscalateMessages(): EscalateMessages {
  const method = loadTandemProtos().tandem.v1.CloudWorker.service.Escalate;
  return {
    path: method.path,
    serialize: (message) => method.requestSerialize(message),
    deserialize: (bytes) => method.responseDeserialize(bytes),
  };
}

/** A worker's reply from its bytes; bytes that are no CloudMessage break the protocol. */
function decodeReply(messages: EscalateMessages, bytes: Buffer): CloudMessage__Output {
  try {
    return messages.deserialize(bytes);
  } catch (error) {
    throw new InvalidReplyError(`not a CloudMessage (${(error as Error).message})`, { cause: error });
  }
}

const asBytes = (bytes: Buffer) => bytes;

/** One worker address: its channel and its circuit. */
export class CloudLink {
  private readonly client: grpc.Client;
  readonly messages = (escalateMessages ??= loadEscalateMessages());
  readonly codec: HiddenStateCodec;
  private circuit?: CircuitBreakerPolicy;

  constructor(
    readonly address: string,
    readonly options: CloudLinkOptions,
    readonly identity: EdgeIdentity,
    /** The links' shared credentials (CloudLinks). */
    readonly credentials: grpc.ChannelCredentials,
  ) {
    this.client = new grpc.Client(address, credentials, {
      "grpc.keepalive_time_ms": options.keepaliveMs,
      "grpc.keepalive_timeout_ms": 5_000,
      "grpc.keepalive_permit_without_calls": 1,
      "grpc.initial_reconnect_backoff_ms": options.backoff.initialDelayMs,
      "grpc.max_reconnect_backoff_ms": options.backoff.maxDelayMs,
    });
    this.codec = getCodec(options.codec);
  }

  /** A new Escalate stream of serialized messages. */
  /**
   * A new Escalate stream of serialized messages. `waitForReady`: while the channel is
   * reconnecting, wait for it (up to the caller's own timer) instead of failing at once.
   */
  escalate(waitForReady = false): grpc.ClientDuplexStream<Buffer, Buffer> {
    return this.client.makeBidiStreamRequest(
      this.messages.path,
      asBytes,
      asBytes,
      new grpc.Metadata({ waitForReady }),
    );
  }

  /** Runs an exchange with the worker through the circuit: refused at once while it is open. */
  async execute<T>(exchange: () => Promise<T>): Promise<T> {
    const { BrokenCircuitError, ConsecutiveBreaker, DelegateBackoff, circuitBreaker, handleWhen } =
      await loadCircuitBreakers();
    this.circuit ??= circuitBreaker(
      handleWhen((error) => error instanceof UnavailableError),
      {
        breaker: new ConsecutiveBreaker(1),
        halfOpenAfter: new DelegateBackoff((context: IHalfOpenAfterBackoffContext) =>
          backoffDelayMs(this.options.backoff, context.attempt),
        ),
      },
    );
    try {
      return await this.circuit.execute(exchange);
    } catch (error) {
      if (error instanceof BrokenCircuitError)
        throw new UnavailableError(`cloud worker at ${this.address} is unreachable (backing off)`);
      throw error;
    }
  }

  close(): void {
    this.client.close();
  }
}

interface PendingReply {
  sent: { start: number; count: number; topLogprobs?: number; verifyFrom?: number };
  resolve: (answer: UpperAnswer) => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout;
}

/** One CloudLink per worker address, shared by the sessions routed there. */
export class CloudLinks {
  private readonly links = new Map<string, CloudLink>();
  /**
   * One set of credentials for every worker: each set watches its certificate files, so
   * one per link would re-read the same files every few seconds once per worker.
   */
  private readonly credentials: grpc.ChannelCredentials;

  constructor(
    readonly options: CloudLinkOptions,
    readonly identity: EdgeIdentity,
    readonly route: CloudRoute,
    /** Where escalations, bytes, round trips and replays are reported. @default none */
    readonly metrics?: EdgeMetrics,
  ) {
    this.credentials = channelCredentials(options.tls);
  }

  get(address: string): CloudLink {
    let link = this.links.get(address);
    if (!link) {
      link = new CloudLink(address, this.options, this.identity, this.credentials);
      this.links.set(address, link);
    }
    return link;
  }

  /** A session's upper segment; its escalations' spans are children of `trace` (its request's span). */
  session(sessionId: string, trace?: Context): CloudSession {
    return new CloudSession(this, sessionId, trace);
  }

  async close(): Promise<void> {
    for (const link of this.links.values()) link.close();
    await this.route.close();
  }
}

/** Pause before trying again where a try just failed, or where a redirect led to a worker that is down. */
const RETRY_PAUSE_MS = 100;

const pause = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * One session's Escalate stream, as the generator's upper segment. The stream goes to
 * the worker the route names; a worker that does not own the session redirects it
 * (SessionMoved) and the session follows, within MAX_REDIRECTS per frame. When the
 * worker fails, the session waits for another owner (the route's next address: a re-placed
 * KV shard, or the entry worker again, which redirects to the new owner once its map has
 * moved) for at most one deadline from the frame's start; the new worker's empty context
 * makes the generator replay. A session that has waited a whole deadline through an
 * outage does not wait again: until the cloud answers, its frames fail at once (the
 * generator answers from the device) while one background probe at a time reopens the
 * stream, so an unreachable cloud costs a session one deadline, not one per token.
 */
export class CloudSession implements UpperSegment {
  bytesSent = 0;
  bytesReceived = 0;
  private link?: CloudLink;
  private stream?: grpc.ClientDuplexStream<Buffer, Buffer>;
  private opened?: Promise<number>;
  /** Context length the worker reported when the current stream opened, until first used. */
  private openedLength?: number;
  private nextRequestId = 1n;
  private readonly pending = new Map<string, PendingReply>();
  /** Where a worker redirected this session, until a try there fails. */
  private movedTo?: string;
  /** When the current outage began: the first failed try since the cloud last answered. */
  private outageSince?: number;
  /** Positions the edge has produced so far (what an opened reply may claim at most). */
  private positionsProduced = 0;
  private probing = false;

  constructor(
    private readonly links: CloudLinks,
    readonly sessionId: string,
    /** The parent of this session's escalation spans. */
    private readonly trace?: Context,
  ) {}

  extend(frame: UpperFrame): Promise<UpperAnswer | undefined> {
    return inEscalationSpan(this.trace, frame, (span) => this.escalate(frame, span));
  }

  private async escalate(frame: UpperFrame, span: Span): Promise<UpperAnswer | undefined> {
    this.positionsProduced = Math.max(this.positionsProduced, frame.start + frame.count);
    if (frame.wantToken) this.links.metrics?.escalated();
    const deadlineMs = this.links.options.deadlineMs;
    const started = Date.now();
    if (this.outageSince !== undefined && started - this.outageSince >= deadlineMs) {
      this.probe();
      throw new UnavailableError(
        `the cloud has not answered for ${started - this.outageSince} ms; answering on the device until it does`,
      );
    }
    let redirects = 0;
    let firstFailure: UnavailableError | undefined;
    for (;;) {
      const viaRedirect = this.movedTo !== undefined;
      const address = this.movedTo ?? this.links.route.address(this.sessionId);
      try {
        const sentAt = performance.now();
        const answer = await this.extendAt(address, frame, span);
        if (answer) this.links.metrics?.cloudRoundTrip((performance.now() - sentAt) / 1000);
        this.outageSince = undefined;
        return answer;
      } catch (error) {
        let failure = error;
        if (error instanceof SessionMovedError) {
          if (++redirects <= MAX_REDIRECTS) {
            this.movedTo = error.address;
            continue;
          }
          // Workers sending the session round in circles: their maps disagree for a moment.
          failure = new UnavailableError(
            `workers redirected session ${this.sessionId} ${MAX_REDIRECTS} times in a row: their placement maps disagree`,
          );
        }
        if (failure instanceof ContextLostError) this.links.metrics?.contextReplayed();
        if (!(failure instanceof UnavailableError)) throw failure;
        firstFailure ??= failure;
        this.movedTo = undefined;
        // The limit is on redirects in a row: a worker that redirects to an owner that is
        // down, until its map moves, is paced by the wait below and bounded by the deadline.
        redirects = 0;
        const now = Date.now();
        // The outage began when this frame started waiting for the cloud.
        this.outageSince ??= started;
        const left = this.outageSince + deadlineMs - now;
        if (left <= 0) throw firstFailure;
        const next = await this.links.route.waitForOwnerChange(this.sessionId, address, left);
        if (next === undefined) throw firstFailure;
        if (next === address || viaRedirect) await pause(Math.min(RETRY_PAUSE_MS, left));
      }
    }
  }

  /**
   * Reopens the stream in the background during an outage (one probe at a time): once a
   * worker opens it, the outage is over and the next frame goes to the cloud again.
   */
  private probe(): void {
    if (this.probing) return;
    this.probing = true;
    const address = this.movedTo ?? this.links.route.address(this.sessionId);
    void (async () => {
      try {
        if (!address) return;
        const link = this.use(address);
        // The probe may be the circuit's half-open try: it waits for the channel to
        // reconnect, which a try that fails at once while the channel backs off never sees.
        await link.execute(() => this.ensureOpen(link, this.positionsProduced, true));
        this.outageSince = undefined;
      } catch (error) {
        // Told where the session lives: the next probe (or frame) goes there.
        if (error instanceof SessionMovedError) this.movedTo = error.address;
      } finally {
        this.probing = false;
      }
    })();
  }

  /** The link to `address`, closing the stream to another worker first. */
  private use(address: string): CloudLink {
    if (address !== this.link?.address) {
      void this.close();
      this.link = this.links.get(address);
    }
    return this.link;
  }

  private async extendAt(
    address: string | undefined,
    frame: UpperFrame,
    span: Span,
  ): Promise<UpperAnswer | undefined> {
    if (!address) throw new UnavailableError("no cloud worker owns this session yet");
    const link = this.use(address);
    return link.execute(async () => {
      const contextLength = await this.ensureOpen(link, frame.start + frame.count);
      if (this.openedLength !== undefined) {
        // A fresh stream: the worker says how much of the session it holds. Send from there.
        this.openedLength = undefined;
        if (contextLength < frame.start)
          throw new ContextLostError(contextLength, "the worker holds less context than the edge sent it");
      }
      const requestId = this.nextRequestId++;
      const message = frameMessage(link.codec, link.identity.hiddenSize, { ...frame, requestId });
      traceFrame(message, span, link.codec.name, link.address);
      this.write(message);
      this.links.metrics?.hiddenStateSent(
        link.codec.name,
        link.codec.encodedBytes(frame.count, link.identity.hiddenSize),
      );
      if (!frame.wantToken) return undefined;
      return new Promise<UpperAnswer>((resolve, reject) => {
        const key = String(requestId);
        const timer = setTimeout(() => {
          this.pending.delete(key);
          reject(
            new UnavailableError(
              `no answer from the cloud worker at ${link.address} within ${link.options.deadlineMs} ms`,
            ),
          );
        }, link.options.deadlineMs);
        this.pending.set(key, {
          sent: {
            start: frame.start,
            count: frame.count,
            topLogprobs: frame.topLogprobs,
            verifyFrom: frame.verifyFrom,
          },
          resolve,
          reject,
          timer,
        });
      });
    });
  }

  async close(): Promise<void> {
    if (this.stream && !this.stream.writableEnded) {
      this.write(CLOSE_MESSAGE);
      this.stream.end();
    }
    this.stream = undefined;
    this.opened = undefined;
  }

  private write(message: EdgeMessage): void {
    const bytes = this.link!.messages.serialize(message);
    this.bytesSent += bytes.length;
    this.links.metrics?.messageSent(this.link!.codec.name, bytes.length);
    this.stream!.write(bytes);
  }

  private rejectPending(error: Error): void {
    for (const [id, reply] of this.pending) {
      clearTimeout(reply.timer);
      reply.reject(error);
      this.pending.delete(id);
    }
  }

  /** Opens the stream if needed; resolves with the worker's context length for this session. */
  private ensureOpen(link: CloudLink, positionsProduced: number, waitForReady = false): Promise<number> {
    if (this.opened) return this.opened;
    const stream = link.escalate(waitForReady);
    this.stream = stream;
    this.opened = new Promise<number>((resolve, reject) => {
      let isOpen = false;
      const timer = setTimeout(() => {
        fail(
          new UnavailableError(
            `cloud worker at ${link.address} did not open the session within ${link.options.deadlineMs} ms`,
          ),
        );
      }, link.options.deadlineMs);
      const fail = (error: Error) => {
        clearTimeout(timer);
        if (this.stream === stream) {
          this.stream = undefined;
          this.opened = undefined;
        }
        stream.cancel();
        reject(error);
        this.rejectPending(error);
      };
      stream.on("data", (bytes: Buffer) => {
        this.bytesReceived += bytes.length;
        this.links.metrics?.replyReceived(link.codec.name, bytes.length);
        try {
          const message = decodeReply(link.messages, bytes);
          if (!isOpen) {
            const held = checkOpenedReply(message, positionsProduced);
            isOpen = true;
            clearTimeout(timer);
            this.openedLength = held;
            resolve(held);
            return;
          }
          // The map moved the session away since it opened here: follow it.
          const moved = sessionMovedOf(message);
          if (moved) {
            // Kept for the next frame too: the one moved may be waiting on no reply.
            this.movedTo = moved.address;
            return fail(moved);
          }
          const requestId = replyRequestId(message);
          const reply = requestId === undefined ? undefined : this.pending.get(requestId);
          if (!reply) return; // answered after its deadline: the edge already moved on
          clearTimeout(reply.timer);
          this.pending.delete(requestId!);
          const outcome = checkFrameReply(message, reply.sent, link.identity.vocabSize);
          if (outcome.kind === "token")
            reply.resolve({
              position: outcome.position,
              token: outcome.token,
              prob: outcome.prob,
              logprobs: outcome.logprobs,
            });
          else reply.reject(outcome.error);
        } catch (error) {
          // A reply that breaks the protocol: this worker cannot be trusted with the session.
          fail(error as Error);
        }
      });
      stream.on("error", (error: grpc.ServiceError) => {
        const cause = errorOfStatus(error, `cloud worker at ${link.address}`);
        // A refused session is the edge's bug or a mismatched deployment, not an outage:
        // it surfaces (as our internal fault, never the client's) instead of falling back.
        fail(
          isRetryable(cause)
            ? new UnavailableError(`cloud stream failed: ${cause.message}`, { cause })
            : new InternalError(`cloud worker refused the session: ${cause.message}`, { cause }),
        );
      });
      stream.on("end", () => fail(new UnavailableError(`cloud worker at ${link.address} ended the stream`)));
      stream.write(
        link.messages.serialize(
          openMessage(this.sessionId, link.identity, link.codec.name, link.identity.modelId),
        ),
      );
    });
    // Avoid an unhandled rejection when nobody awaits a failed open.
    this.opened.catch(() => undefined);
    return this.opened;
  }
}
