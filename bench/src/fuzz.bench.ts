/**
 * Benchmark `fuzz`: mutated calls against a running edge agent and cloud worker (in this
 * process, on loopback, a generated tiny checkpoint), as an attacker writing a client
 * from the .proto files would send them. Half are Escalate streams of open, frame and
 * close messages with random fields (sizes, enum values, positions, NaN and huge values)
 * or raw bytes that are not protobuf at all; half are Generate requests with random
 * fields or raw bytes. Every call must end with a status; nothing may crash (an uncaught
 * exception or unhandled rejection is counted, not fatal, while the fuzz runs) and every
 * generation must release its device session.
 *
 * Prints {cases, crashes, unanswered, statuses: {CODE: n}, leaked_edge_sessions, ...}.
 * Usage: tandem bench fuzz [--cases N] [--seed S] [--smoke]
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import fc from "fast-check";
import { pino } from "pino";
import { startCloudWorker } from "@tandem/cloud-worker";
import { EDGE_CONFIG_SCHEMA, startEdgeAgent } from "@tandem/edge-agent";
import { loadTandemProtos } from "@tandem/proto";
import { loadCheckpoint } from "@tandem/runtime";
import { TINY_LLAMA, writeRandomCheckpoint } from "@tandem/runtime/testing";
import type { BenchOptions, BenchResult } from "./bench-types.ts";

const SPLIT = 2;
/** A call that has not ended by then is unanswered. */
const CALL_DEADLINE_MS = 20_000;
const CONCURRENCY = 8;

interface Target {
  workerAddress: string;
  edgeAddress: string;
  weightsHash: string;
  hiddenSize: number;
}

type EscalateMessage = Record<string, unknown>;
type FuzzCase =
  | { kind: "escalate"; messages: EscalateMessage[] }
  | { kind: "escalate-bytes"; chunks: Uint8Array[] }
  | { kind: "generate"; request: Record<string, unknown> }
  | { kind: "generate-bytes"; bytes: Uint8Array };

/** Doubles with the awkward ones well represented. */
const anyDouble = fc.oneof(
  fc.double(),
  fc.constantFrom(Number.NaN, Infinity, -Infinity, 0, -0, 1e308, -1, 0.5, 2),
);
const uint32 = fc.oneof(fc.nat(20), fc.nat({ max: 2 ** 32 - 1 }));
const uint64Text = fc.oneof(fc.nat(100), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n })).map(String);

function escalateCase(target: Target): fc.Arbitrary<FuzzCase> {
  const open = fc.record({
    open: fc.record({
      sessionId: fc.oneof(fc.uuid(), fc.string({ maxLength: 300 }), fc.constant("")),
      modelId: fc.string({ maxLength: 20 }),
      weightsHash: fc.oneof(fc.constant(target.weightsHash), fc.string({ maxLength: 70 })),
      splitLayer: fc.oneof(fc.constant(SPLIT), uint32),
      codec: fc.integer({ min: 0, max: 8 }),
      hiddenSize: fc.oneof(fc.constant(target.hiddenSize), uint32),
    }),
  });
  const payload = fc.oneof(
    fc.uint8Array({ maxLength: 2048 }),
    // The right size for fp32 and a few positions, with any floats in it.
    fc
      .array(anyDouble, { minLength: target.hiddenSize, maxLength: target.hiddenSize * 3 })
      .map((values) => new Uint8Array(Float32Array.from(values).buffer)),
  );
  const frame = fc.record({
    frame: fc.record({
      start: fc.oneof(fc.nat(20), uint32),
      count: fc.oneof(fc.nat(4), uint32),
      payload,
      wantToken: fc.boolean(),
      requestId: uint64Text,
      temperature: anyDouble,
      topP: anyDouble,
      seed: uint64Text,
      tokenIds: fc.array(fc.oneof(fc.nat(300), uint32), { maxLength: 6 }),
      // Checks of the edge's tokens: within the frame, at its edges, and anywhere.
      verifyFrom: fc.oneof(fc.nat(24), uint32),
    }),
  });
  const close = fc.constant({ close: {} });
  return fc.oneof(
    {
      weight: 4,
      arbitrary: fc
        .array(fc.oneof(open, frame, close), { minLength: 1, maxLength: 5 })
        .map((messages): FuzzCase => ({ kind: "escalate", messages })),
    },
    {
      weight: 1,
      arbitrary: fc
        .array(fc.uint8Array({ maxLength: 300 }), { minLength: 1, maxLength: 3 })
        .map((chunks): FuzzCase => ({ kind: "escalate-bytes", chunks })),
    },
  );
}

function generateCase(): fc.Arbitrary<FuzzCase> {
  const prompt = fc.oneof(
    fc.record({ text: fc.oneof(fc.string({ maxLength: 200, unit: "binary" }), fc.constant("")) }),
    fc.record({
      tokenIds: fc.record({ ids: fc.array(fc.oneof(fc.nat(300), uint32), { maxLength: 40 }) }),
    }),
    fc.constant({}),
  );
  const request = fc
    .tuple(
      prompt,
      fc.record(
        {
          maxTokens: fc.oneof(fc.nat(12), uint32),
          stop: fc.array(fc.string({ maxLength: 80 }), { maxLength: 10 }),
          sampling: fc.record({ temperature: anyDouble, topP: anyDouble, seed: uint64Text }),
          mode: fc.integer({ min: 0, max: 6 }),
          verify: fc.integer({ min: 0, max: 4 }),
          maxDraftTokens: fc.oneof(fc.nat(70), uint32),
          exitPolicy: fc.record({
            metric: fc.integer({ min: 0, max: 6 }),
            threshold: anyDouble,
            targetEscalationRate: anyDouble,
          }),
        },
        { requiredKeys: [] },
      ),
    )
    .map(([p, rest]): FuzzCase => ({ kind: "generate", request: { ...p, ...rest } }));
  return fc.oneof(
    { weight: 4, arbitrary: request },
    {
      weight: 1,
      arbitrary: fc
        .uint8Array({ maxLength: 400 })
        .map((bytes): FuzzCase => ({ kind: "generate-bytes", bytes })),
    },
  );
}

const identity = (bytes: Buffer) => bytes;
/** How grpc-js begins the status of a call it cancelled because it could not encode a message. */
const CLIENT_SERIALIZATION_FAILURE = "Request message serialization failure";
const deadline = () => Date.now() + CALL_DEADLINE_MS;

/** Runs one case; resolves with the status the call ended with (its code's name, and details). */
function runCase(fuzzCase: FuzzCase, clients: Clients): Promise<{ code: string; details: string }> {
  return new Promise((resolve) => {
    // A value the client's own serializer cannot encode never reaches the server: grpc-js
    // cancels such a call itself with INTERNAL, which must not count as a server fault.
    const ended = (status: grpc.StatusObject) =>
      resolve(
        status.code === grpc.status.INTERNAL && status.details.startsWith(CLIENT_SERIALIZATION_FAILURE)
          ? { code: "CLIENT_REFUSED", details: status.details }
          : { code: grpc.status[status.code], details: status.details },
      );
    try {
      if (fuzzCase.kind === "escalate" || fuzzCase.kind === "escalate-bytes") {
        // Structured messages or raw bytes: either way what goes out is the case's own.
        const call: grpc.ClientDuplexStream<object, unknown> =
          fuzzCase.kind === "escalate"
            ? clients.worker.Escalate({ deadline: deadline() })
            : (clients.rawWorker.makeBidiStreamRequest(
                "/tandem.v1.CloudWorker/Escalate",
                identity,
                identity,
                new grpc.Metadata(),
                { deadline: deadline() },
              ) as grpc.ClientDuplexStream<object, unknown>);
        call.on("data", () => undefined);
        call.on("status", ended);
        call.on("error", () => undefined);
        const messages =
          fuzzCase.kind === "escalate" ? fuzzCase.messages : fuzzCase.chunks.map((c) => Buffer.from(c));
        for (const message of messages) call.write(message);
        call.end();
      } else {
        const call =
          fuzzCase.kind === "generate"
            ? clients.edge.Generate(fuzzCase.request, { deadline: deadline() })
            : clients.rawEdge.makeServerStreamRequest(
                "/tandem.v1.Inference/Generate",
                identity,
                identity,
                Buffer.from(fuzzCase.bytes),
                new grpc.Metadata(),
                { deadline: deadline() },
              );
        call.on("data", () => undefined);
        call.on("status", ended);
        call.on("error", () => undefined);
      }
    } catch (error) {
      // grpc-js checks a call's arguments as it starts it: a refusal there is the client's too.
      resolve({ code: "CLIENT_REFUSED", details: (error as Error).message });
    }
  });
}

interface Clients {
  worker: grpc.Client & { Escalate(options: grpc.CallOptions): grpc.ClientDuplexStream<object, object> };
  edge: grpc.Client & {
    Generate(request: object, options: grpc.CallOptions): grpc.ClientReadableStream<object>;
  };
  /** Untyped clients, to send raw bytes to the worker and to the edge. */
  rawWorker: grpc.Client;
  rawEdge: grpc.Client;
}

export default async function fuzzBenchmark(options: BenchOptions<"fuzz">): Promise<BenchResult> {
  const cases = options.options.cases ?? (options.smoke ? 200 : 20_000);
  const seed = options.options.seed ?? 1;
  const dir = mkdtempSync(join(tmpdir(), "tandem-fuzz-"));
  const log = pino({ level: "silent" });
  const crashes: string[] = [];
  const onCrash = (error: unknown) => crashes.push(String((error as Error)?.stack ?? error));
  process.on("uncaughtException", onCrash);
  process.on("unhandledRejection", onCrash);
  try {
    await writeRandomCheckpoint(join(dir, "model"), { ...TINY_LLAMA, tieWordEmbeddings: true, seed: 5 });
    const checkpoint = await loadCheckpoint(join(dir, "model"));
    const worker = await startCloudWorker(
      { modelDir: join(dir, "model"), split: SPLIT, workerId: "fuzz", cacheDir: join(dir, "graphs") },
      log,
    );
    const edge = await startEdgeAgent(
      EDGE_CONFIG_SCHEMA.parse({
        model: join(dir, "model"),
        split: SPLIT,
        port: 0,
        httpAddress: "",
        cloudAddress: worker.server.address,
        cloudDeadlineMs: 2000,
      }),
      log,
      { cacheDir: join(dir, "graphs") },
    );
    const target: Target = {
      workerAddress: worker.server.address,
      edgeAddress: edge.server.address,
      weightsHash: checkpoint.weightsHash,
      hiddenSize: checkpoint.config.hiddenSize,
    };
    const { tandem } = loadTandemProtos();
    const insecure = grpc.credentials.createInsecure();
    const clients: Clients = {
      worker: new tandem.v1.CloudWorker(target.workerAddress, insecure) as unknown as Clients["worker"],
      edge: new tandem.v1.Inference(target.edgeAddress, insecure) as unknown as Clients["edge"],
      rawWorker: new grpc.Client(target.workerAddress, insecure),
      rawEdge: new grpc.Client(target.edgeAddress, insecure),
    };

    const all = fc.sample(fc.oneof(escalateCase(target), generateCase()), { numRuns: cases, seed });
    const statuses: Record<string, number> = {};
    const byKind: Record<string, Record<string, number>> = {};
    /** What a server-side fault said, per distinct message: INTERNAL is never the client's doing. */
    const internal: Record<string, number> = {};
    let unanswered = 0;
    let next = 0;
    const started = performance.now();
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next < all.length) {
          const fuzzCase = all[next++];
          const { code, details } = await runCase(fuzzCase, clients);
          if (code === "DEADLINE_EXCEEDED") unanswered++;
          statuses[code] = (statuses[code] ?? 0) + 1;
          byKind[fuzzCase.kind] ??= {};
          byKind[fuzzCase.kind][code] = (byKind[fuzzCase.kind][code] ?? 0) + 1;
          if (code === "INTERNAL") {
            const shape = details.replace(/\d+/g, "N").slice(0, 160);
            internal[shape] = (internal[shape] ?? 0) + 1;
          }
          if (next % 1000 === 0) process.stderr.write(`fuzz bench: ${next} of ${all.length}\n`);
        }
      }),
    );
    const seconds = (performance.now() - started) / 1000;
    // Generations release their device sessions as they end; give the last ones a moment.
    const settle = Date.now() + 2000;
    while (edge.openSessions() > 0 && Date.now() < settle) await new Promise((r) => setTimeout(r, 20));
    const result = {
      name: "fuzz",
      cases: all.length,
      seed,
      crashes: crashes.length,
      crash_samples: crashes.slice(0, 3),
      unanswered,
      statuses,
      statuses_by_kind: byKind,
      internal_details: internal,
      leaked_edge_sessions: edge.openSessions(),
      worker_sessions_held: worker.contexts.stats().sessions,
      cases_per_s: all.length / seconds,
      note: "in-process edge + worker on loopback, tiny random checkpoint; CLIENT_REFUSED = the client's own serializer could not encode the value (never sent)",
    };
    for (const client of Object.values(clients)) client.close();
    await edge.close(100);
    await worker.close(100);
    return result;
  } finally {
    process.off("uncaughtException", onCrash);
    process.off("unhandledRejection", onCrash);
    rmSync(dir, { recursive: true, force: true });
  }
}
