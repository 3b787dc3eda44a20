/**
 * The edge's metrics against a real cloud worker (tandem-cloud-worker, a process, its
 * own metrics scraped over HTTP): a collaborative generation on the demo model through
 * CloudLinks with EdgeMetrics moves the edge's series by exactly what the generator's
 * stats and the session's byte counts say, and the hidden-state bytes the edge sent are
 * the bytes the worker received. A worker that lost the session's context counts a replay.
 *
 * The generation path (the agent's Generate and HTTP handlers) reports tokens; here the
 * test does, for each token the generator yields, as the agent does.
 */
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ContextLostError } from "@tandem/common";
import { Registry, startMetricsServer, type MetricsServer } from "@tandem/common/metrics";
import {
  edgeSegmentSpec,
  GREEDY,
  loadCheckpoint,
  SegmentModel,
  SegmentSessions,
  SplitGenerator,
  ThresholdExitPolicy,
  Tokenizer,
  type Checkpoint,
  splitIdentityOf,
} from "@tandem/runtime";
import {
  freePort,
  metricsAddressOf,
  scrapeMetrics,
  startProgram,
  type RunningProcess,
} from "@tandem/testkit";
import { pino } from "pino";
import { CloudLinks, DEFAULT_CLOUD_LINK_OPTIONS, type EdgeIdentity } from "./cloud-link.ts";
import { StaticCloudRoute } from "./cloud-route.ts";
import { EdgeMetrics } from "./edge-metrics.ts";

const MODEL = join(import.meta.dirname, "..", "..", "models", "tandem-demo");
const SPLIT = 3;
const EXITS = [2, 3];

let checkpoint: Checkpoint;
let lower: SegmentSessions;
let identity: EdgeIdentity;
let port: number;
let worker: RunningProcess;
let workerMetrics: string;

const startWorker = async () => {
  worker = await startProgram(
    "tandem-cloud-worker",
    { model: MODEL, split: SPLIT, port, workerId: "metrics", metricsAddress: "127.0.0.1:0" },
    { TANDEM_LOG_LEVEL: "info" },
  );
  workerMetrics = await metricsAddressOf(worker);
};

beforeAll(async () => {
  port = await freePort();
  await startWorker();
  checkpoint = await loadCheckpoint(MODEL);
  const model = await SegmentModel.load(
    checkpoint,
    edgeSegmentSpec(
      SPLIT,
      EXITS.map((afterLayer) => ({ afterLayer })),
      "fp32",
    ),
  );
  lower = new SegmentSessions(model);
  identity = { modelId: "tandem-demo", ...splitIdentityOf(checkpoint, SPLIT) };
});

afterAll(async () => {
  await worker?.kill();
  await lower?.model.release();
});

/** An edge's metrics on a registry of its own, served as a program serves them. */
async function edgeMetrics(): Promise<{ metrics: EdgeMetrics; server: MetricsServer; links: CloudLinks }> {
  const registry = new Registry();
  const metrics = new EdgeMetrics(registry, { layers: checkpoint.config.numLayers });
  const server = await startMetricsServer({
    address: "127.0.0.1:0",
    registry,
    log: pino({ level: "silent" }),
  });
  const links = new CloudLinks(
    { ...DEFAULT_CLOUD_LINK_OPTIONS, codec: "fp16" },
    identity,
    new StaticCloudRoute(worker.address),
    metrics,
  );
  return { metrics, server, links };
}

describe("EdgeMetrics", () => {
  it("counts a collaborative generation's tokens, escalations, bytes and round trips as its stats do", async () => {
    const { metrics, server, links } = await edgeMetrics();
    try {
      const tokenizer = await Tokenizer.forCheckpoint(checkpoint);
      const session = links.session("metrics-generation");
      const generator = new SplitGenerator(
        lower,
        session,
        ThresholdExitPolicy.uniform(EXITS, "prob", 0.6),
        "metrics-generation",
      );
      for await (const token of generator.tokens(tokenizer.encode("The edge answers what it is sure of."), {
        maxTokens: 32,
      }))
        metrics.tokenProduced(token.source, token.exitLayer);
      await session.close();
      const { stats } = generator;
      // Both kinds of answer, or the test shows nothing about the sources.
      expect(stats.edgeTokens).toBeGreaterThan(0);
      expect(stats.cloudTokens).toBeGreaterThan(0);

      const edge = await scrapeMetrics(server.address);
      expect(edge.value("tandem_edge_tokens_total", { source: "edge" })).toBe(stats.edgeTokens);
      expect(edge.value("tandem_edge_tokens_total", { source: "cloud" })).toBe(stats.cloudTokens);
      expect(edge.value("tandem_edge_tokens_total", { source: "edge_fallback" })).toBe(0);
      // Exits answer after layer 2 or 3; the cloud after the last layer.
      expect(edge.value("tandem_edge_exit_layer_bucket", { le: "3" })).toBe(stats.edgeTokens);
      expect(edge.value("tandem_edge_exit_layer_count")).toBe(stats.edgeTokens + stats.cloudTokens);
      expect(edge.value("tandem_edge_escalations_total")).toBe(stats.escalations);
      expect(edge.value("tandem_edge_cloud_round_trip_seconds_count")).toBe(stats.cloudTokens);
      expect(edge.value("tandem_edge_context_replays_total")).toBe(0);
      // fp16: two bytes per value of every position sent.
      const hiddenBytes = stats.positionsSent * identity.hiddenSize * 2;
      expect(edge.value("tandem_edge_hidden_state_bytes_sent_total", { codec: "fp16" })).toBe(hiddenBytes);
      expect(edge.value("tandem_edge_hidden_state_bytes_sent_total", { codec: "fp32" })).toBe(0);
      expect(edge.value("tandem_edge_escalation_bytes_sent_total", { codec: "fp16" })).toBe(
        session.bytesSent,
      );
      expect(edge.value("tandem_edge_escalation_bytes_received_total", { codec: "fp16" })).toBe(
        session.bytesReceived,
      );

      const cloud = await scrapeMetrics(workerMetrics);
      expect(cloud.value("tandem_worker_hidden_state_bytes_received_total", { codec: "fp16" })).toBe(
        hiddenBytes,
      );
      expect(cloud.value("tandem_worker_tokens_total")).toBe(stats.cloudTokens);
      expect(cloud.value("tandem_worker_decode_batch_size_count")).toBeGreaterThan(0);
      expect(cloud.value("tandem_worker_step_seconds_count")).toBe(stats.escalations);
    } finally {
      await links.close();
      await server.close();
    }
  });

  it("counts a replay when the worker that held the session's context is gone", async () => {
    const { server, links } = await edgeMetrics();
    try {
      const session = links.session("metrics-replay");
      lower.open("metrics-replay");
      const step = await lower.forward("metrics-replay", { ids: [5, 6, 7, 8] });
      lower.release("metrics-replay");
      const frame = { hidden: step.hidden!, wantToken: true, sampling: GREEDY };
      await session.extend({
        ...frame,
        start: 0,
        count: 3,
        hidden: step.hidden!.subarray(0, 3 * identity.hiddenSize),
      });
      // A new worker at the same address holds nothing of the session.
      await worker.kill("SIGKILL");
      await startWorker();
      await expect(
        session.extend({
          ...frame,
          start: 3,
          count: 1,
          hidden: step.hidden!.subarray(3 * identity.hiddenSize),
        }),
      ).rejects.toThrow(ContextLostError);
      const edge = await scrapeMetrics(server.address);
      expect(edge.value("tandem_edge_context_replays_total")).toBe(1);
      expect(edge.value("tandem_edge_escalations_total")).toBe(2);
    } finally {
      await links.close();
      await server.close();
    }
  });
});
