/**
 * The control plane on a real nats-server of the test's own: leader election with a
 * lease, placement versions, a dead worker's shards moving, a crashed leader replaced,
 * and a NATS restart survived.
 */
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  clusterStatus,
  connectNats,
  controlPlaneNames,
  type ExpertLoadReport,
  expertsOf,
  type NodeRecord,
  NodeRecordWriter,
  MAX_CLOCK_SKEW_MS,
  NodeRegistry,
  ownerOf,
  openExpertMap,
  openLease,
  openShardMap,
  watchVersioned,
  type ShardMapRecord,
  VersionedMapView,
} from "@tandem/cluster";
import { Controller, ExpertPlanner, ShardPlanner } from "@tandem/control-plane";
import { CLUSTER_DEFAULTS } from "@tandem/common";
import {
  healthStatus,
  nodeRecord,
  runCli,
  startNatsServer,
  type TestNatsServer,
  until,
} from "@tandem/testkit";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { loadCheckpoint, SegmentModel, SegmentSessions, segmentSpec, Tokenizer } from "@tandem/runtime";
import { startCloudWorker } from "@tandem/cloud-worker";

const log = pino({ level: "silent" });
let server: TestNatsServer;
const connections: NatsConnection[] = [];
const open = async () => {
  const nc = await connect({ servers: server.url, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
  connections.push(nc);
  return nc;
};

beforeAll(async () => {
  server = await startNatsServer();
});
afterAll(async () => {
  for (const nc of connections) await nc.close().catch(() => undefined);
  await server.stop();
});

const worker = (id: string): Omit<NodeRecord, "heartbeatAt"> => nodeRecord(id, { expertSlots: 8 });

describe("control plane on NATS", () => {
  it("elects one leader, places shards on alive workers, and moves only a dead worker's shards", async () => {
    const cluster = `t${Date.now()}`;
    const names = controlPlaneNames(cluster);
    // Heartbeats every 200 ms; a 3 s TTL keeps a busy test machine from declaring a live worker dead.
    const options = { cluster, tickMs: 100, leaseTtlMs: 1000, heartbeatTtlMs: 3000, shardCount: 256 };
    const a = await Controller.start(await open(), { ...options, replicaId: "cp-a" }, log);
    const bConnection = await open();
    const b = await Controller.start(bConnection, { ...options, replicaId: "cp-b" }, log);
    let doubleLeader = false;
    const watchdog = setInterval(() => {
      if (a.lease.isLeader() && b.lease.isLeader()) doubleLeader = true;
    }, 10);

    const workers = await NodeRecordWriter.open(await open(), names, { heartbeatTtlMs: 3000 });
    const alive = new Set(["w1", "w2", "w3"]);
    const beat = setInterval(() => {
      for (const id of alive) void workers.heartbeat(worker(id));
    }, 200);
    const store = await openShardMap(await open(), names);
    const seen: ShardMapRecord[] = [];
    const watch = await watchVersioned(store, (m) => seen.push(m));
    try {
      const first = await until("a map with three workers", () =>
        seen.find((m) => Object.keys(m.endpoints).length === 3),
      );
      expect(new Set(Object.values(first.shards))).toEqual(new Set(["w1", "w2", "w3"]));
      const owner = ownerOf(first, "session-42")!;
      expect(["w1", "w2", "w3"]).toContain(owner.nodeId);
      expect(owner.endpoint).toMatch(/^127\.0\.0\.1:500\d$/);

      // w2 stops heartbeating: its shards, and only those, move.
      alive.delete("w2");
      const second = await until("a map without w2", () =>
        seen.find((m) => m.version > first.version && !Object.values(m.shards).includes("w2")),
      );
      const before = seen[seen.indexOf(second) - 1];
      expect(Object.values(before.shards)).toContain("w2");
      const moved = Object.keys(before.shards).filter((s) => before.shards[s] !== second.shards[s]);
      expect(moved.every((s) => before.shards[s] === "w2")).toBe(true);
      expect(moved.length).toBe(Object.values(before.shards).filter((n) => n === "w2").length);

      // The leader crashes (its connection drops without releasing the lease).
      const leader = a.lease.isLeader() ? a : b;
      const follower = leader === a ? b : a;
      await leader.stop().catch(() => undefined);
      if (leader === b) await bConnection.close();
      else await connections[0].close();
      const tookOver = Date.now();
      await until("the other replica leading", () => follower.lease.isLeader());
      expect(Date.now() - tookOver).toBeLessThan(5000);

      // The new leader continues the version sequence when membership changes again.
      alive.add("w4");
      const third = await until("a map with w4", () =>
        seen.find((m) => Object.keys(m.endpoints).includes("w4")),
      );
      expect(third.version).toBe(second.version + 1);
      expect(third.fencingToken).toBeGreaterThan(second.fencingToken);
      expect(doubleLeader).toBe(false);
      // Every write to the key, as stored (not as a watcher filters them): one version after another.
      const versions: number[] = [];
      for await (const entry of await store.kv.history({ key: store.key }))
        if (entry.operation === "PUT") versions.push(entry.json<ShardMapRecord>().version);
      expect(versions.length).toBeGreaterThanOrEqual(3);
      expect(versions).toEqual(versions.map((_, i) => versions[0] + i));
    } finally {
      clearInterval(watchdog);
      clearInterval(beat);
      watch.stop();
      await a.stop();
      await b.stop();
    }
  });

  it("keeps working across a NATS server restart", async () => {
    const cluster = `r${Date.now()}`;
    const names = controlPlaneNames(cluster);
    const options = { cluster, tickMs: 100, leaseTtlMs: 1000, heartbeatTtlMs: 1500, shardCount: 64 };
    const controller = await Controller.start(await open(), { ...options, replicaId: "cp" }, log);
    const workers = await NodeRecordWriter.open(await open(), names, { heartbeatTtlMs: 1500 });
    const alive = new Set(["w1"]);
    const beat = setInterval(() => {
      for (const id of alive) void workers.heartbeat(worker(id)).catch(() => undefined);
    }, 200);
    const store = await openShardMap(await open(), names);
    try {
      await until("a first map", async () => (await store.read())?.record);
      await server.restart();
      alive.add("w2");
      const after = await until("a map with w2 after the restart", async () => {
        const current = await store.read().catch(() => undefined);
        return current && Object.keys(current.record.endpoints).includes("w2") ? current.record : undefined;
      });
      expect(after.version).toBeGreaterThanOrEqual(2);
    } finally {
      clearInterval(beat);
      await controller.stop();
    }
  });
});

describe("NATS restarted on an empty store (its disk lost)", () => {
  it("the cluster reconverges: buckets re-created, the leader leads again, and a map follower that watched before the loss takes the new maps", async () => {
    const lostServer = await startNatsServer();
    const connect = async () => {
      const nc = await connectNats(lostServer.url);
      connections.push(nc);
      return nc;
    };
    const cluster = `e${Date.now()}`;
    const names = controlPlaneNames(cluster);
    const options = { cluster, tickMs: 100, leaseTtlMs: 1000, heartbeatTtlMs: 1500, shardCount: 64 };
    const controller = await Controller.start(await connect(), { ...options, replicaId: "cp" }, log);
    const workers = await NodeRecordWriter.open(await connect(), names, { heartbeatTtlMs: 1500 });
    const alive = new Set(["w1"]);
    const beat = setInterval(() => {
      for (const id of alive) void workers.heartbeat(worker(id)).catch(() => undefined);
    }, 200);
    const follower = await VersionedMapView.follow(await openShardMap(await connect(), names));
    try {
      const before = await until("a first map", () => follower.current);
      // A few versions, so that the new history's versions start below the old one's
      // (even if, while the store comes back, the new history places w1 and w3 apart).
      let last = before;
      for (let round = 0; round < 3; round++) {
        alive.add("w2");
        await until("a map with w2", () => (follower.current?.endpoints.w2 ? follower.current : undefined));
        alive.delete("w2");
        last = await until("a map without w2", () =>
          follower.current && !follower.current.endpoints.w2 ? follower.current : undefined,
        );
      }
      expect(last.version).toBeGreaterThan(before.version);

      await lostServer.restart({ emptyStore: true });
      alive.add("w3");
      // The follower takes maps of the new epoch although their versions and fencing
      // tokens start again from 1.
      const after = await until(
        "the follower to take a map with w1 and w3",
        () =>
          follower.current?.endpoints.w1 && follower.current.endpoints.w3 ? follower.current : undefined,
        45_000,
      );
      expect(after.epoch).not.toBe(last.epoch);
      expect(Object.keys(after.endpoints).sort()).toEqual(["w1", "w3"]);
      expect(after.version).toBeLessThan(last.version);
      // The lease and the node records live again in the re-created buckets.
      const lease = await openLease(await connect(), names);
      expect((await lease.read())?.record.holder).toBe("cp");
      const registry = await NodeRegistry.open(await connect(), names, { heartbeatTtlMs: 1500 });
      await until("both workers in the re-created nodes bucket", () =>
        registry.alive().length === 2 ? true : undefined,
      );
      registry.close();
      // And the cluster goes on: a membership change after the loss is placed too.
      alive.delete("w3");
      await until("a map without w3", () =>
        follower.current && !follower.current.endpoints.w3 ? true : undefined,
      );
    } finally {
      clearInterval(beat);
      follower.stop();
      await controller.stop();
      await lostServer.stop();
    }
  }, 90_000);
});

describe("shard placement with more workers than shards", () => {
  it("is not rewritten while membership stays the same, though some workers hold no shard", async () => {
    const store = await openShardMap(await open(), controlPlaneNames(`idle${Date.now()}`));
    const planner = new ShardPlanner(store, { shardCount: 2 });
    const nodes = ["w1", "w2", "w3"].map((id) => ({ ...worker(id), heartbeatAt: Date.now() }));
    expect(await planner.maybeReplan(nodes, 1)).toBe(1);
    const first = (await store.read())!.record;
    expect(new Set(Object.values(first.shards)).size).toBeLessThan(3);
    expect(Object.keys(first.endpoints).sort()).toEqual(["w1", "w2", "w3"]);
    // Idle ticks: the same three workers.
    expect(await planner.maybeReplan(nodes, 1)).toBeUndefined();
    expect(await planner.maybeReplan(nodes, 1)).toBeUndefined();
    expect((await store.read())!.record.version).toBe(1);
  });

  it("is rewritten when a worker comes back under its id at a new address, which the map then names", async () => {
    const store = await openShardMap(await open(), controlPlaneNames(`moved${Date.now()}`));
    const planner = new ShardPlanner(store, { shardCount: 8 });
    const nodes = ["w1", "w2"].map((id) => ({ ...worker(id), heartbeatAt: Date.now() }));
    expect(await planner.maybeReplan(nodes, 1)).toBe(1);
    const first = (await store.read())!.record;
    const moved = [nodes[0]!, { ...nodes[1]!, endpoint: "127.0.0.1:6999" }];
    expect(await planner.maybeReplan(moved, 1)).toBe(2);
    const second = (await store.read())!.record;
    expect(second.endpoints.w2).toBe("127.0.0.1:6999");
    expect(second.shards).toEqual(first.shards); // the same workers keep the same shards
    expect(await planner.maybeReplan(moved, 1)).toBeUndefined();
  });
});

describe("a worker heartbeating through NATS restarts", () => {
  it("never counts dead: a heartbeat whose acknowledgement was lost in the restart is stamped anew when tried again", async () => {
    const names = controlPlaneNames(`restarts${Date.now()}`);
    // As the programs connect; the shipped TTL.
    const writerConnection = await connectNats(server.url, { name: "worker" });
    const readerConnection = await connectNats(server.url, { name: "leader" });
    const writer = await NodeRecordWriter.open(writerConnection, names);
    const registry = await NodeRegistry.open(readerConnection, names);
    // Beats close together, so that some are always in flight while NATS is away.
    const beat = setInterval(() => void writer.heartbeat(worker("w1")).catch(() => undefined), 50);
    let oldestSeen = 0;
    const sample = setInterval(() => {
      const record = registry.all()[0];
      if (record) oldestSeen = Math.max(oldestSeen, Date.now() - record.heartbeatAt);
    }, 50);
    try {
      await until("the first heartbeat read", () => (registry.alive().length === 1 ? true : undefined));
      for (let restart = 0; restart < 2; restart++) {
        await server.restart();
        // Longer than a request's default timeout (5 s), which a lost acknowledgement waited out.
        await new Promise((resolve) => setTimeout(resolve, 5500));
      }
      // A put tried again with its first stamp landed after newer ones and took the
      // record 5 s back (a request's timeout): the leader then took the worker for dead.
      expect(oldestSeen).toBeLessThan(CLUSTER_DEFAULTS.heartbeatTtlMs);
    } finally {
      clearInterval(beat);
      clearInterval(sample);
      registry.close();
      await writerConnection.close();
      await readerConnection.close();
    }
  });
});

describe("a membership watch that has stopped delivering (a NATS server died under it)", () => {
  it("does not make the leader take a live node for dead: it reads the record of each node that looks dead", async () => {
    const names = controlPlaneNames(`lagging${Date.now()}`);
    const registry = await NodeRegistry.open(await open(), names, { heartbeatTtlMs: 500 });
    const writer = await NodeRecordWriter.open(await open(), names);
    await writer.heartbeat(worker("w1"));
    await until("the first heartbeat read", () => (registry.alive().length === 1 ? true : undefined));
    registry.close(); // its view stays as it is from now on
    const beat = setInterval(() => void writer.heartbeat(worker("w1")), 100);
    try {
      await new Promise((resolve) => setTimeout(resolve, 1000));
      expect(registry.alive()).toEqual([]);
      expect((await registry.aliveConfirmed()).map((n) => n.id)).toEqual(["w1"]);
    } finally {
      clearInterval(beat);
    }
  });
});

describe("heartbeats that stop landing", () => {
  it("from every node at once (NATS failing) do not make the leader drop anyone; from one node while others beat, they do", async () => {
    const names = controlPlaneNames(`silent${Date.now()}`);
    const registry = await NodeRegistry.open(await open(), names, { heartbeatTtlMs: 500 });
    const writer = await NodeRecordWriter.open(await open(), names);
    const beating = new Set(["w1", "w2"]);
    const beat = setInterval(() => {
      for (const id of beating) void writer.heartbeat(worker(id));
    }, 100);
    const ids = async () => (await registry.aliveConfirmed()).map((n) => n.id);
    try {
      await until("both alive", async () => ((await ids()).length === 2 ? true : undefined));
      beating.clear(); // nothing lands, as while the bucket's stream has no leader
      await new Promise((resolve) => setTimeout(resolve, 1000));
      expect(registry.alive()).toEqual([]);
      expect(await ids()).toEqual(["w1", "w2"]);
      beating.add("w2"); // heartbeats land again, but w1's do not: w1 is dead
      await until("w1 counted dead", async () => ((await ids()).join() === "w2" ? true : undefined));
    } finally {
      clearInterval(beat);
    }
  });
});

describe("a node record from the future", () => {
  it("is not a member: a heartbeat ten years ahead neither keeps a node alive nor gets it shards", async () => {
    const names = controlPlaneNames(`future${Date.now()}`);
    const registry = await NodeRegistry.open(await open(), names, { heartbeatTtlMs: 1000 });
    await registry.heartbeat(worker("w1"));
    await registry.heartbeat(worker("w9"), Date.now() + 10 * 365 * 24 * 3600 * 1000);
    await registry.heartbeat(worker("w8"), Date.now() + MAX_CLOCK_SKEW_MS / 2); // a clock a little ahead
    await until("both records read", () => (registry.all().length === 3 ? true : undefined));
    expect(registry.alive().map((n) => n.id)).toEqual(["w1", "w8"]);
    registry.close();
  });
});

describe("a cluster record that fails its schema", () => {
  it("in the lease key: a replica takes it over once a lease TTL has passed, leads, and names it once in the log", async () => {
    const cluster = `gl${Date.now()}`;
    const names = controlPlaneNames(cluster);
    const nc = await open();
    const lease = await openLease(nc, names);
    await lease.kv.put(lease.key, "not json");
    const lines: string[] = [];
    const capture = pino({ level: "warn" }, { write: (line: string) => lines.push(line) });
    const workers = await NodeRecordWriter.open(nc, names, { heartbeatTtlMs: 3000 });
    const beat = setInterval(() => void workers.heartbeat(worker("w1")), 100);
    const started = Date.now();
    const options = { cluster, tickMs: 50, leaseTtlMs: 1000, heartbeatTtlMs: 3000, shardCount: 16 };
    const controller = await Controller.start(await open(), { ...options, replicaId: "cp" }, capture);
    try {
      await until("the replica leading", () => controller.lease.isLeader() || undefined);
      // The value may have overwritten a live lease: nobody leads before that lease could have run out.
      expect(Date.now() - started).toBeGreaterThanOrEqual(options.leaseTtlMs);
      expect((await lease.read())?.record.holder).toBe("cp");
      const store = await openShardMap(nc, names);
      const map = await until("a shard map", async () => (await store.read())?.record);
      expect(Object.keys(map.endpoints)).toEqual(["w1"]);
      const warnings = lines.map((line) => JSON.parse(line) as { msg: string; err: string });
      const invalid = warnings.filter((w) => w.msg.includes("invalid lease record"));
      expect(invalid).toHaveLength(1);
      expect(invalid[0].err).toContain(`${names.leaderBucket}/leader`);
    } finally {
      clearInterval(beat);
      await controller.stop();
    }
  });

  it("in the shard map key: the leader writes a good map over it, and a follower of the map takes that one", async () => {
    const cluster = `gs${Date.now()}`;
    const names = controlPlaneNames(cluster);
    const nc = await open();
    const workers = await NodeRecordWriter.open(nc, names, { heartbeatTtlMs: 3000 });
    const beat = setInterval(() => {
      for (const id of ["w1", "w2"]) void workers.heartbeat(worker(id));
    }, 100);
    const options = { cluster, tickMs: 50, leaseTtlMs: 1000, heartbeatTtlMs: 3000, shardCount: 16 };
    const controller = await Controller.start(await open(), { ...options, replicaId: "cp" }, log);
    const store = await openShardMap(nc, names);
    const view = await VersionedMapView.follow(store);
    try {
      const first = await view.waitFor(
        (m) => (Object.keys(m.endpoints).length === 2 ? m : undefined),
        15_000,
      );
      expect(first).toBeDefined();
      await store.kv.put(store.key, JSON.stringify({ version: 1 }));
      // The follower holds `first`: only a newer version reaches it.
      const replaced = await view.waitFor((m) => (m.version > first!.version ? m : undefined), 15_000);
      expect(replaced).toBeDefined();
      expect(Object.keys(replaced!.endpoints).sort()).toEqual(["w1", "w2"]);
      expect((await store.read())?.record).toEqual(replaced);
    } finally {
      clearInterval(beat);
      view.stop();
      await controller.stop();
    }
  });

  it("in the expert map key: the leader plans afresh and writes a good map over it", async () => {
    const cluster = `ge${Date.now()}`;
    const names = controlPlaneNames(cluster);
    const experts = 8;
    const nc = await open();
    const store = await openExpertMap(nc, names);
    await store.kv.put(store.key, JSON.stringify({ version: 1 }));
    const workers = await NodeRecordWriter.open(nc, names, { heartbeatTtlMs: 1000 });
    const hosts = ["w1", "w2"];
    const beat = setInterval(() => {
      for (const id of hosts) void workers.heartbeat(worker(id));
    }, 100);
    const publish = setInterval(() => {
      for (const id of hosts) {
        const counts = Array.from({ length: experts }, (_, e) => (e === 0 ? 400 : 20));
        nc.publish(names.loadSubject(id), JSON.stringify({ nodeId: id, counts } satisfies ExpertLoadReport));
      }
    }, 50);
    const controller = await startExpertPlanningLeader(cluster, experts);
    try {
      const map = await until("a good expert map", async () => (await store.readForUpdate())?.record);
      expect(Object.keys(map.experts)).toHaveLength(experts);
      expect(new Set(Object.values(map.experts).flat())).toEqual(new Set(hosts));
    } finally {
      clearInterval(beat);
      clearInterval(publish);
      await controller.stop();
    }
  });
});

/** One control-plane replica with fast ticks and short expert-load windows. */
async function startExpertPlanningLeader(cluster: string, experts: number): Promise<Controller> {
  return Controller.start(
    await open(),
    {
      cluster,
      replicaId: "cp",
      tickMs: 50,
      leaseTtlMs: 1000,
      heartbeatTtlMs: 1000,
      shardCount: 64,
      experts,
      expertWindowMs: 300,
    },
    log,
  );
}

describe("expert placement from published load", () => {
  it("replicates hot experts over the workers' slots, and re-plans only when the load really shifts", async () => {
    const cluster = `e${Date.now()}`;
    const names = controlPlaneNames(cluster);
    const experts = 16;
    const controller = await startExpertPlanningLeader(cluster, experts);
    const nc = await open();
    const registry = await NodeRegistry.open(nc, names, { heartbeatTtlMs: 1000 });
    const hosts = ["w1", "w2", "w3", "w4"];
    const beat = setInterval(() => {
      for (const id of hosts) void registry.heartbeat({ ...worker(id), expertSlots: 8 });
    }, 100);
    const store = await openExpertMap(nc, names);
    await until("four hosts alive", () => (registry.alive().length === 4 ? true : undefined));
    let hot = [0, 1];
    const publish = setInterval(() => {
      for (const id of hosts) {
        const counts = Array.from(
          { length: experts },
          (_, e) => (hot.includes(e) ? 400 : 20) + ((e * 7 + Date.now()) % 3),
        );
        nc.publish(names.loadSubject(id), JSON.stringify({ nodeId: id, counts } satisfies ExpertLoadReport));
      }
    }, 50);
    try {
      const first = await until("an expert map over all four hosts", async () => {
        const record = (await store.read())?.record;
        return record &&
          new Set(Object.values(record.experts).flat()).size === 4 &&
          record.experts["0"].length > 1
          ? record
          : undefined;
      });
      expect(Object.keys(first.experts)).toHaveLength(experts);
      expect(first.experts["0"].length).toBeGreaterThan(first.experts["5"].length);
      expect(first.maxMeanLoad).toBeLessThanOrEqual(1.05);
      // Each replica's share of its expert's tokens, for routers: aligned with the holders, summing to 1.
      for (const [expert, holders] of Object.entries(first.experts)) {
        expect(first.shares![expert]).toHaveLength(holders.length);
        expect(first.shares![expert].reduce((a, b) => a + b, 0)).toBeCloseTo(1, 9);
      }
      // Noise only: once settled, several windows pass without a new version.
      await new Promise((r) => setTimeout(r, 700));
      const settled = (await store.read())!.record.version;
      await new Promise((r) => setTimeout(r, 1500));
      expect((await store.read())!.record.version).toBe(settled);
      // The hot experts change: a new plan replicates the new ones.
      hot = [9, 10];
      const second = await until("a re-plan that replicates the new hot experts", async () => {
        const current = (await store.read())?.record;
        return current && current.version > settled && current.experts["9"].length > 1 ? current : undefined;
      });
      expect(second.experts["10"].length).toBeGreaterThan(1);
      expect(second.fencingToken).toBeGreaterThanOrEqual(first.fencingToken);
    } finally {
      clearInterval(beat);
      clearInterval(publish);
      await controller.stop();
    }
  });
});

describe("expert placement from a MoE model's real activations", () => {
  it("cloud workers running the MoE demo model publish what their tokens activated, and the leader places those experts", async () => {
    const models = join(import.meta.dirname, "..", "models");
    const moe = join(models, "tandem-demo-moe");
    const checkpoint = await loadCheckpoint(moe);
    const split = 3;
    const perLayer = checkpoint.config.numExperts!;
    const experts = (checkpoint.config.numLayers - split) * perLayer;
    const cluster = `moe${Date.now()}`;
    const names = controlPlaneNames(cluster);
    const nc = await open();
    const reported = new Map<string, number[]>();
    const reports = nc.subscribe(names.loadSubject("*"));
    void (async () => {
      for await (const message of reports) {
        const report = message.json<ExpertLoadReport>();
        const sum = reported.get(report.nodeId) ?? new Array<number>(experts).fill(0);
        report.counts.forEach((c, e) => (sum[e] += c));
        reported.set(report.nodeId, sum);
      }
    })();
    const controller = await startExpertPlanningLeader(cluster, experts);
    const workers = await Promise.all(
      ["moe-a", "moe-b"].map((workerId) =>
        startCloudWorker(
          {
            modelDir: moe,
            split,
            workerId,
            port: 0,
            cluster: {
              natsUrl: server.url,
              name: cluster,
              heartbeatMs: 100,
              // As in a pod: the registry holds the address edges reach, not the listening one.
              advertise: `${workerId}.workers.test:50052`,
            },
          },
          log,
        ),
      ),
    );
    const lower = new SegmentSessions(
      await SegmentModel.load(checkpoint, segmentSpec({ fromLayer: 0, toLayer: split, outputHidden: true })),
    );
    try {
      // Hidden states at the split from the model's own first layers, on held-out text.
      const tokenizer = await Tokenizer.fromFile(checkpoint.tokenizerPath!);
      const text = readFileSync(join(models, "tandem-demo", "heldout.txt"), "utf8");
      const positions = 96;
      for (const [w, worker] of workers.entries()) {
        const ids = tokenizer.encode(text.slice(w * 2000, w * 2000 + 1500)).slice(0, positions);
        lower.open(`s${w}`);
        const hidden = (await lower.forward(`s${w}`, { ids })).hidden!;
        await worker.contexts.append(`s${w}`, { start: 0, hidden: hidden, count: positions });
      }
      // Every position activates top-2 experts in each of the three cloud layers: all of it reported.
      await until("every activation reported", () =>
        workers.every((_, w) => {
          const sum = reported.get(`moe-${"ab"[w]}`);
          return sum && sum.reduce((a, b) => a + b, 0) === 2 * 3 * positions;
        })
          ? true
          : undefined,
      );
      const map = await until("an expert map over both workers", async () => {
        const record = (await (await openExpertMap(nc, names)).read())?.record;
        return record && new Set(Object.values(record.experts).flat()).size === 2 ? record : undefined;
      });
      expect(Object.keys(map.experts)).toHaveLength(experts);
      // The plan was made from those reports: its loads are the activations of one window,
      // holding both workers' reports or one of them (each worker reports its chunk at once).
      const [a, b] = [...reported.values()];
      const total = a.map((c, e) => c + b[e]);
      expect([total, a, b]).toContainEqual(map.loads);
      const hottest = map.loads.indexOf(Math.max(...map.loads));
      const coldest = map.loads.indexOf(Math.min(...map.loads));
      expect(map.experts[String(hottest)].length).toBeGreaterThanOrEqual(map.experts[String(coldest)].length);
      expect(map.maxMeanLoad).toBeLessThanOrEqual(1.05);
      // Each worker takes up the latest map: its replicas and shares, and reports the version.
      const store = await openExpertMap(nc, names);
      await until("both workers on the latest expert map", async () => {
        const latest = (await store.read())!.record;
        const nodes = (await clusterStatus(server.url, cluster, 1000)).nodes;
        return workers.every((w, i) => {
          const taken = w.membership!.expertAssignment();
          const id = `moe-${"ab"[i]}`;
          return (
            taken?.version === latest.version &&
            JSON.stringify([...taken.held]) === JSON.stringify([...expertsOf(latest, id)]) &&
            nodes.find((n) => n.id === id)?.expertMapVersion === latest.version
          );
        })
          ? true
          : undefined;
      });
      // `tandem status` shows the replicas and expected expert load per node.
      const status = await clusterStatus(server.url, cluster, 1000);
      expect(status.experts?.experts).toBe(experts);
      const byNode = status.nodes.filter((n) => n.id.startsWith("moe-"));
      expect(byNode.map((n) => n.expertReplicas).reduce((x, y) => x + y, 0)).toBe(status.experts!.replicas);
      expect(byNode.every((n) => n.expertReplicas > 0)).toBe(true);
      expect(byNode.map((n) => n.endpoint).sort()).toEqual([
        "moe-a.workers.test:50052",
        "moe-b.workers.test:50052",
      ]);
      // The same as people read it.
      const printed = await runCli(["status", "--nats", server.url, "--cluster", cluster]);
      expect(printed.code).toBe(0);
      const lines = printed.stdout.split("\n");
      expect(lines.join("\n")).toMatch(
        /experts: version \d+, 24 experts in \d+ replicas, expected max\/mean load 1\.0\d\d/,
      );
      expect(lines.find((l) => l.startsWith("moe-a"))).toMatch(
        /moe-a\.workers\.test:50052 +true +false +\d+ +[\d.]+ +\d+ +\d+ +- +[\d.]+% +\d+$/,
      );
      expect(byNode.map((n) => n.expertLoadShare).reduce((x, y) => x + y, 0)).toBeCloseTo(1, 6);
    } finally {
      reports.unsubscribe();
      await lower.model.release();
      for (const worker of workers) {
        await worker.membership!.stop();
        await worker.server.shutdown(0);
      }
      await controller.stop();
    }
  }, 60_000);
});

describe("a draining worker", () => {
  it("leaves load balancers' rotation at once and stops after drainTimeoutMs when no leader moves its shards", async () => {
    const worker = await startCloudWorker(
      {
        modelDir: join(import.meta.dirname, "..", "models", "tandem-demo"),
        split: 3,
        workerId: "lonely",
        port: 0,
        cluster: { natsUrl: server.url, name: `drain${Date.now()}`, heartbeatMs: 100, drainTimeoutMs: 800 },
      },
      log,
    );
    expect(await healthStatus(worker.server.address, "tandem.v1.CloudWorker")).toBe("SERVING");
    const started = Date.now();
    const closing = worker.close(100);
    // Still reachable while it drains, but reported NOT_SERVING.
    await new Promise((r) => setTimeout(r, 200));
    expect(await healthStatus(worker.server.address, "tandem.v1.CloudWorker")).toBe("NOT_SERVING");
    await closing;
    expect(Date.now() - started).toBeGreaterThanOrEqual(800);
  });
});

describe("expert load reports of the wrong size", () => {
  it("are ignored, and the worker sending them is named once in the log", async () => {
    const cluster = `w${Date.now()}`;
    const names = controlPlaneNames(cluster);
    const nc = await open();
    const lines: string[] = [];
    const capture = pino({ level: "warn" }, { write: (line: string) => lines.push(line) });
    const planner = new ExpertPlanner(
      nc,
      names,
      await openExpertMap(nc, names),
      { experts: 8, windowMs: 5000 },
      capture,
    );
    try {
      for (let i = 0; i < 3; i++)
        nc.publish(names.loadSubject("w9"), JSON.stringify({ nodeId: "w9", counts: [1, 2, 3] }));
      nc.publish(names.loadSubject("w1"), JSON.stringify({ nodeId: "w1", counts: [1, 1, 1, 1, 1, 1, 1, 1] }));
      await until("the warning", () => (lines.length > 0 ? true : undefined));
      await nc.flush();
      await new Promise((r) => setTimeout(r, 100));
      expect(lines).toHaveLength(1);
      expect(JSON.parse(lines[0])).toMatchObject({ node: "w9", counts: 3, experts: 8 });
    } finally {
      planner.stop();
    }
  });
});
