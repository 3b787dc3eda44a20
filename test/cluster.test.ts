/**
 * A cluster on its own nats-server: a control-plane replica, two cloud workers and an
 * edge agent, all real processes. The worker that holds a session's KV dies (or drains)
 * mid-generation; the leader moves its shards, the edge follows the map to the new
 * owner and replays the context, and the output is what an uninterrupted run gives.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { clusterStatus, controlPlaneNames, type ExpertLoadReport, NodeRegistry } from "@tandem/cluster";
import { wholeModelTokens, writeRandomCheckpoint } from "@tandem/runtime/testing";
import {
  generate,
  type RunningProcess,
  startNatsServer,
  startProgram,
  type TestNatsServer,
} from "@tandem/testkit";

let dir: string;
let model: string;
let nats: TestNatsServer;
const controls = new Map<string, RunningProcess>();
let edge: RunningProcess;
const workers = new Map<string, RunningProcess>();
const cluster = `c${process.pid}`;
const env = () => ({ TANDEM_CACHE_DIR: join(dir, "cache") });
const PROMPT = "Workers come and go; sessions stay.";

async function startWorker(id: string): Promise<void> {
  workers.set(
    id,
    await startProgram(
      "tandem-cloud-worker",
      { model, split: 2, port: 0, workerId: id, natsUrl: nats.url, cluster, heartbeatMs: 200 },
      env(),
    ),
  );
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "tandem-cluster-"));
  model = join(dir, "model");
  await writeRandomCheckpoint(model, {
    architecture: "llama",
    vocabSize: 300,
    hiddenSize: 64,
    intermediateSize: 128,
    numLayers: 4,
    numHeads: 4,
    numKvHeads: 2,
    tieWordEmbeddings: true,
    seed: 77,
    dtype: "F32",
    initScale: 2,
  });
  nats = await startNatsServer();
  for (const replicaId of ["cp1", "cp2"]) {
    const flags = {
      natsUrl: nats.url,
      cluster,
      replicaId,
      tickMs: 100,
      leaseTtlMs: 1000,
      heartbeatTtlMs: 1000,
      shardCount: 256,
    };
    controls.set(replicaId, await startProgram("tandem-control-plane", flags, env()));
  }
  await startWorker("w1");
  await startWorker("w2");
  edge = await startProgram(
    "tandem-edge",
    {
      model,
      split: 2,
      exitLayers: "2",
      natsUrl: nats.url,
      cluster,
      codec: "fp32",
      port: 0,
      cloudDeadlineMs: 8000,
    },
    env(),
  );
});

afterAll(async () => {
  await edge?.kill();
  for (const w of workers.values()) await w.kill("SIGKILL");
  for (const c of controls.values()) await c.kill("SIGKILL");
  await nats?.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** The worker currently holding a session (by its heartbeat's session count). */
async function busyWorker(): Promise<string> {
  const nc = await connect({ servers: nats.url });
  try {
    const registry = await NodeRegistry.open(nc, controlPlaneNames(cluster), { heartbeatTtlMs: 1000 });
    for (let i = 0; i < 100; i++) {
      const busy = registry.alive().find((n) => n.load.sessions > 0);
      if (busy) return busy.id;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error("no worker reports a session");
  } finally {
    await nc.close();
  }
}

async function generateWhile(action: () => Promise<void>, maxTokens: number) {
  let acted = false;
  return generate(edge.address, { text: PROMPT, maxTokens, mode: "MODE_CLOUD_ONLY" }, async (index) => {
    if (index === 8 && !acted) {
      acted = true;
      edge.child.kill("SIGSTOP"); // hold the edge still while the cluster changes under it
      try {
        await action();
      } finally {
        edge.child.kill("SIGCONT");
      }
    }
  });
}

describe("a cluster of cloud workers under a control plane", () => {
  it("a worker killed mid-generation: the session continues on the new owner, output identical to an uninterrupted run", async () => {
    const expected = await wholeModelTokens(model, PROMPT, 40, { cacheDir: join(dir, "cache", "graphs") });
    // Wait for a placement with both workers before starting.
    await new Promise((r) => setTimeout(r, 1500));
    const result = await generateWhile(async () => {
      const victim = await busyWorker();
      await workers.get(victim)!.kill("SIGKILL");
      workers.delete(victim);
    }, 40);
    expect(result.error).toBeUndefined();
    expect(result.tokens.map((t) => t.source).every((s) => s === "TOKEN_SOURCE_CLOUD")).toBe(true);
    expect(result.tokens.map((t) => t.id)).toEqual(expected);
  });

  it("a drained worker hands its sessions over before it stops, without losing any context", async () => {
    await startWorker("w3");
    await new Promise((r) => setTimeout(r, 1500));
    const expected = await wholeModelTokens(model, PROMPT, 40, { cacheDir: join(dir, "cache", "graphs") });
    const result = await generateWhile(async () => {
      const victim = await busyWorker();
      await workers.get(victim)!.kill("SIGTERM"); // planned removal: drains, then exits
      workers.delete(victim);
    }, 40);
    expect(result.error).toBeUndefined();
    expect(result.tokens.map((t) => t.source).every((s) => s === "TOKEN_SOURCE_CLOUD")).toBe(true);
    expect(result.tokens.map((t) => t.id)).toEqual(expected);
  });

  it("a killed leader process is replaced within seconds and the placement version sequence goes on", async () => {
    const before = await clusterStatus(nats.url, cluster, 1000);
    const leader = before.leader!.holder;
    await controls.get(leader)!.kill("SIGKILL");
    controls.delete(leader);
    const killedAt = Date.now();
    let after = await clusterStatus(nats.url, cluster, 1000);
    while (!after.leader || after.leader.holder === leader) {
      expect(Date.now() - killedAt).toBeLessThan(5000);
      await new Promise((r) => setTimeout(r, 100));
      after = await clusterStatus(nats.url, cluster, 1000);
    }
    await startWorker("w9");
    let placed = await clusterStatus(nats.url, cluster, 1000);
    while (!placed.nodes.some((n) => n.id === "w9" && n.shards > 0)) {
      await new Promise((r) => setTimeout(r, 100));
      placed = await clusterStatus(nats.url, cluster, 1000);
    }
    expect(placed.placement!.version).toBe(before.placement!.version + 1);
  });

  it("workers publish their load on their NATS subjects", async () => {
    const nc = await connect({ servers: nats.url });
    try {
      const names = controlPlaneNames(cluster);
      const subscription = nc.subscribe(names.loadSubject("*"), { max: 4 });
      const reports: ExpertLoadReport[] = [];
      for await (const message of subscription) reports.push(message.json<ExpertLoadReport>());
      expect(
        reports.every(
          (r) => workers.has(r.nodeId) && typeof r.sessions === "number" && Array.isArray(r.counts),
        ),
      ).toBe(true);
    } finally {
      await nc.close();
    }
  });

  it("tandem status shows the leader, the placement version and the shards per alive worker", async () => {
    const status = await clusterStatus(nats.url, cluster, 1000);
    expect(status.leader?.holder).toBeDefined();
    expect(status.placement!.version).toBeGreaterThanOrEqual(3);
    const alive = status.nodes.filter((n) => n.alive);
    expect(alive.map((n) => n.id).sort()).toEqual([...workers.keys()].sort());
    expect(alive.reduce((sum, n) => sum + n.shards, 0)).toBe(256);
    expect(status.placement!.maxOverMeanShards).toBeLessThan(1.1);
  });
});
