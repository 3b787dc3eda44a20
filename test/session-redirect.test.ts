/**
 * An edge outside the cluster: it knows one worker's address and nothing of NATS. Three
 * workers and a control plane run at their shipped default timings; the workers redirect
 * each session to the owner the placement map names, and the edge follows. When the owner
 * dies, the edge goes back to the worker it knows, which redirects it to the new owner once
 * the map has moved, and the session replays there.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { clusterStatus, controlPlaneNames, NodeRegistry } from "@tandem/cluster";
import { wholeModelTokens, writeRandomCheckpoint } from "@tandem/runtime/testing";
import {
  generate,
  type RunningProcess,
  startNatsServer,
  startProgram,
  type TestNatsServer,
  until,
} from "@tandem/testkit";

let dir: string;
let model: string;
let nats: TestNatsServer;
let control: RunningProcess;
let edge: RunningProcess;
const workers = new Map<string, RunningProcess>();
const cluster = `redirect${process.pid}`;
const env = () => ({ TANDEM_CACHE_DIR: join(dir, "cache") });
const PROMPT = "Ask anyone; the owner answers.";
/** The worker whose address the edge is given. */
const ENTRY = "w1";

async function startWorker(id: string): Promise<void> {
  workers.set(
    id,
    await startProgram(
      "tandem-cloud-worker",
      { model, split: 2, port: 0, workerId: id, natsUrl: nats.url, cluster },
      // The entry logs each redirect (at debug), which the first test counts.
      { ...env(), TANDEM_LOG_LEVEL: id === ENTRY ? "debug" : "warn" },
    ),
  );
}

/** Waits for a placement map that gives shards to exactly `ids`. */
async function placedOn(ids: string[]): Promise<void> {
  await until(
    `a placement over ${ids.join(", ")}`,
    async () => {
      const status = await clusterStatus(nats.url, cluster, 1000);
      const placed = status.nodes.filter((n) => n.shards > 0).map((n) => n.id);
      return placed.sort().join() === [...ids].sort().join() ? true : undefined;
    },
    30_000,
    100,
  );
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "tandem-redirect-"));
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
    seed: 91,
    dtype: "F32",
    initScale: 2,
  });
  nats = await startNatsServer();
  // Shipped timings: no tick, lease, heartbeat or TTL flags.
  control = await startProgram(
    "tandem-control-plane",
    { natsUrl: nats.url, cluster, replicaId: "cp" },
    env(),
  );
  for (const id of [ENTRY, "w2", "w3"]) await startWorker(id);
  await placedOn([ENTRY, "w2", "w3"]);
  edge = await startProgram(
    "tandem-edge",
    {
      model,
      split: 2,
      exitLayers: "2",
      cloudAddress: workers.get(ENTRY)!.address,
      codec: "fp32",
      port: 0,
      // Generous, so that a slow CI machine cannot turn a late map into a fallback token:
      // `tandem bench chaos` measures the failover at the shipped deadline.
      cloudDeadlineMs: 10_000,
    },
    env(),
  );
}, 120_000);

afterAll(async () => {
  await edge?.kill();
  for (const w of workers.values()) await w.kill("SIGKILL");
  await control?.kill("SIGKILL");
  await nats?.stop();
  rmSync(dir, { recursive: true, force: true });
});

/**
 * A worker other than `entry` whose heartbeat reports a session; undefined when none does
 * within a few beats (the session is the entry's).
 */
async function busyWorkerOtherThan(entry: string): Promise<string | undefined> {
  const nc = await connect({ servers: nats.url });
  try {
    const registry = await NodeRegistry.open(nc, controlPlaneNames(cluster));
    // Heartbeats come every 500 ms, so the entry may still report the last run's session
    // while the owner has not yet reported this one: wait a few beats for another worker.
    for (let i = 0; i < 60; i++) {
      const busy = registry.alive().filter((n) => n.load.sessions > 0 && n.id !== entry);
      if (busy.length > 0) return busy[0].id;
      await new Promise((r) => setTimeout(r, 50));
    }
    return undefined;
  } finally {
    await nc.close();
  }
}

const redirectsLogged = () =>
  workers
    .get(ENTRY)!
    .output()
    .split("\n")
    .filter((line) => line.includes("session redirected to its owner")).length;

describe("an edge that knows only one worker's address", () => {
  it("reaches every session's owner through redirects, and every token is the full model's", async () => {
    const expected = await wholeModelTokens(model, PROMPT, 12, { cacheDir: join(dir, "cache", "graphs") });
    // A session is redirected unless the entry owns it (a third of them): eight sessions
    // all owned by the entry would be one run in 6,500.
    for (let run = 0; run < 8; run++) {
      const result = await generate(edge.address, { text: PROMPT, maxTokens: 12, mode: "MODE_CLOUD_ONLY" });
      expect(result.error).toBeUndefined();
      expect(result.tokens.every((t) => t.source === "TOKEN_SOURCE_CLOUD")).toBe(true);
      expect(result.tokens.map((t) => t.id)).toEqual(expected);
    }
    expect(redirectsLogged()).toBeGreaterThan(0);
  });

  it("the owner killed mid-generation: the entry leads the session to the new owner, where it replays; output unchanged, no token from the device", async () => {
    const expected = await wholeModelTokens(model, PROMPT, 40, { cacheDir: join(dir, "cache", "graphs") });
    let killed: string | undefined;
    // The entry must survive (it is the only address the edge has): a session the entry
    // owns is run again until one lands on another worker.
    for (let run = 0; run < 10 && !killed; run++) {
      // Beats (every 500 ms) old enough to show no session of the run before.
      if (run > 0) await new Promise((r) => setTimeout(r, 1200));
      const result = await generate(
        edge.address,
        { text: PROMPT, maxTokens: 40, mode: "MODE_CLOUD_ONLY" },
        async (index) => {
          if (index !== 8) return;
          edge.child.kill("SIGSTOP"); // hold the edge still while its session's owner dies
          try {
            const owner = await busyWorkerOtherThan(ENTRY);
            if (owner) {
              await workers.get(owner)!.kill("SIGKILL");
              workers.delete(owner);
              killed = owner;
            }
          } finally {
            edge.child.kill("SIGCONT");
          }
        },
      );
      expect(result.error).toBeUndefined();
      expect(result.tokens.every((t) => t.source === "TOKEN_SOURCE_CLOUD")).toBe(true);
      expect(result.tokens.map((t) => t.id)).toEqual(expected);
    }
    expect(killed).toBeDefined();
  });
});
