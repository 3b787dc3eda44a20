/**
 * The CloudWorker/Escalate protocol against a real worker on loopback: a hand-rolled
 * client sends good and bad frames; the edge's CloudSession reconnects without resending
 * what the worker already holds.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLOUD_LINK_BACKOFF, UnavailableError } from "@tandem/common";
import { CloudLinks, DEFAULT_CLOUD_LINK_OPTIONS, StaticCloudRoute } from "@tandem/edge-agent";
import { loadTandemProtos, type EdgeMessage } from "@tandem/proto";
import { escalateStream } from "@tandem/testkit";
import {
  type Checkpoint,
  getCodec,
  GREEDY,
  loadCheckpoint,
  loadLocalSplit,
  splitIdentityOf,
} from "@tandem/runtime";
import { TINY_LLAMA, writeRandomCheckpoint } from "@tandem/runtime/testing";
import { startCloudWorker, type CloudWorker } from "@tandem/cloud-worker";

let dir: string;
let checkpoint: Checkpoint;
let worker: CloudWorker;
let hidden: Float32Array; // split-layer hidden states of 12 positions
const HIDDEN = 64;
const SPLIT = 2;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "tandem-escalate-"));
  // The tiny Llama preset: hidden 64, 4 layers, 4 heads over 2 KV heads (head dim 16).
  await writeRandomCheckpoint(join(dir, "model"), {
    ...TINY_LLAMA,
    tieWordEmbeddings: true,
    seed: 31,
    initScale: 2,
  });
  checkpoint = await loadCheckpoint(join(dir, "model"));
  const local = await loadLocalSplit(checkpoint, { split: SPLIT, cacheDir: join(dir, "graphs") });
  local.lower.open("h");
  hidden = (await local.lower.forward("h", { ids: [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16] })).hidden!;
  await local.release();
  worker = await startCloudWorker(
    { modelDir: join(dir, "model"), split: SPLIT, workerId: "test", cacheDir: join(dir, "graphs") },
    pino({ level: "silent" }),
  );
});

afterAll(async () => {
  await worker?.close(100);
  rmSync(dir, { recursive: true, force: true });
});

/** A raw Escalate stream to the worker. */
const rawStream = () => escalateStream(worker.server.address);

const open = (sessionId: string, overrides: object = {}): EdgeMessage => ({
  open: {
    sessionId,
    modelId: "m",
    weightsHash: checkpoint.weightsHash,
    splitLayer: SPLIT,
    codec: "HIDDEN_STATE_CODEC_FP32",
    hiddenSize: HIDDEN,
    ...overrides,
  },
});
const frame = (start: number, count: number, overrides: object = {}): EdgeMessage => ({
  frame: {
    start,
    count,
    payload: getCodec("fp32").encode(
      hidden.subarray(start * HIDDEN, (start + count) * HIDDEN),
      count,
      HIDDEN,
    ),
    wantToken: true,
    requestId: String(start),
    ...overrides,
  },
});

describe("Escalate", () => {
  it("opens a session, answers a token per frame, and reports the context it holds on reopen", async () => {
    const a = rawStream();
    a.send(open("s1"));
    expect((await a.next(1)).opened?.contextLength).toBe(0);
    a.send(frame(0, 5));
    const reply = await a.next(2);
    expect(reply.token?.position).toBe(5);
    expect(reply.token?.requestId).toBe("0");
    a.end();
    const b = rawStream();
    b.send(open("s1"));
    expect((await b.next(1)).opened?.contextLength).toBe(5);
    b.send(frame(8, 2));
    expect((await b.next(2)).contextLost?.resumeFrom).toBe(5);
    b.end();
  });

  // Messages are built lazily: the hidden states exist only after beforeAll.
  const bad: [string, () => EdgeMessage[], grpc.status, RegExp][] = [
    [
      "a frame before open",
      () => [frame(0, 1)],
      grpc.status.FAILED_PRECONDITION,
      /frame: the stream must start with open/,
    ],
    [
      "other weights",
      () => [open("b1", { weightsHash: "ab".repeat(32) })],
      grpc.status.FAILED_PRECONDITION,
      /open\.weights_hash/,
    ],
    [
      "another split",
      () => [open("b2", { splitLayer: 3 })],
      grpc.status.FAILED_PRECONDITION,
      /open\.split_layer/,
    ],
    [
      "another hidden size",
      () => [open("b3", { hiddenSize: 32 })],
      grpc.status.FAILED_PRECONDITION,
      /open\.hidden_size/,
    ],
    [
      "no codec",
      () => [open("b4", { codec: "HIDDEN_STATE_CODEC_UNSPECIFIED" })],
      grpc.status.INVALID_ARGUMENT,
      /open\.codec/,
    ],
    ["an empty session id", () => [open("")], grpc.status.INVALID_ARGUMENT, /open\.session_id/],
    [
      "a payload of the wrong size",
      () => [open("b5"), frame(0, 2, { count: 3 })],
      grpc.status.INVALID_ARGUMENT,
      /frame\.payload: fp32 for 3 positions of 64 needs 768 bytes, got 512/,
    ],
    [
      "zero positions",
      () => [open("b6"), frame(0, 1, { count: 0, payload: new Uint8Array(0) })],
      grpc.status.INVALID_ARGUMENT,
      /frame\.count/,
    ],
    [
      "a non-finite hidden state",
      () => [open("b7"), frame(0, 1, { payload: new Uint8Array(new Float32Array(HIDDEN).fill(NaN).buffer) })],
      grpc.status.INVALID_ARGUMENT,
      /frame\.payload: .*non-finite/,
    ],
    [
      "a temperature out of range",
      () => [open("b8"), frame(0, 1, { temperature: -2 })],
      grpc.status.INVALID_ARGUMENT,
      /frame\.temperature/,
    ],
    [
      "a tracestate longer than W3C allows",
      () => [open("b10"), frame(0, 1, { tracestate: "k=" + "v".repeat(600) })],
      grpc.status.INVALID_ARGUMENT,
      /frame\.tracestate: must be at most 512 characters, got 602/,
    ],
    [
      "positions past the model's limit",
      () => [open("b9"), frame(0, 1, { start: 5000 })],
      grpc.status.INVALID_ARGUMENT,
      /frame\.start/,
    ],
  ];
  for (const [name, messages, code, details] of bad) {
    it(`rejects ${name} with ${grpc.status[code]} naming the field`, async () => {
      const s = rawStream();
      for (const m of messages()) s.send(m);
      const status = await s.status;
      expect(status.code).toBe(code);
      expect(status.details).toMatch(details);
      s.end();
    });
  }

  it("refuses bytes that are no EdgeMessage with INVALID_ARGUMENT naming the message, and goes on serving", async () => {
    // As a client that does not speak protobuf sends them: raw bytes, no serializer of ours.
    const escalate = loadTandemProtos().tandem.v1.CloudWorker.service.Escalate;
    const raw = (bytes: Buffer) => bytes;
    const client = new grpc.Client(worker.server.address, grpc.credentials.createInsecure());
    const send = (chunks: Buffer[]) =>
      new Promise<{ replies: number; status: grpc.StatusObject }>((resolve) => {
        let replies = 0;
        const call = client.makeBidiStreamRequest(escalate.path, raw, raw);
        call.on("data", () => replies++);
        call.on("error", () => undefined);
        call.on("status", (status: grpc.StatusObject) => resolve({ replies, status }));
        for (const chunk of chunks) call.write(chunk);
        call.end();
      });
    // A varint cut short: no protobuf message at all.
    const garbage = Buffer.from([0xff, 0xff, 0xff]);
    try {
      const rejectedBefore = worker.counters.rejected;
      const first = await send([garbage]);
      expect(first.status.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(first.status.details).toMatch(/^message: is not a valid tandem\.v1\.EdgeMessage \(.+\)$/);
      // After a good open, the bad message ends the stream like any other bad one would.
      const second = await send([escalate.requestSerialize(open("raw")), garbage]);
      expect(second.replies).toBe(1);
      expect(second.status.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(second.status.details).toMatch(/^message: is not a valid tandem\.v1\.EdgeMessage/);
      expect(worker.counters.rejected - rejectedBefore).toBe(2);
    } finally {
      client.close();
    }
    const s = rawStream();
    s.send(open("raw"));
    expect((await s.next(1)).opened?.contextLength).toBe(0);
    s.send(frame(0, 2));
    expect((await s.next(2)).token?.position).toBe(2);
    s.end();
  });

  it("keeps a session's context and keeps serving after a bad frame", async () => {
    const a = rawStream();
    a.send(open("keep"));
    a.send(frame(0, 4));
    await a.next(2);
    a.send(frame(4, 1, { count: 2 }));
    expect((await a.status).code).toBe(grpc.status.INVALID_ARGUMENT);
    a.end();
    const b = rawStream();
    b.send(open("keep"));
    expect((await b.next(1)).opened?.contextLength).toBe(4);
    b.send(frame(4, 1));
    expect((await b.next(2)).token?.position).toBe(5);
    b.end();
  });
});

describe("CloudSession (the edge side)", () => {
  it("after a broken stream, reopens and sends only what the worker does not hold", async () => {
    const link = new CloudLinks(
      { ...DEFAULT_CLOUD_LINK_OPTIONS, codec: "fp32", backoff: { ...CLOUD_LINK_BACKOFF, initialDelayMs: 1 } },
      { modelId: "m", ...splitIdentityOf(checkpoint, SPLIT) },
      new StaticCloudRoute(worker.server.address),
    );
    const session = link.session("resync");
    const first = await session.extend({
      start: 0,
      hidden: hidden.subarray(0, 10 * HIDDEN),
      count: 10,
      wantToken: true,
      sampling: GREEDY,
    });
    expect(first).toBeDefined();
    const positionsBefore = worker.counters.positions;
    // Break the stream from the edge side, as a network failure would.
    (session as unknown as { stream: grpc.ClientDuplexStream<unknown, unknown> }).stream.cancel();
    await new Promise((r) => setTimeout(r, 50));
    const answer = await session.extend({
      start: 10,
      hidden: hidden.subarray(10 * HIDDEN, 12 * HIDDEN),
      count: 2,
      wantToken: true,
      sampling: GREEDY,
    });
    expect(answer).toBeDefined();
    expect(worker.counters.positions - positionsBefore).toBe(2);
    await session.close();
    await link.close();
  });

  it("treats a worker whose reply is not a CloudMessage as unavailable, not as an answer", async () => {
    // A worker that opens the session properly, then answers a frame with bytes that no
    // CloudMessage decodes to (wire type 7 does not exist).
    const escalate = loadTandemProtos().tandem.v1.CloudWorker.service.Escalate;
    const raw = (bytes: Buffer) => bytes;
    const server = new grpc.Server();
    server.addService(
      {
        Escalate: {
          ...escalate,
          requestSerialize: raw,
          requestDeserialize: raw,
          responseSerialize: raw,
          responseDeserialize: raw,
        },
      },
      {
        Escalate(call: grpc.ServerDuplexStream<Buffer, Buffer>) {
          let opened = false;
          call.on("data", () => {
            call.write(
              opened
                ? Buffer.from([0xff, 0xff, 0xff])
                : escalate.responseSerialize({ opened: { contextLength: 0, workerId: "liar" } }),
            );
            opened = true;
          });
        },
      },
    );
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) =>
        e ? reject(e) : resolve(p),
      ),
    );
    const links = new CloudLinks(
      { ...DEFAULT_CLOUD_LINK_OPTIONS, codec: "fp32" },
      { modelId: "m", ...splitIdentityOf(checkpoint, SPLIT) },
      new StaticCloudRoute(`127.0.0.1:${port}`),
    );
    const session = links.session("garbage");
    try {
      const answer = session.extend({
        start: 0,
        hidden: hidden.subarray(0, 2 * HIDDEN),
        count: 2,
        wantToken: true,
        sampling: GREEDY,
      });
      await expect(answer).rejects.toBeInstanceOf(UnavailableError);
      await expect(answer).rejects.toThrow(/invalid reply: not a CloudMessage/);
    } finally {
      await session.close();
      await links.close();
      server.forceShutdown();
    }
  });
});
