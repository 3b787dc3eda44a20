/** The decode batch's span: its own for several frames, linked to theirs; none for a frame that ran alone. */
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace";
import { beforeAll, describe, expect, it } from "vitest";
import { inSpan } from "@tandem/common";
import { startTracing } from "@tandem/common/tracing-sdk";
import { WORKER_SPANS, inBatchSpan } from "./worker-tracing.ts";

const exporter = new InMemorySpanExporter();
const processor = new SimpleSpanProcessor({ exporter });
beforeAll(() => {
  startTracing({ serviceName: "worker-tracing-test", spanProcessors: [processor] });
});

/** The finished spans of that name, once the processor has handed every ended span over. */
async function spansNamed(name: string) {
  await processor.forceFlush();
  return exporter.getFinishedSpans().filter((s) => s.name === name);
}

describe("a decode batch's span", () => {
  it("for several frames is a root span of its own, linked to each frame's span, each told the batch's size", async () => {
    exporter.reset();
    let ran = false;
    await inSpan("frame a", {}, (a) =>
      inSpan("frame b", {}, (b) =>
        inBatchSpan([a, b, undefined], async () => {
          ran = true;
        }),
      ),
    );
    expect(ran).toBe(true);
    const [batch] = await spansNamed(WORKER_SPANS.decodeBatch);
    expect(batch.parentSpanContext).toBeUndefined();
    expect(batch.attributes["tandem.batch.size"]).toBe(3);
    const frames = [...(await spansNamed("frame a")), ...(await spansNamed("frame b"))];
    expect(batch.links.map((l) => l.context.spanId).sort()).toEqual(
      frames.map((f) => f.spanContext().spanId).sort(),
    );
    for (const frame of frames) expect(frame.attributes["tandem.batch.size"]).toBe(3);
  });

  it("is not made for a frame that ran alone: the frame's span records the batch size 1", async () => {
    exporter.reset();
    await inSpan("frame c", {}, (c) => inBatchSpan([c], async () => {}));
    expect(await spansNamed(WORKER_SPANS.decodeBatch)).toHaveLength(0);
    expect((await spansNamed("frame c"))[0].attributes["tandem.batch.size"]).toBe(1);
  });

  it("is not made when no frame records (tracing off for them, or not sampled)", async () => {
    exporter.reset();
    await inBatchSpan([undefined, undefined], async () => {});
    await processor.forceFlush();
    expect(exporter.getFinishedSpans()).toHaveLength(0);
  });
});
