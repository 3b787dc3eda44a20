/**
 * The Experts/Run handler: another worker sends the rows its tokens routed to an expert
 * this worker holds, and gets the expert's outputs back (expert parallelism). A request is
 * checked whole before anything runs: the weights, layer, expert, sizes and payload, each
 * named when wrong (INVALID_ARGUMENT; FAILED_PRECONDITION for other weights, or an expert
 * this worker neither holds nor is assigned, so the caller tries another replica). Over
 * mutual TLS only workers may call: a certificate for server and client authentication,
 * which devices' certificates (client authentication alone) are not.
 */
import type * as grpc from "@grpc/grpc-js";
import {
  FailedPreconditionError,
  InvalidArgumentError,
  type Logger,
  UnauthenticatedError,
} from "@tandem/common";
import { decodeRequest, statusOf, workerPeerOf, type ExpertRunReply } from "@tandem/proto";
import type { RevocationList } from "@tandem/proto/certificates";
import { codecFromWire, getCodec } from "@tandem/runtime";

/** What a worker offers the experts service. */
export interface ExpertHost {
  workerId: string;
  weightsHash: string;
  hiddenSize: number;
  /** The worker's layers, [fromLayer, toLayer), of a model with numExperts experts per layer. */
  fromLayer: number;
  toLayer: number;
  numExperts: number;
  /** Whether this worker answers for the expert now (it holds it, or its map assigns it). */
  serves(layer: number, expert: number): boolean;
  run(layer: number, expert: number, input: Float32Array, rows: number): Promise<Float32Array>;
}

export interface ExpertsServiceCounters {
  /** Calls answered, and rows run for them. */
  calls: number;
  rows: number;
  /** Calls refused (a bad request, or an expert not served here). */
  refused: number;
}

/** Most rows one call may carry: a step's tokens for one expert. */
export const MAX_EXPERT_ROWS = 4096;

/** Experts' handlers, each request taken as its bytes (registered withUndecodedRequests). */
export interface ExpertsServiceHandlers extends grpc.UntypedServiceImplementation {
  Run: grpc.handleUnaryCall<Buffer, ExpertRunReply>;
}

/** The largest legal request, bytes: MAX_EXPERT_ROWS rows in fp32, and its fields. */
export function maxExpertRequestBytes(hiddenSize: number): number {
  return MAX_EXPERT_ROWS * hiddenSize * 4 + 1024;
}

/** Who may call, over mutual TLS: other workers only, and none whose certificate is revoked. */
export interface ExpertsCallers {
  /** Whether the server runs mutual TLS (then a caller must present a worker's certificate). */
  tls: boolean;
  revocations?: RevocationList;
}

export function expertsHandlers(
  host: ExpertHost,
  counters: ExpertsServiceCounters,
  log: Logger,
  callers: ExpertsCallers = { tls: false },
): ExpertsServiceHandlers {
  /** A device's certificate, or none over TLS, is refused: only workers call experts. */
  const authorize = async (call: grpc.ServerUnaryCall<Buffer, ExpertRunReply>): Promise<void> => {
    if (!callers.tls) return;
    const peer = workerPeerOf(call);
    if (!peer) throw new UnauthenticatedError("expert calls take mutual TLS");
    if (callers.revocations && (await callers.revocations.isRevoked(peer.serial)))
      throw new UnauthenticatedError(`the certificate of "${peer.name}" is revoked`);
  };
  return {
    Run(call, callback) {
      authorize(call)
        .then(() => runExpert(host, call.request))
        .then(({ payload, rows }) => {
          counters.calls++;
          counters.rows += rows;
          callback(null, { payload, workerId: host.workerId });
        })
        .catch((error: unknown) => {
          counters.refused++;
          const status = statusOf(error);
          log.warn({ peer: call.getPeer(), err: status.logged }, "expert call refused");
          callback({ code: status.code, details: status.details, message: status.details });
        });
    },
  };
}

async function runExpert(host: ExpertHost, bytes: Buffer): Promise<{ payload: Buffer; rows: number }> {
  const request = decodeRequest("tandem.v1.ExpertRunRequest", bytes, "request");
  if (request.weightsHash !== host.weightsHash)
    throw new FailedPreconditionError("weights_hash", "this worker runs other weights");
  if (request.layer < host.fromLayer || request.layer >= host.toLayer)
    throw new InvalidArgumentError(
      "layer",
      `must be in [${host.fromLayer}, ${host.toLayer}), got ${request.layer}`,
    );
  if (request.expert >= host.numExperts)
    throw new InvalidArgumentError("expert", `must be in [0, ${host.numExperts}), got ${request.expert}`);
  if (request.hiddenSize !== host.hiddenSize)
    throw new InvalidArgumentError("hidden_size", `must be ${host.hiddenSize}, got ${request.hiddenSize}`);
  if (request.rows < 1 || request.rows > MAX_EXPERT_ROWS)
    throw new InvalidArgumentError("rows", `must be in [1, ${MAX_EXPERT_ROWS}], got ${request.rows}`);
  const codec = getCodec(codecFromWire(request.codec, "codec"));
  const expected = codec.encodedBytes(request.rows, host.hiddenSize);
  if (request.payload.length !== expected)
    throw new InvalidArgumentError(
      "payload",
      `must be ${expected} bytes for ${request.rows} rows, got ${request.payload.length}`,
    );
  if (!host.serves(request.layer, request.expert))
    throw new FailedPreconditionError(
      "expert",
      `expert ${request.expert} of layer ${request.layer} is not held by worker ${host.workerId}`,
    );
  // The codec refuses a payload with a value that is not finite (CodecError: INVALID_ARGUMENT).
  const input = codec.decode(request.payload, request.rows, host.hiddenSize);
  const output = await host.run(request.layer, request.expert, input, request.rows);
  const encoded = codec.encode(output, request.rows, host.hiddenSize);
  return { payload: Buffer.from(encoded.buffer, encoded.byteOffset, encoded.byteLength), rows: request.rows };
}
