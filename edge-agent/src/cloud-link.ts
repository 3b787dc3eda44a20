/**
 * The edge's connection to a cloud worker. One gRPC channel (with keepalive) per worker
 * address; one Escalate stream per session, opened on the first escalation and reopened
 * after a failure. After a failure the link backs off (exponentially, to a cap): during
 * the backoff escalations fail at once, so the edge answers from its exits without
 * waiting on a dead cloud.
 */
import * as grpc from "@grpc/grpc-js";
import type { CloudRoute } from "./cloud-route.ts";
import {
  loadTandemProtos,
  type CloudMessage__Output,
  type CloudWorkerClient,
  type EdgeMessage,
} from "@tandem/proto";
import { getCodec, type CodecName, type HiddenStateCodec } from "@tandem/runtime";
import type { SamplingOptions } from "@tandem/runtime";
import {
  ContextLostError,
  UpperUnavailableError,
  type UpperAnswer,
  type UpperSegment,
} from "@tandem/runtime";

export interface CloudLinkOptions {
  /** host:port of the cloud worker. */
  address: string;
  codec: CodecName;
  /** Longest wait for a token (or for a stream to open). @default 2000 */
  deadlineMs?: number;
  /** First backoff after a failure. @default 250 */
  backoffInitialMs?: number;
  /** Longest backoff. @default 5000 */
  backoffMaxMs?: number;
  /** Interval of HTTP/2 keepalive pings. @default 10000 */
  keepaliveMs?: number;
}

export interface EdgeIdentity {
  modelId: string;
  weightsHash: string;
  splitLayer: number;
  hiddenSize: number;
}

const CODEC_ENUM: Record<CodecName, string> = {
  fp32: "HIDDEN_STATE_CODEC_FP32",
  fp16: "HIDDEN_STATE_CODEC_FP16",
  int8: "HIDDEN_STATE_CODEC_INT8",
  int4: "HIDDEN_STATE_CODEC_INT4",
};

export class CloudLink {
  readonly client: CloudWorkerClient;
  readonly codec: HiddenStateCodec;
  readonly deadlineMs: number;
  private retryAt = 0;
  private backoffMs: number;

  constructor(
    readonly options: CloudLinkOptions,
    readonly identity: EdgeIdentity,
  ) {
    const { tandem } = loadTandemProtos();
    this.client = new tandem.v1.CloudWorker(options.address, grpc.credentials.createInsecure(), {
      "grpc.keepalive_time_ms": options.keepaliveMs ?? 10_000,
      "grpc.keepalive_timeout_ms": 5_000,
      "grpc.keepalive_permit_without_calls": 1,
      "grpc.initial_reconnect_backoff_ms": 200,
      "grpc.max_reconnect_backoff_ms": options.backoffMaxMs ?? 5000,
    });
    this.codec = getCodec(options.codec);
    this.deadlineMs = options.deadlineMs ?? 2000;
    this.backoffMs = options.backoffInitialMs ?? 250;
  }

  /** False while backing off after a failure. */
  available(now = Date.now()): boolean {
    return now >= this.retryAt;
  }

  noteFailure(now = Date.now()): void {
    this.retryAt = now + this.backoffMs;
    this.backoffMs = Math.min(this.backoffMs * 2, this.options.backoffMaxMs ?? 5000);
  }

  noteSuccess(): void {
    this.retryAt = 0;
    this.backoffMs = this.options.backoffInitialMs ?? 250;
  }

  close(): void {
    this.client.close();
  }
}

interface PendingReply {
  resolve: (answer: UpperAnswer) => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout;
}

/** One CloudLink per worker address, shared by the sessions routed there. */
export class CloudLinks {
  private readonly links = new Map<string, CloudLink>();

  constructor(
    private readonly options: Omit<CloudLinkOptions, "address">,
    readonly identity: EdgeIdentity,
    readonly route: CloudRoute,
  ) {}

  get(address: string): CloudLink {
    let link = this.links.get(address);
    if (!link) {
      link = new CloudLink({ ...this.options, address }, this.identity);
      this.links.set(address, link);
    }
    return link;
  }

  session(sessionId: string): CloudSession {
    return new CloudSession(this, sessionId);
  }

  get deadlineMs(): number {
    return this.options.deadlineMs ?? 2000;
  }

  async close(): Promise<void> {
    for (const link of this.links.values()) link.close();
    await this.route.close();
  }
}

/**
 * One session's Escalate stream, as the generator's upper segment. The stream goes to
 * the worker the route names; when that worker fails and the route moves the session to
 * another (a re-placed KV shard), the session follows within the deadline, and the new
 * worker's empty context makes the generator replay.
 */
export class CloudSession implements UpperSegment {
  bytesSent = 0;
  bytesReceived = 0;
  private link?: CloudLink;
  private address?: string;
  private stream?: grpc.ClientDuplexStream<EdgeMessage, CloudMessage__Output>;
  private opened?: Promise<number>;
  /** Context length the worker reported when the current stream opened, until first used. */
  private openedLength?: number;
  private nextRequestId = 1;
  private readonly pending = new Map<string, PendingReply>();

  constructor(
    private readonly links: CloudLinks,
    readonly sessionId: string,
  ) {}

  async extend(
    start: number,
    hidden: Float32Array,
    count: number,
    wantToken: boolean,
    sampling: SamplingOptions,
  ): Promise<UpperAnswer | undefined> {
    try {
      return await this.extendOnce(start, hidden, count, wantToken, sampling);
    } catch (error) {
      if (!(error instanceof UpperUnavailableError)) throw error;
      const next = await this.links.route.waitForOwnerChange(
        this.sessionId,
        this.address,
        this.links.deadlineMs,
      );
      if (!next) throw error;
      return await this.extendOnce(start, hidden, count, wantToken, sampling);
    }
  }

  private async extendOnce(
    start: number,
    hidden: Float32Array,
    count: number,
    wantToken: boolean,
    sampling: SamplingOptions,
  ): Promise<UpperAnswer | undefined> {
    const address = this.links.route.address(this.sessionId);
    if (!address) throw new UpperUnavailableError("no cloud worker owns this session yet");
    if (address !== this.address) {
      await this.close();
      this.address = address;
      this.link = this.links.get(address);
    }
    const link = this.link!;
    if (!link.available()) throw new UpperUnavailableError("cloud worker unreachable (backing off)");
    const contextLength = await this.ensureOpen(link);
    if (this.openedLength !== undefined) {
      // A fresh stream: the worker says how much of the session it holds. Send from there.
      this.openedLength = undefined;
      if (contextLength < start)
        throw new ContextLostError(contextLength, "worker holds less context than expected");
    }
    const payload = link.codec.encode(hidden, count, link.identity.hiddenSize);
    const requestId = String(this.nextRequestId++);
    const message: EdgeMessage = {
      frame: {
        start,
        count,
        payload,
        wantToken,
        requestId,
        temperature: sampling.temperature,
        topP: sampling.topP,
        seed: sampling.seed.toString(),
      },
    };
    this.write(message);
    if (!wantToken) return undefined;
    return new Promise<UpperAnswer>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(requestId);
        link.noteFailure();
        reject(new UpperUnavailableError(`no answer from the cloud within ${link.deadlineMs} ms`));
      }, link.deadlineMs);
      this.pending.set(requestId, { resolve, reject, timer });
    });
  }

  async close(): Promise<void> {
    if (this.stream && !this.stream.writableEnded) {
      this.write({ close: {} });
      this.stream.end();
    }
    this.stream = undefined;
    this.opened = undefined;
  }

  private write(message: EdgeMessage): void {
    this.bytesSent += this.serializedSize("request", message);
    this.stream!.write(message);
  }

  /** Bytes of the message on the wire (protobuf encoding; gRPC adds 5 bytes of framing). */
  private serializedSize(direction: "request" | "response", message: object): number {
    const method = loadTandemProtos().tandem.v1.CloudWorker.service.Escalate;
    return (
      direction === "request"
        ? method.requestSerialize(message as never)
        : method.responseSerialize(message as never)
    ).length;
  }

  /** Opens the stream if needed; resolves with the worker's context length for this session. */
  private ensureOpen(link: CloudLink): Promise<number> {
    if (this.opened) return this.opened;
    const stream = link.client.Escalate();
    this.stream = stream;
    this.opened = new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => {
        fail(new UpperUnavailableError(`cloud worker did not open the session within ${link.deadlineMs} ms`));
      }, link.deadlineMs);
      const fail = (error: Error) => {
        clearTimeout(timer);
        if (this.stream === stream) {
          this.stream = undefined;
          this.opened = undefined;
          link.noteFailure();
        }
        stream.cancel();
        reject(error);
        for (const [id, reply] of this.pending) {
          clearTimeout(reply.timer);
          reply.reject(error);
          this.pending.delete(id);
        }
      };
      stream.on("data", (message: CloudMessage__Output) => {
        this.bytesReceived += this.serializedSize("response", message);
        if (message.message === "opened" && message.opened) {
          clearTimeout(timer);
          link.noteSuccess();
          this.openedLength = message.opened.contextLength;
          resolve(message.opened.contextLength);
        } else if (message.message === "token" && message.token) {
          const reply = this.pending.get(message.token.requestId);
          if (!reply) return; // answered after its deadline: the edge already moved on
          clearTimeout(reply.timer);
          this.pending.delete(message.token.requestId);
          reply.resolve({ token: message.token.token, prob: message.token.prob });
        } else if (message.message === "contextLost" && message.contextLost) {
          const reply = this.pending.get(message.contextLost.requestId);
          if (!reply) return;
          clearTimeout(reply.timer);
          this.pending.delete(message.contextLost.requestId);
          reply.reject(new ContextLostError(message.contextLost.resumeFrom, message.contextLost.reason));
        }
      });
      stream.on("error", (error: grpc.ServiceError) => {
        const invalid =
          error.code === grpc.status.INVALID_ARGUMENT || error.code === grpc.status.FAILED_PRECONDITION;
        // A rejected frame is the edge's bug, not an outage: surface it as such.
        fail(
          invalid
            ? new Error(`cloud worker rejected the session: ${error.details}`)
            : new UpperUnavailableError(`cloud stream failed: ${error.details || error.message}`, {
                cause: error,
              }),
        );
      });
      stream.on("end", () => fail(new UpperUnavailableError("cloud worker ended the stream")));
      stream.write({
        open: {
          sessionId: this.sessionId,
          modelId: link.identity.modelId,
          weightsHash: link.identity.weightsHash,
          splitLayer: link.identity.splitLayer,
          codec: CODEC_ENUM[link.codec.name],
          hiddenSize: link.identity.hiddenSize,
        },
      } as EdgeMessage);
    });
    // Avoid an unhandled rejection when nobody awaits a failed open.
    this.opened.catch(() => undefined);
    return this.opened;
  }
}
