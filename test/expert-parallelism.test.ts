/**
 * Expert parallelism on real processes: three cloud workers with expertParallel hold the
 * MoE experts an expert map splits among them, and the worker serving a session calls the
 * others for the experts it does not hold (tandem.v1.Experts/Run, fp32). Generations
 * through an edge agent equal those of a single worker holding every expert, with a host
 * killed mid-generation and with the map changed mid-generation; each worker reports (and
 * its memory shows) what it holds.
 */
import { readFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { clusterStatus, controlPlaneNames, type ExpertMapRecord, openExpertMap } from "@tandem/cluster";
import { DEFAULT_EXPERT_PARALLELISM_OPTIONS } from "@tandem/cloud-worker";
import * as grpc from "@grpc/grpc-js";
import { loadTandemProtos } from "@tandem/proto";
import { FREED_MEMORY_ENV, loadCheckpoint } from "@tandem/runtime";
import { writeRandomCheckpoint } from "@tandem/runtime/testing";
import {
  generate,
  type GenerateResult,
  type RunningProcess,
  startNatsServer,
  startProgram,
  type TestNatsServer,
  until,
} from "@tandem/testkit";

const SPLIT = 2;
const LAYERS = 4;
const EXPERTS = 4;
/** Expert-map ids of the workers' layers [SPLIT, LAYERS): (layer − split)·experts + expert. */
const MAP_IDS = (LAYERS - SPLIT) * EXPERTS;
const WORKERS = ["ep-a", "ep-b", "ep-c"] as const;
const PROMPT = { tokenIds: { ids: [5, 17, 42, 99, 3, 120, 7, 64] } };

let dir: string;
let model: string;
let nats: TestNatsServer;
let nc: NatsConnection;
const cluster = `ep${Date.now()}`;
const processes = new Map<string, RunningProcess>();
/** Each worker's Experts service, as its node record gives it (a port of its own). */
const expertEndpoints = new Map<string, string>();
let reference: RunningProcess;
let referenceEdge: RunningProcess;
let edge: RunningProcess;
let mapVersion = 0;
let mapRevision: number | undefined;

// What the chart sets on expertParallel workers (FREED_MEMORY_ENV): a dropped expert's
// memory goes back to the system.
const env = () => ({ TANDEM_CACHE_DIR: join(dir, "cache"), [FREED_MEMORY_ENV.name]: FREED_MEMORY_ENV.value });

function startWorker(workerId: string): Promise<RunningProcess> {
  return startProgram(
    "tandem-cloud-worker",
    {
      model,
      split: SPLIT,
      port: 0,
      workerId,
      natsUrl: nats.url,
      cluster,
      heartbeatMs: 200,
      expertParallel: "true",
      expertPort: 0,
      expertDeadlineMs: 1000,
      expertHandoverMs: 300,
    },
    env(),
  );
}

/** Writes the next expert map: expert-map id → the workers holding it. */
async function publishMap(holders: (id: number) => string[]): Promise<void> {
  const store = await openExpertMap(nc, controlPlaneNames(cluster));
  const experts: Record<string, string[]> = {};
  for (let id = 0; id < MAP_IDS; id++) experts[String(id)] = holders(id);
  const record: ExpertMapRecord = {
    version: ++mapVersion,
    fencingToken: 0,
    epoch: "",
    experts,
    endpoints: Object.fromEntries(expertEndpoints),
    loads: new Array<number>(MAP_IDS).fill(1),
    maxMeanLoad: 1,
    writtenAt: Date.now(),
  };
  mapRevision = await store.write(record, mapRevision);
  expect(mapRevision).toBeDefined();
}

/** Until `tandem status` shows every worker on the latest map, holding what `held` says. */
async function untilHeld(held: Record<string, number>): Promise<void> {
  await until(
    "workers to take up the expert map",
    async () => {
      const status = await clusterStatus(nats.url, cluster, 1000);
      return Object.entries(held).every(([id, count]) => {
        const node = status.nodes.find((n) => n.id === id);
        return node?.expertMapVersion === mapVersion && node.expertsHeld === count;
      })
        ? true
        : undefined;
    },
    20_000,
  );
}

function rssBytes(process: RunningProcess): number {
  const status = readFileSync(`/proc/${process.child.pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) * 1024;
}

const REQUEST = {
  ...PROMPT,
  maxTokens: 24,
  mode: "MODE_CLOUD_ONLY" as const,
  logprobs: true,
  topLogprobs: 5,
};

function expectSameGeneration(actual: GenerateResult, expected: GenerateResult): void {
  expect(actual.error).toBeUndefined();
  expect(actual.tokens.map((t) => t.id)).toEqual(expected.tokens.map((t) => t.id));
  actual.tokens.forEach((token, i) => {
    const want = expected.tokens[i].logprobs!;
    expect(Math.abs(token.logprobs!.logprob - want.logprob)).toBeLessThanOrEqual(1e-4);
    token.logprobs!.top.forEach((alt, j) => {
      expect(alt.id).toBe(want.top[j].id);
      expect(Math.abs(alt.logprob - want.top[j].logprob)).toBeLessThanOrEqual(1e-4);
    });
  });
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "tandem-ep-"));
  model = join(dir, "model");
  // Experts of 3 × 256 × 1024 fp32 weights, 3 MB each: big enough to see in a process's memory.
  await writeRandomCheckpoint(model, {
    architecture: "mixtral",
    vocabSize: 512,
    hiddenSize: 256,
    intermediateSize: 1024,
    numLayers: LAYERS,
    numHeads: 8,
    numKvHeads: 4,
    numExperts: EXPERTS,
    numExpertsPerToken: 2,
    tieWordEmbeddings: true,
    seed: 31,
    dtype: "F32",
    initScale: 2,
    maxPositions: 256,
  });
  nats = await startNatsServer();
  nc = await connect({ servers: nats.url });
  // The single-process reference: one worker with every expert in its graph.
  reference = await startProgram(
    "tandem-cloud-worker",
    { model, split: SPLIT, port: 0, workerId: "ref" },
    env(),
  );
  referenceEdge = await startProgram(
    "tandem-edge",
    {
      model,
      split: SPLIT,
      exitLayers: String(SPLIT),
      cloudAddress: reference.address,
      codec: "fp32",
      port: 0,
    },
    env(),
  );
  for (const id of WORKERS) processes.set(id, await startWorker(id));
  await until("the workers' node records", async () => {
    const status = await clusterStatus(nats.url, cluster, 1000);
    for (const node of status.nodes)
      if (node.expertEndpoint) expertEndpoints.set(node.id, node.expertEndpoint);
    return expertEndpoints.size === WORKERS.length ? true : undefined;
  });
  // Sessions go to ep-a (no shard map: a worker serves every session it is sent).
  edge = await startProgram(
    "tandem-edge",
    {
      model,
      split: SPLIT,
      exitLayers: String(SPLIT),
      cloudAddress: processes.get("ep-a")!.address,
      codec: "fp32",
      port: 0,
      cloudDeadlineMs: 10_000,
    },
    env(),
  );
}, 120_000);

afterAll(async () => {
  for (const p of [edge, referenceEdge, reference, ...processes.values()]) await p?.kill();
  await nc?.close();
  await nats?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe("expert parallelism across three workers", () => {
  it("splits the experts by the map: each worker holds only its own, and generation equals the single-process model's", async () => {
    const expected = await generate(referenceEdge.address, REQUEST);
    expect(expected.error).toBeUndefined();
    // ep-a holds none (it runs attention and routers), ep-b and ep-c half each.
    await publishMap((id) => [id % 2 === 0 ? "ep-b" : "ep-c"]);
    await untilHeld({ "ep-a": 0, "ep-b": MAP_IDS / 2, "ep-c": MAP_IDS / 2 });
    expectSameGeneration(await generate(edge.address, REQUEST), expected);
    // ep-a loaded nothing to answer it: every expert ran on b or c.
    const status = await clusterStatus(nats.url, cluster, 1000);
    expect(status.nodes.find((n) => n.id === "ep-a")?.expertsHeld).toBe(0);
  });

  it("refuses a bad expert call with the field it names, an expert it does not hold with FAILED_PRECONDITION, and any on the devices' port", async () => {
    const Experts = loadTandemProtos().tandem.v1.Experts;
    const client = new Experts(expertEndpoints.get("ep-c")!, grpc.credentials.createInsecure());
    const call = (request: Record<string, unknown>, to = client) =>
      new Promise<grpc.ServiceError | undefined>((resolve) =>
        to.Run(request, (error) => resolve(error ?? undefined)),
      );
    const hidden = 256;
    const good = {
      weightsHash: (await loadCheckpoint(model)).weightsHash,
      layer: SPLIT,
      expert: 1, // odd: ep-c's under the current map
      rows: 2,
      hiddenSize: hidden,
      codec: "HIDDEN_STATE_CODEC_FP32",
      payload: Buffer.alloc(2 * hidden * 4),
    };
    expect(await call(good)).toBeUndefined();
    const refused: [Record<string, unknown>, grpc.status, RegExp][] = [
      [{ ...good, weightsHash: "0".repeat(64) }, grpc.status.FAILED_PRECONDITION, /weights_hash/],
      [{ ...good, layer: 0 }, grpc.status.INVALID_ARGUMENT, /layer: must be in \[2, 4\)/],
      [{ ...good, expert: EXPERTS }, grpc.status.INVALID_ARGUMENT, /expert/],
      [{ ...good, rows: 0 }, grpc.status.INVALID_ARGUMENT, /rows/],
      [{ ...good, hiddenSize: 128 }, grpc.status.INVALID_ARGUMENT, /hidden_size/],
      [{ ...good, codec: "HIDDEN_STATE_CODEC_UNSPECIFIED" }, grpc.status.INVALID_ARGUMENT, /codec/],
      [{ ...good, payload: Buffer.alloc(7) }, grpc.status.INVALID_ARGUMENT, /payload/],
      [
        { ...good, payload: Buffer.from(new Float32Array(2 * hidden).fill(Number.NaN).buffer) },
        grpc.status.INVALID_ARGUMENT,
        /payload holds a non-finite value/,
      ],
      // Even experts are ep-b's.
      [{ ...good, expert: 0 }, grpc.status.FAILED_PRECONDITION, /expert: expert 0 of layer 2 is not held/],
    ];
    for (const [request, code, details] of refused) {
      const error = await call(request);
      expect(error?.code, JSON.stringify(request).slice(0, 120)).toBe(code);
      expect(error?.details).toMatch(details);
    }
    // The worker serves on, unharmed.
    expect(await call(good)).toBeUndefined();
    client.close();
    // The port devices reach has no Experts service.
    const publicPort = new Experts(processes.get("ep-c")!.address, grpc.credentials.createInsecure());
    expect((await call(good, publicPort))?.code).toBe(grpc.status.UNIMPLEMENTED);
    publicPort.close();
  });

  it("moves experts mid-generation: the same output, and memory follows the new assignment", async () => {
    const expected = await generate(referenceEdge.address, REQUEST);
    const before = { b: rssBytes(processes.get("ep-b")!), c: rssBytes(processes.get("ep-c")!) };
    let moved = false;
    const result = await generate(edge.address, REQUEST, async () => {
      if (moved) return;
      moved = true;
      // Everything ep-b held goes to ep-c.
      await publishMap(() => ["ep-c"]);
    });
    expectSameGeneration(result, expected);
    await untilHeld({ "ep-a": 0, "ep-b": 0, "ep-c": MAP_IDS });
    const expertBytes = 3 * 256 * 1024 * 4;
    const after = { b: rssBytes(processes.get("ep-b")!), c: rssBytes(processes.get("ep-c")!) };
    // ep-b freed its 8 experts (24 MB of weights); ep-c loaded them. Measured on
    // 2026-12-04: ep-b's RSS fell by 12.2 MB with FREED_MEMORY_ENV (at 128 KB and at
    // 512 KB alike) and by −0.2 MB without it, ep-c's grew by 13.0–13.5 MB: a quarter of
    // the weights tells freed from kept, loaded from not, with room for the noise.
    expect(before.b - after.b).toBeGreaterThan((MAP_IDS / 2) * expertBytes * 0.25);
    expect(after.c - before.c).toBeGreaterThan((MAP_IDS / 2) * expertBytes * 0.25);
  });

  it("loses an expert host mid-generation: its experts go to their other replica, or run where the session is; the output is the same", async () => {
    const expected = await generate(referenceEdge.address, REQUEST);
    // Even experts on b and c, odd ones on b alone.
    await publishMap((id) => (id % 2 === 0 ? ["ep-b", "ep-c"] : ["ep-b"]));
    await untilHeld({ "ep-b": MAP_IDS, "ep-c": MAP_IDS / 2 });
    let killed = false;
    const result = await generate(edge.address, REQUEST, async (index) => {
      if (killed || index < 4) return;
      killed = true;
      await processes.get("ep-b")!.kill("SIGKILL");
    });
    expect(killed).toBe(true);
    expectSameGeneration(result, expected);
    // ep-a took up the odd experts itself (no replica left).
    await until(
      "ep-a to report the experts it loaded",
      async () => {
        const status = await clusterStatus(nats.url, cluster, 1000);
        const held = status.nodes.find((n) => n.id === "ep-a")?.expertsHeld ?? 0;
        return held > 0 ? true : undefined;
      },
      10_000,
    );
  });

  it("treats a broken expert host's answers — non-finite, the wrong size, none at all — as that replica failing; the output is the same", async () => {
    const expected = await generate(referenceEdge.address, REQUEST);
    // A peer that answers every call, badly: its node id sorts first, so it is tried first.
    let mode: "nan" | "short" | "silent" = "nan";
    let calls = 0;
    const server = new grpc.Server();
    server.addService(loadTandemProtos().tandem.v1.Experts.service, {
      Run(
        call: grpc.ServerUnaryCall<{ rows: number; hiddenSize: number }, unknown>,
        reply: grpc.sendUnaryData<unknown>,
      ) {
        calls++;
        const values = call.request.rows * call.request.hiddenSize;
        if (mode === "silent") return; // past the caller's deadline
        const payload =
          mode === "nan"
            ? Buffer.from(new Float32Array(values).fill(Number.NaN).buffer)
            : Buffer.alloc(values * 4 - 4);
        reply(null, { payload, workerId: "ep-0broken" });
      },
    });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, bound) =>
        error ? reject(error) : resolve(bound),
      ),
    );
    try {
      expertEndpoints.set("ep-0broken", `127.0.0.1:${port}`);
      // Even experts on the broken peer and ep-c, odd ones on the broken peer alone (ep-b is
      // gone since the last test): the session's worker must get every answer elsewhere.
      await publishMap((id) => (id % 2 === 0 ? ["ep-0broken", "ep-c"] : ["ep-0broken"]));
      await untilHeld({ "ep-c": MAP_IDS / 2 });
      for (const next of ["nan", "short", "silent"] as const) {
        mode = next;
        // A replica that failed is skipped for DEFAULT_EXPERT_PARALLELISM_OPTIONS.retryAfterMs.
        await new Promise((resolve) =>
          setTimeout(resolve, DEFAULT_EXPERT_PARALLELISM_OPTIONS.retryAfterMs + 100),
        );
        const before = calls;
        expectSameGeneration(await generate(edge.address, REQUEST), expected);
        expect(calls, `the broken peer was called (${next})`).toBeGreaterThan(before);
      }
    } finally {
      expertEndpoints.delete("ep-0broken");
      server.forceShutdown();
    }
  }, 60_000);
});
