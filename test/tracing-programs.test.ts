/**
 * Tracing as the programs start it (bin/load-program.mjs): a real tandem-cloud-worker
 * process exporting OTLP/JSON to a collector this test runs. Without TANDEM_TRACING it
 * exports nothing, OTEL_* variables notwithstanding; with TANDEM_TRACING=1 the span of a
 * frame it serves is a child of the span the frame's traceparent names, nothing but
 * Tandem's own spans is exported (no automatic instrumentation: no span per gRPC call or
 * per export), and the spans still buffered at SIGTERM are exported before the process
 * exits.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadCheckpoint } from "@tandem/runtime";
import { TINY_LLAMA, writeRandomCheckpoint } from "@tandem/runtime/testing";
import { escalateStream, freePort, startProgram } from "@tandem/testkit";

const HIDDEN = 64;
const SPLIT = 2;
const TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID = "00f067aa0ba902b7";

interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
}
interface OtlpExport {
  resourceSpans: {
    resource: { attributes: { key: string; value: { stringValue?: string } }[] };
    scopeSpans: { spans: OtlpSpan[] }[];
  }[];
}

let dir: string;
let model: string;
let weightsHash: string;
let collector: Server;
let endpoint: string;
const exports: OtlpExport[] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "tandem-tracing-programs-"));
  model = join(dir, "model");
  await writeRandomCheckpoint(model, { ...TINY_LLAMA, tieWordEmbeddings: true, seed: 3 });
  weightsHash = (await loadCheckpoint(model)).weightsHash;
  collector = createServer((request, response) => {
    let body = "";
    request.on("data", (chunk: Buffer) => (body += chunk.toString()));
    request.on("end", () => {
      if (request.url === "/v1/traces") exports.push(JSON.parse(body) as OtlpExport);
      response.writeHead(200, { "content-type": "application/json" }).end("{}");
    });
  });
  await new Promise<void>((resolve) => collector.listen(0, "127.0.0.1", resolve));
  endpoint = `http://127.0.0.1:${(collector.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise((resolve) => collector?.close(resolve));
  rmSync(dir, { recursive: true, force: true });
});

/** Starts a worker, has it serve one traced frame, and stops it with SIGTERM. */
async function serveOneFrame(tracing: string): Promise<void> {
  const worker = await startProgram(
    "tandem-cloud-worker",
    { model, split: SPLIT, port: await freePort(), workerId: "w" },
    {
      TANDEM_CACHE_DIR: join(dir, "cache"),
      TANDEM_TRACING: tracing,
      OTEL_EXPORTER_OTLP_ENDPOINT: endpoint,
      OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
      // Nothing is exported on a timer during the test: what arrives came with the shutdown.
      OTEL_BSP_SCHEDULE_DELAY: "600000",
    },
  );
  try {
    const stream = escalateStream(worker.address);
    stream.send({
      open: {
        sessionId: "s",
        modelId: "m",
        weightsHash,
        splitLayer: SPLIT,
        codec: "HIDDEN_STATE_CODEC_FP32",
        hiddenSize: HIDDEN,
      },
    });
    expect((await stream.next(1)).opened).toBeTruthy();
    stream.send({
      frame: {
        start: 0,
        count: 2,
        payload: Buffer.alloc(2 * HIDDEN * 4),
        wantToken: true,
        requestId: "1",
        traceparent: `00-${TRACE_ID}-${PARENT_SPAN_ID}-01`,
      },
    });
    expect((await stream.next(2)).token?.position).toBe(2);
    stream.end();
  } finally {
    await worker.kill("SIGTERM");
  }
}

const spansOf = (exported: OtlpExport[]) =>
  exported.flatMap((e) =>
    e.resourceSpans.flatMap((r) =>
      r.scopeSpans.flatMap((s) =>
        s.spans.map((span) => ({
          ...span,
          service: r.resource.attributes.find((a) => a.key === "service.name")?.value.stringValue,
        })),
      ),
    ),
  );

describe("tandem-cloud-worker's traces", () => {
  it("are off without TANDEM_TRACING, whatever the OTEL_* variables say", async () => {
    exports.length = 0;
    await serveOneFrame("");
    expect(exports).toEqual([]);
  });

  it("with TANDEM_TRACING=1 continue the frame's trace, and are flushed at SIGTERM", async () => {
    exports.length = 0;
    await serveOneFrame("1");
    const spans = spansOf(exports);
    const frame = spans.find((s) => s.name === "tandem.worker.frame");
    expect(frame).toMatchObject({
      traceId: TRACE_ID,
      parentSpanId: PARENT_SPAN_ID,
      service: "tandem-cloud-worker",
    });
    expect(spans.every((s) => s.name.startsWith("tandem."))).toBe(true);
  });
});
