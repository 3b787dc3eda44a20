/**
 * Traces from the edge to the cloud, in one process: an edge's CloudSession escalating to
 * a real cloud worker inside request spans. Off (no SDK started), frames carry no trace
 * context and nothing records; on, each request is one connected trace — its escalation
 * spans, and under each the worker's span of the frame it sent — and each decode batch's
 * span links to the frame spans it served. A client's trace context, sent in gRPC
 * metadata or HTTP headers, becomes the parent of the edge's request span.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from "@opentelemetry/sdk-trace";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { startTracing } from "@tandem/common/tracing-sdk";
import {
  CloudLinks,
  DEFAULT_CLOUD_LINK_OPTIONS,
  EDGE_CONFIG_SCHEMA,
  EDGE_SPANS,
  StaticCloudRoute,
  runInRequestSpan,
  startEdgeAgent,
} from "@tandem/edge-agent";
import { GREEDY, loadCheckpoint, loadLocalSplit, type Checkpoint, splitIdentityOf } from "@tandem/runtime";
import { TINY_LLAMA, writeRandomCheckpoint } from "@tandem/runtime/testing";
import { WORKER_SPANS, startCloudWorker, type CloudWorker } from "@tandem/cloud-worker";
import * as grpc from "@grpc/grpc-js";
import { contextOf } from "@tandem/common";
import { generate, until } from "@tandem/testkit";

const HIDDEN = 64;
const SPLIT = 2;
const PROMPT_POSITIONS = 8;
const POSITIONS = 12;
const REQUEST_SPAN = "tandem.request";

let dir: string;
let checkpoint: Checkpoint;
let worker: CloudWorker;
let hidden: Float32Array;
let links: CloudLinks;
/** Every frame the edge serialized for the wire. */
const frames: { start: number; traceparent: string }[] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "tandem-tracing-"));
  await writeRandomCheckpoint(join(dir, "model"), { ...TINY_LLAMA, tieWordEmbeddings: true, seed: 7 });
  checkpoint = await loadCheckpoint(join(dir, "model"));
  const local = await loadLocalSplit(checkpoint, { split: SPLIT, cacheDir: join(dir, "graphs") });
  local.lower.open("h");
  const ids = Array.from({ length: POSITIONS }, (_, i) => 5 + i);
  hidden = (await local.lower.forward("h", { ids })).hidden!;
  await local.release();
  worker = await startCloudWorker(
    { modelDir: join(dir, "model"), split: SPLIT, workerId: "w", cacheDir: join(dir, "graphs") },
    pino({ level: "silent" }),
  );
  links = new CloudLinks(
    { ...DEFAULT_CLOUD_LINK_OPTIONS, codec: "fp32" },
    { modelId: "m", ...splitIdentityOf(checkpoint, SPLIT) },
    new StaticCloudRoute(worker.server.address),
  );
  // The one serializer of every link: what it is given is what goes on the wire.
  const messages = links.get(worker.server.address).messages;
  const serialize = messages.serialize;
  vi.spyOn(messages, "serialize").mockImplementation((message) => {
    if (message.frame)
      frames.push({
        start: message.frame.start ?? 0,
        traceparent: message.frame.traceparent ?? "",
      });
    return serialize(message);
  });
});

afterAll(async () => {
  await links?.close();
  await worker?.close(100);
  rmSync(dir, { recursive: true, force: true });
});

/** One generation's escalations inside its request span: the prompt, then one position at a time. */
async function generation(sessionId: string): Promise<void> {
  await runInRequestSpan(REQUEST_SPAN, { "tandem.session_id": sessionId }, {}, async (span) => {
    const session = links.session(sessionId, contextOf(span));
    try {
      await session.extend({
        start: 0,
        count: PROMPT_POSITIONS,
        hidden: hidden.subarray(0, PROMPT_POSITIONS * HIDDEN),
        wantToken: true,
        sampling: GREEDY,
      });
      for (let p = PROMPT_POSITIONS; p < POSITIONS; p++)
        await session.extend({
          start: p,
          count: 1,
          hidden: hidden.subarray(p * HIDDEN, (p + 1) * HIDDEN),
          wantToken: true,
          sampling: GREEDY,
        });
    } finally {
      await session.close();
    }
  });
}

describe("tracing off (no SDK started)", () => {
  it("records nothing and sends frames without trace context", async () => {
    let recording: boolean | undefined;
    await runInRequestSpan(REQUEST_SPAN, {}, {}, async (span) => {
      recording = span.isRecording();
    });
    expect(recording).toBe(false);
    frames.length = 0;
    await generation("off");
    expect(frames.map((f) => f.start)).toEqual([0, 8, 9, 10, 11]);
    expect(frames.every((f) => f.traceparent === "")).toBe(true);
  });
});

describe("tracing on", () => {
  const exporter = new InMemorySpanExporter();
  let spans: ReadableSpan[];
  const named = (name: string) => spans.filter((s) => s.name === name);
  const parentOf = (span: ReadableSpan) => span.parentSpanContext?.spanId;

  beforeAll(async () => {
    startTracing({
      serviceName: "tandem-test",
      spanProcessors: [new SimpleSpanProcessor({ exporter })],
    });
    frames.length = 0;
    // Two sessions at once, so the worker may batch their decode steps together.
    await Promise.all([generation("a"), generation("b")]);
    // The worker's frame spans end before their replies leave; batches end with their step.
    await until("every span", () => exporter.getFinishedSpans().length >= 2 + 10 + 10);
    spans = exporter.getFinishedSpans();
  });

  it("makes each request one trace: request span → escalation spans → the worker's frame spans", () => {
    const requests = named(REQUEST_SPAN);
    expect(requests).toHaveLength(2);
    expect(new Set(requests.map((r) => r.spanContext().traceId)).size).toBe(2);
    for (const request of requests) {
      const { traceId, spanId } = request.spanContext();
      const escalations = named(EDGE_SPANS.escalation).filter((e) => parentOf(e) === spanId);
      expect(escalations.map((e) => e.attributes["tandem.escalation.start"])).toEqual([0, 8, 9, 10, 11]);
      for (const escalation of escalations) {
        expect(escalation.spanContext().traceId).toBe(traceId);
        expect(escalation.attributes).toMatchObject({
          "tandem.escalation.codec": "fp32",
          "tandem.escalation.bytes":
            escalation.attributes["tandem.escalation.count"] === 1 ? HIDDEN * 4 : 8 * HIDDEN * 4,
        });
        const served = named(WORKER_SPANS.frame).filter(
          (w) => parentOf(w) === escalation.spanContext().spanId,
        );
        expect(served).toHaveLength(1);
        expect(served[0].spanContext().traceId).toBe(traceId);
        expect(served[0].attributes["tandem.worker.reply"]).toBe("token");
      }
    }
    // Nothing else: every escalation and worker span belongs to one of the two traces.
    expect(named(EDGE_SPANS.escalation)).toHaveLength(10);
    expect(named(WORKER_SPANS.frame)).toHaveLength(10);
  });

  it("sends each frame with its escalation span's traceparent", () => {
    const escalations = named(EDGE_SPANS.escalation);
    const traceparents = escalations.map((e) => `00-${e.spanContext().traceId}-${e.spanContext().spanId}-01`);
    expect(frames.map((f) => f.traceparent).sort()).toEqual([...traceparents].sort());
    for (const frame of frames) {
      const escalation = escalations[traceparents.indexOf(frame.traceparent)];
      expect(escalation.attributes["tandem.escalation.start"]).toBe(frame.start);
    }
  });

  it("links each decode batch of several frames to their spans; a frame that ran alone carries its batch size", () => {
    const singlePositions = new Set(
      named(EDGE_SPANS.escalation)
        .filter((e) => e.attributes["tandem.escalation.count"] === 1)
        .map((e) => e.spanContext().spanId),
    );
    const decodeFrames = named(WORKER_SPANS.frame).filter((w) => singlePositions.has(parentOf(w)!));
    // Single positions go through the batcher; a prompt's several positions do not.
    expect(decodeFrames).toHaveLength(8);
    for (const frame of decodeFrames) expect(frame.attributes["tandem.batch.size"]).toBeGreaterThanOrEqual(1);
    const batched = decodeFrames.filter((w) => (w.attributes["tandem.batch.size"] as number) > 1);
    const batches = named(WORKER_SPANS.decodeBatch);
    const linked = batches.flatMap((b) => b.links.map((l) => l.context.spanId));
    expect(linked.sort()).toEqual(batched.map((w) => w.spanContext().spanId).sort());
    for (const batch of batches) {
      // A batch belongs to no one request's trace: it starts its own.
      expect(batch.parentSpanContext).toBeUndefined();
      expect(batch.links.length).toBeGreaterThan(1);
      expect(batch.attributes["tandem.batch.size"]).toBe(batch.links.length);
    }
  });

  it("makes one Generate through a real edge agent one trace, rooted at the agent's request span or the client's", async () => {
    const edge = await startEdgeAgent(
      EDGE_CONFIG_SCHEMA.parse({
        model: join(dir, "model"),
        split: SPLIT,
        exitLayers: [SPLIT],
        port: 0,
        httpAddress: "127.0.0.1:0",
        cloudAddress: worker.server.address,
        codec: "fp32",
      }),
      pino({ level: "silent" }),
      { cacheDir: join(dir, "graphs") },
    );
    try {
      exporter.reset();
      const result = await generate(edge.server.address, {
        tokenIds: { ids: [5, 6, 7, 8, 9] },
        maxTokens: 4,
        mode: "MODE_CLOUD_ONLY",
      });
      expect(result.error).toBeUndefined();
      await until("the request span", () =>
        exporter.getFinishedSpans().some((s) => s.name === EDGE_SPANS.request),
      );
      const finished = exporter.getFinishedSpans();
      const [request] = finished.filter((s) => s.name === EDGE_SPANS.request);
      expect(request.parentSpanContext).toBeUndefined();
      expect(request.attributes["tandem.session_id"]).toMatch(/^[0-9a-f-]{36}$/);
      expect(request.attributes).toMatchObject({
        "tandem.api": "grpc",
        "tandem.mode": "MODE_CLOUD_ONLY",
        "tandem.prompt_tokens": 5,
        "tandem.cloud_tokens": 4,
        "tandem.escalations": 4,
      });
      const { traceId, spanId } = request.spanContext();
      const escalations = finished.filter((s) => s.name === EDGE_SPANS.escalation);
      expect(escalations.map((e) => e.attributes["tandem.escalation.start"])).toEqual([0, 5, 6, 7]);
      expect(escalations.every((e) => e.spanContext().traceId === traceId && parentOf(e) === spanId)).toBe(
        true,
      );
      const served = finished.filter((s) => s.name === WORKER_SPANS.frame);
      expect(served).toHaveLength(4);
      expect(
        served.every(
          (w) =>
            w.spanContext().traceId === traceId &&
            escalations.some((e) => e.spanContext().spanId === parentOf(w)),
        ),
      ).toBe(true);

      // A client that traces: its context, in gRPC metadata or in HTTP headers, is the
      // parent of the request span, and the escalations follow into its trace.
      const clientTrace = "4bf92f3577b34da6a3ce929d0e0e4736";
      const metadata = new grpc.Metadata();
      metadata.set("traceparent", `00-${clientTrace}-00f067aa0ba902b7-01`);
      exporter.reset();
      const traced = await generate(
        edge.server.address,
        { tokenIds: { ids: [5, 6, 7] }, maxTokens: 2, mode: "MODE_CLOUD_ONLY" },
        undefined,
        { metadata },
      );
      expect(traced.error).toBeUndefined();
      const response = await fetch(`http://${edge.http!.address}/v1/completions`, {
        method: "POST",
        headers: { "content-type": "application/json", traceparent: `00-${clientTrace}-b7ad6b7169203331-01` },
        body: JSON.stringify({
          model: "model",
          prompt: [5, 6, 7],
          max_tokens: 2,
          tandem: { mode: "cloud_only" },
        }),
      });
      expect(response.status, await response.clone().text()).toBe(200);
      await response.text();
      await until(
        "both request spans",
        () => exporter.getFinishedSpans().filter((s) => s.name === EDGE_SPANS.request).length === 2,
      );
      const continued = exporter.getFinishedSpans().filter((s) => s.name === EDGE_SPANS.request);
      expect(
        continued.map((r) => [r.attributes["tandem.api"], r.spanContext().traceId, parentOf(r)]).sort(),
      ).toEqual([
        ["grpc", clientTrace, "00f067aa0ba902b7"],
        ["http", clientTrace, "b7ad6b7169203331"],
      ]);
      const followed = exporter.getFinishedSpans().filter((s) => s.name === EDGE_SPANS.escalation);
      expect(followed.length).toBeGreaterThanOrEqual(4);
      expect(followed.every((e) => e.spanContext().traceId === clientTrace)).toBe(true);
    } finally {
      await edge.close(100);
    }
  });
});
