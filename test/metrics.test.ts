/**
 * Prometheus metrics of the real programs, scraped over HTTP at their metricsAddress
 * (127.0.0.1:0: each binds a free port and logs it): a cloud worker in a cluster serving
 * a real edge's escalations, the control plane that places it, a batch worker running a
 * job. Each series moves by what the work did (the generation's summary, the job's
 * result). metricsAddress is off by default and a bad one is a setting error naming it.
 * Every metric a Grafana dashboard of the chart queries is served by some program.
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Queue } from "bullmq";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { batchQueueLocation, JOB_KINDS, submitJob, waitForJob } from "@tandem/batch-worker";
import { loadTandemProtos } from "@tandem/proto";
import { CLOSE_MESSAGE, loadCheckpoint } from "@tandem/runtime";
import {
  escalateStream,
  generate,
  metricsAddressOf,
  runProgram,
  scrapeMetrics,
  startNatsServer,
  startProgram,
  until,
  type ProgramName,
  type RunningProcess,
  type Scrape,
  type TestNatsServer,
} from "@tandem/testkit";

const ROOT = join(import.meta.dirname, "..");
const MODEL = join(ROOT, "models", "tandem-demo");
const HIDDEN_SIZE = 256; // models/tandem-demo/config.json
const REDIS = "redis://127.0.0.1:6379";
const PROGRAMS: ProgramName[] = [
  "tandem-edge",
  "tandem-cloud-worker",
  "tandem-control-plane",
  "tandem-batch-worker",
];
/** Programs log their metrics address at info. */
const INFO = { TANDEM_LOG_LEVEL: "info" };
const METRICS = { metricsAddress: "127.0.0.1:0" };
/** Names of this run's own: NATS buckets and BullMQ queues shared with no other run. */
const cluster = `metrics-${process.pid}-${Date.now()}`;
const batchCluster = `${cluster}-batch`;

let nats: TestNatsServer;
let controlPlane: RunningProcess;
let worker: RunningProcess;
let edge: RunningProcess;
const scrapes: Record<string, () => Promise<Scrape>> = {};
const PROMPT = "The edge answers what it is sure of.";

/** How far a series moved between two scrapes (NaN when either lacks it). */
const movedBy =
  (before: Scrape, after: Scrape) =>
  (name: string, labels?: Record<string, string>): number =>
    (after.value(name, labels) ?? NaN) - (before.value(name, labels) ?? NaN);

beforeAll(async () => {
  nats = await startNatsServer();
  controlPlane = await startProgram(
    "tandem-control-plane",
    { natsUrl: nats.url, cluster, replicaId: "cp-metrics", tickMs: 100, leaseTtlMs: 1000, ...METRICS },
    INFO,
  );
  worker = await startProgram(
    "tandem-cloud-worker",
    {
      model: MODEL,
      split: 3,
      port: 0,
      workerId: "w-metrics",
      natsUrl: nats.url,
      cluster,
      heartbeatMs: 100,
      ...METRICS,
    },
    INFO,
  );
  edge = await startProgram(
    "tandem-edge",
    {
      model: MODEL,
      split: 3,
      exitLayers: "2,3",
      threshold: 0.6,
      cloudAddress: worker.address,
      codec: "fp16",
      port: 0,
      ...METRICS,
    },
    INFO,
  );
  for (const [name, program] of Object.entries({ controlPlane, worker, edge })) {
    const address = await metricsAddressOf(program);
    scrapes[name] = () => scrapeMetrics(address);
  }
});

afterAll(async () => {
  await edge?.kill();
  await worker?.kill();
  await controlPlane?.kill();
  await nats?.stop();
  const location = batchQueueLocation(REDIS, batchCluster);
  for (const kind of JOB_KINDS) {
    const queue = new Queue(kind, { connection: location.connection, prefix: location.prefix });
    await queue.obliterate({ force: true });
    await queue.close();
  }
});

describe("tandem-control-plane's metrics", () => {
  it("report the leader and the placement map it wrote for the worker that joined", async () => {
    const scrape = await until("the leader to place the worker", async () => {
      const s = await scrapes.controlPlane();
      return (
        s.value("tandem_cluster_nodes") === 1 && (s.value("tandem_placement_map_version") ?? 0) >= 1 && s
      );
    });
    expect(scrape.value("tandem_control_plane_leader")).toBe(1);
    expect(scrape.families).toContain("tandem_expert_load_share");
    expect(scrape.families).toContain("process_cpu_user_seconds_total");
  });
});

describe("tandem-cloud-worker's metrics", () => {
  it("move by what a real edge's generation escalated: tokens, hidden-state bytes by codec, steps", async () => {
    const before = await scrapes.worker();
    let during: Scrape | undefined;
    const result = await generate(
      edge.address,
      { text: PROMPT, maxTokens: 40 },
      async (_, control, token) => {
        // Mid-generation, once the cloud holds the session: scrape-time gauges see it.
        if (during || token.source !== "TOKEN_SOURCE_CLOUD") return;
        control.pause();
        during = await scrapes.worker();
        control.resume();
      },
    );
    const summary = result.summary!;
    expect(summary.cloudTokens).toBeGreaterThan(0);
    const after = await scrapes.worker();
    const moved = movedBy(before, after);
    expect(moved("tandem_worker_tokens_total")).toBe(summary.cloudTokens);
    // Each position up to the last escalated one is sent once, two bytes a value in fp16.
    const lastCloud = result.tokens.filter((t) => t.source === "TOKEN_SOURCE_CLOUD").pop()!;
    expect(moved("tandem_worker_hidden_state_bytes_received_total", { codec: "fp16" })).toBe(
      lastCloud.position * HIDDEN_SIZE * 2,
    );
    expect(moved("tandem_worker_hidden_state_bytes_received_total", { codec: "fp32" })).toBe(0);
    expect(moved("tandem_worker_step_seconds_count")).toBe(summary.escalations);
    expect(moved("tandem_worker_decode_batch_size_count")).toBeGreaterThan(0);
    expect(moved("tandem_worker_context_lost_total")).toBe(0);
    expect(during?.value("tandem_worker_active_sessions")).toBe(1);
    expect(during?.value("tandem_worker_kv_cache_bytes")).toBeGreaterThan(0);
    // The edge closes its session at the end of the generation.
    await until(
      "the worker to release the session",
      async () => (await scrapes.worker()).value("tandem_worker_active_sessions") === 0,
    );
    expect(after.value("tandem_worker_evictions_total")).toBe(0);
  });
});

describe("tandem-cloud-worker's ContextLost count", () => {
  it("counts each frame it answers ContextLost (one past the context it holds)", async () => {
    const { weightsHash } = await loadCheckpoint(MODEL);
    const before = (await scrapes.worker()).value("tandem_worker_context_lost_total")!;
    const stream = escalateStream(worker.address);
    try {
      stream.send({
        open: {
          sessionId: "metrics-lost",
          modelId: "tandem-demo",
          weightsHash,
          splitLayer: 3,
          codec: "HIDDEN_STATE_CODEC_FP32",
          hiddenSize: HIDDEN_SIZE,
        },
      });
      expect((await stream.next(1)).opened).toBeTruthy();
      // The worker holds nothing of this session: a frame at position 4 cannot apply.
      stream.send({
        frame: {
          start: 4,
          count: 1,
          payload: Buffer.alloc(HIDDEN_SIZE * 4),
          wantToken: true,
          requestId: "1",
        },
      });
      expect((await stream.next(2)).contextLost?.resumeFrom).toBe(0);
    } finally {
      stream.end();
    }
    expect((await scrapes.worker()).value("tandem_worker_context_lost_total")).toBe(before + 1);
  });
});

describe("tandem-edge's metrics", () => {
  it("count a generation's tokens by source, escalations and bytes as its summary does", async () => {
    const [edgeBefore, workerBefore] = [await scrapes.edge(), await scrapes.worker()];
    const result = await generate(edge.address, { text: PROMPT, maxTokens: 40 });
    const summary = result.summary!;
    expect(summary.edgeTokens).toBeGreaterThan(0);
    expect(summary.cloudTokens).toBeGreaterThan(0);
    // The session's close message follows the summary: the edge's bytes sent count it too.
    const closeBytes =
      loadTandemProtos().tandem.v1.CloudWorker.service.Escalate.requestSerialize(CLOSE_MESSAGE).length;
    const sentWithClose = Number(summary.bytesSent) + closeBytes;
    const edgeAfter = await until("the session's close to be sent", async () => {
      const scrape = await scrapes.edge();
      const sent = movedBy(edgeBefore, scrape)("tandem_edge_escalation_bytes_sent_total", { codec: "fp16" });
      return sent >= sentWithClose && scrape;
    });
    const workerAfter = await scrapes.worker();
    const moved = movedBy(edgeBefore, edgeAfter);
    expect(moved("tandem_edge_tokens_total", { source: "edge" })).toBe(summary.edgeTokens);
    expect(moved("tandem_edge_tokens_total", { source: "cloud" })).toBe(summary.cloudTokens);
    expect(moved("tandem_edge_tokens_total", { source: "edge_fallback" })).toBe(summary.fallbackTokens);
    expect(moved("tandem_edge_exit_layer_count")).toBe(40);
    expect(moved("tandem_edge_escalations_total")).toBe(summary.escalations);
    expect(moved("tandem_edge_cloud_round_trip_seconds_count")).toBe(summary.cloudTokens);
    expect(moved("tandem_edge_escalation_bytes_sent_total", { codec: "fp16" })).toBe(sentWithClose);
    expect(moved("tandem_edge_escalation_bytes_received_total", { codec: "fp16" })).toBe(
      Number(summary.bytesReceived),
    );
    // What the edge sent of hidden states is what the worker received.
    expect(moved("tandem_edge_hidden_state_bytes_sent_total", { codec: "fp16" })).toBe(
      movedBy(workerBefore, workerAfter)("tandem_worker_hidden_state_bytes_received_total", {
        codec: "fp16",
      }),
    );
    expect(moved("tandem_edge_time_to_first_token_seconds_count")).toBe(1);
    expect(moved("tandem_edge_generations_total", { api: "grpc", outcome: "ok" })).toBe(1);
    expect(edgeAfter.value("tandem_edge_active_generations", { api: "grpc" })).toBe(0);
  });

  it("serve the default process metrics at metricsAddress", async () => {
    const scrape = await scrapes.edge();
    expect(scrape.value("process_cpu_user_seconds_total")).toBeGreaterThan(0);
    expect(scrape.families).toContain("nodejs_eventloop_lag_seconds");
  });
});

describe("tandem-batch-worker's metrics", () => {
  it("report each kind's queue depth by state and the duration of the jobs it ran", async () => {
    const batch = await startProgram(
      "tandem-batch-worker",
      { redisUrl: REDIS, cluster: batchCluster, kinds: "generate", fileRoots: ROOT, ...METRICS },
      INFO,
    );
    try {
      const scrape = () => metricsAddressOf(batch).then(scrapeMetrics);
      expect(
        (await scrape()).value("tandem_batch_queue_depth", { kind: "generate", state: "completed" }),
      ).toBe(0);
      const options = { redisUrl: REDIS, cluster: batchCluster };
      const id = await submitJob("generate", { model: MODEL, prompts: ["The"], maxTokens: 2 }, options);
      expect((await waitForJob("generate", id, options, 60_000)).state).toBe("completed");
      const after = await until("the job's duration to be recorded", async () => {
        const s = await scrape();
        return (
          s.value("tandem_batch_job_duration_seconds_count", { kind: "generate", outcome: "completed" }) ===
            1 && s
        );
      });
      expect(
        after.value("tandem_batch_job_duration_seconds_sum", { kind: "generate", outcome: "completed" }),
      ).toBeGreaterThan(0);
      expect(after.value("tandem_batch_queue_depth", { kind: "generate", state: "completed" })).toBe(1);
      expect(after.value("tandem_batch_queue_depth", { kind: "generate", state: "waiting" })).toBe(0);
    } finally {
      await batch.kill();
    }
  });
});

describe("metricsAddress", () => {
  it("is off by default: a program started without it serves no metrics", async () => {
    const program = await startProgram(
      "tandem-control-plane",
      { natsUrl: nats.url, cluster, replicaId: "cp-quiet", tickMs: 100, leaseTtlMs: 1000 },
      INFO,
    );
    try {
      await until("a tick's log", () => program.output().includes("running cp-quiet"));
      expect(program.output()).not.toContain("serving metrics");
    } finally {
      await program.kill();
    }
  });

  it.each(PROGRAMS)(
    "%s refuses a bad one as a setting error naming metricsAddress (exit 2)",
    async (program) => {
      const { code, stderr } = await runProgram(program, ["--metricsAddress", "9464"]);
      expect(code).toBe(2);
      expect(stderr).toContain(
        `${program}: metricsAddress: must be host:port (e.g. 0.0.0.0:9464; port 0 picks a free one), or empty for none (from the command line)`,
      );
    },
  );

  it("that is taken stops the start with one line naming it", async () => {
    const taken = await metricsAddressOf(controlPlane);
    const { code, stderr } = await runProgram("tandem-control-plane", [
      "--natsUrl",
      nats.url,
      "--cluster",
      cluster,
      "--metricsAddress",
      taken,
    ]);
    expect(code).toBe(2);
    expect(stderr).toMatch(
      new RegExp(`^tandem-control-plane: metricsAddress: cannot listen on ${taken}: .*EADDRINUSE`, "m"),
    );
  });
});

describe("the chart's Grafana dashboards", () => {
  /** Metric names a PromQL expression reads (a histogram's by its family name). */
  const metricNames = (expr: string) =>
    [...expr.matchAll(/\b(?:tandem|process|nodejs)_[a-z0-9_]+/g)].map(([name]) =>
      name.replace(/_(bucket|sum|count)$/, ""),
    );

  it("query only metrics the programs serve", async () => {
    const dir = join(ROOT, "charts", "tandem", "dashboards");
    const exprs = readdirSync(dir)
      .filter((f) => f.endsWith(".json"))
      .flatMap((f) => {
        const dashboard = JSON.parse(readFileSync(join(dir, f), "utf8")) as {
          panels: { targets?: { expr: string }[] }[];
        };
        return dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr));
      });
    expect(exprs.length).toBeGreaterThan(10);
    const served = new Set<string>();
    for (const scrape of Object.values(scrapes))
      for (const name of (await scrape()).families) served.add(name);
    // And the batch worker's.
    const batch = await startProgram(
      "tandem-batch-worker",
      { redisUrl: REDIS, cluster: batchCluster, kinds: "generate", ...METRICS },
      INFO,
    );
    try {
      for (const name of (await scrapeMetrics(await metricsAddressOf(batch))).families) served.add(name);
    } finally {
      await batch.kill();
    }
    const unknown = exprs.flatMap(metricNames).filter((name) => !served.has(name));
    expect([...new Set(unknown)]).toEqual([]);
  });
});
