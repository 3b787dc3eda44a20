/**
 * The edge's cloud session when the cloud changes under it: two real workers in one
 * cluster on a real nats-server, whose placement map the test writes as a leader would;
 * and a worker that goes away and comes back at the same address.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { controlPlaneNames, openShardMap, type ShardMapRecord, type ShardMapStore } from "@tandem/cluster";
import { CLOUD_LINK_BACKOFF, ContextLostError, UnavailableError } from "@tandem/common";
import { startCloudWorker, type CloudWorker } from "@tandem/cloud-worker";
import { CloudLinks, DEFAULT_CLOUD_LINK_OPTIONS, StaticCloudRoute } from "@tandem/edge-agent";
import { type Checkpoint, GREEDY, loadCheckpoint, loadLocalSplit, splitIdentityOf } from "@tandem/runtime";
import { TINY_LLAMA, writeRandomCheckpoint } from "@tandem/runtime/testing";
import {
  caPaths,
  devicePaths,
  initCertificateAuthority,
  issueDeviceCertificate,
  issueServerCertificate,
  serverPaths,
} from "@tandem/proto/certificates";
import { freePort, startNatsServer, type TestNatsServer, until } from "@tandem/testkit";

const SPLIT = 2;
const HIDDEN = 64;
const log = pino({ level: "silent" });
let dir: string;
let checkpoint: Checkpoint;
let hidden: Float32Array; // split-layer hidden states of 8 positions
let nats: TestNatsServer;
let nc: NatsConnection;
let certs: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "tandem-failover-"));
  await writeRandomCheckpoint(join(dir, "model"), { ...TINY_LLAMA, tieWordEmbeddings: true, seed: 5 });
  checkpoint = await loadCheckpoint(join(dir, "model"));
  const local = await loadLocalSplit(checkpoint, { split: SPLIT, cacheDir: join(dir, "graphs") });
  local.lower.open("h");
  hidden = (await local.lower.forward("h", { ids: [3, 4, 5, 6, 7, 8, 9, 10] })).hidden!;
  await local.release();
  nats = await startNatsServer();
  nc = await connect({ servers: nats.url });
  certs = join(dir, "certs");
  await initCertificateAuthority(certs);
  await issueServerCertificate(certs, "worker", ["127.0.0.1"]);
  await issueDeviceCertificate(certs, "phone");
});

afterAll(async () => {
  await nc?.close();
  await nats?.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** Each worker's id, as the map names it. */
const workerIds = new Map<CloudWorker, string>();

const startWorker = async (
  workerId: string,
  options: { cluster?: string; port?: number; mutualTls?: boolean } = {},
) => {
  const worker = await startCloudWorker(
    {
      modelDir: join(dir, "model"),
      split: SPLIT,
      workerId,
      port: options.port ?? 0,
      cacheDir: join(dir, "graphs"),
      cluster: options.cluster ? { natsUrl: nats.url, name: options.cluster } : undefined,
      tls: options.mutualTls
        ? { ...serverPaths(certs, "worker"), ca: caPaths(certs).cert, crl: caPaths(certs).crl }
        : undefined,
    },
    log,
  );
  workerIds.set(worker, workerId);
  return worker;
};

function edgeLinks(
  address: string,
  deadlineMs: number = DEFAULT_CLOUD_LINK_OPTIONS.deadlineMs,
  mutualTls = false,
): CloudLinks {
  return new CloudLinks(
    {
      ...DEFAULT_CLOUD_LINK_OPTIONS,
      codec: "fp32",
      deadlineMs,
      tls: mutualTls ? { ca: caPaths(certs).cert, ...devicePaths(certs, "phone") } : undefined,
      backoff: { ...CLOUD_LINK_BACKOFF, initialDelayMs: 50, maxDelayMs: 100 },
    },
    { modelId: "m", ...splitIdentityOf(checkpoint, SPLIT) },
    new StaticCloudRoute(address),
  );
}

const frame = (start: number, count: number) => ({
  start,
  count,
  hidden: hidden.subarray(start * HIDDEN, (start + count) * HIDDEN),
  wantToken: true,
  sampling: GREEDY,
});

/** Every shard to `owner`, as the leader would write it. */
async function placeAllOn(
  store: ShardMapStore,
  version: number,
  owner: CloudWorker,
  workers: CloudWorker[],
  revision: number | undefined,
): Promise<number> {
  const shardCount = 8;
  const ownerId = (w: CloudWorker) => workerIds.get(w)!;
  const record: ShardMapRecord = {
    version,
    fencingToken: 0,
    epoch: "test",
    shardCount,
    shards: Object.fromEntries(
      Array.from({ length: shardCount }, (_, shard) => [String(shard), ownerId(owner)]),
    ),
    endpoints: Object.fromEntries(workers.map((w) => [ownerId(w), w.server.address])),
    writtenAt: Date.now(),
  };
  const written = await store.write(record, revision);
  if (written === undefined) throw new Error("the map moved under the test");
  // Both workers have taken the map once each names the owner for a session.
  for (const worker of workers)
    await until(
      `${ownerId(worker)} to take map ${version}`,
      async () => {
        const elsewhere = worker.membership!.elsewhere("any");
        const taken = worker === owner ? elsewhere === undefined : elsewhere?.workerId === ownerId(owner);
        return taken || undefined;
      },
      10_000,
      10,
    );
  return written;
}

describe.each([
  { link: "plaintext", mutualTls: false, key: "moving-session" },
  // The device proves itself to the new owner too: its session lives in its namespace there.
  { link: "mutual TLS", mutualTls: true, key: "phone/moving-session" },
])("a session the placement map moves while its stream is open ($link)", ({ mutualTls, key }) => {
  it("is redirected at its next frame to the new owner, replays there, and the old owner applies nothing of it", async () => {
    const cluster = `moves${process.pid}${mutualTls ? "tls" : ""}`;
    const a = await startWorker("a", { cluster, mutualTls });
    const b = await startWorker("b", { cluster, mutualTls });
    const store = await openShardMap(nc, controlPlaneNames(cluster));
    const links = edgeLinks(a.server.address, DEFAULT_CLOUD_LINK_OPTIONS.deadlineMs, mutualTls);
    const session = links.session("moving-session");
    let last: number | undefined;
    try {
      const first = await placeAllOn(store, 1, a, [a, b], undefined);
      last = first;
      expect(await session.extend(frame(0, 4))).toBeDefined();
      expect(a.contexts.contextLength(key)).toBe(4);

      last = await placeAllOn(store, 2, b, [a, b], first);
      // The open stream to a gets SessionMoved instead of an answer; b holds nothing yet.
      const moved = session.extend(frame(4, 2));
      await expect(moved).rejects.toBeInstanceOf(ContextLostError);
      await expect(moved).rejects.toMatchObject({ resumeFrom: 0 });
      // The generator replays from 0, now at b.
      expect(await session.extend(frame(0, 6))).toBeDefined();
      expect(b.contexts.contextLength(key)).toBe(6);
      expect(a.contexts.sessionIds()).not.toContain(key);
      expect(a.counters.redirected).toBe(1);
      expect(a.counters.positions).toBe(4);
    } finally {
      await session.close();
      await links.close();
      // A map that gives neither worker a shard: their close need not wait for a leader to drain them.
      const current = await store.read();
      if (current && last !== undefined)
        await store.write({ ...current.record, version: current.record.version + 1, shards: {} }, last);
      await a.close(100);
      await b.close(100);
    }
  });
});

describe("the address a worker advertises", () => {
  it("must be one an edge can dial (host:port): a worker refuses to join with another, naming advertise", async () => {
    const joining = startCloudWorker(
      {
        modelDir: join(dir, "model"),
        split: SPLIT,
        workerId: "bad-address",
        port: 0,
        cacheDir: join(dir, "graphs"),
        cluster: { natsUrl: nats.url, name: `advertise${process.pid}`, advertise: "$(POD_IP):50052" },
      },
      log,
    );
    await expect(joining).rejects.toThrow(/^advertise: edges are sent to this worker at host:port/);
  });
});

describe("an owner that dies while the worker the edge knows still names it", () => {
  it("is waited for, redirect after redirect, until the map moves the session: then it replays at the new owner", async () => {
    const cluster = `dies${process.pid}`;
    const entry = await startWorker("entry", { cluster });
    const owner = await startWorker("owner", { cluster });
    const store = await openShardMap(nc, controlPlaneNames(cluster));
    const links = edgeLinks(entry.server.address);
    const session = links.session("orphan");
    try {
      const first = await placeAllOn(store, 1, owner, [entry, owner], undefined);
      expect(await session.extend(frame(0, 4))).toBeDefined();
      expect(owner.contexts.contextLength("orphan")).toBe(4);
      // The owner's server goes away at once; the map still names it for a second, so the
      // entry keeps sending the edge there (many more redirects than MAX_REDIRECTS).
      owner.server.server.forceShutdown();
      // The expectation is attached at once: the frame may fail while the map is being moved.
      const extended = expect(session.extend(frame(4, 2))).rejects.toMatchObject({ resumeFrom: 0 });
      await new Promise((resolve) => setTimeout(resolve, 1000));
      await placeAllOn(store, 2, entry, [entry, owner], first);
      await extended;
      expect(await session.extend(frame(0, 6))).toBeDefined();
      expect(entry.contexts.contextLength("orphan")).toBe(6);
    } finally {
      await session.close();
      await links.close();
      const current = await store.read();
      if (current)
        await store.write(
          { ...current.record, version: current.record.version + 1, shards: {} },
          current.revision,
        );
      await entry.close(100);
      await owner.close(100).catch(() => undefined);
    }
  });
});

describe("a cloud that is unreachable", () => {
  it("costs a session one deadline: later frames fail at once while a background probe waits for the worker, which then serves again", async () => {
    const port = await freePort();
    const links = edgeLinks(`127.0.0.1:${port}`, 500);
    const session = links.session("outage");
    let worker: CloudWorker | undefined;
    try {
      // Nothing listens: the frame waits out its deadline for a worker, then fails.
      await expect(session.extend(frame(0, 2))).rejects.toBeInstanceOf(UnavailableError);
      // The outage is known: the next frame is not made to wait again.
      await expect(session.extend(frame(0, 3))).rejects.toThrow(
        /has not answered for \d+ ms; answering on the device/,
      );
      worker = await startWorker("back", { port });
      // The probe reopens the session in the background; then frames reach the worker again.
      const answer = await until(
        "the cloud to answer again",
        async () => session.extend(frame(0, 4)).catch(() => undefined),
        10_000,
        100,
      );
      expect(answer).toBeDefined();
      expect(worker.contexts.contextLength("outage")).toBe(4);
    } finally {
      await session.close();
      await links.close();
      await worker?.close(100);
    }
  });
});
