/**
 * The control plane on a three-server NATS cluster (JetStream, routes on loopback): its KV
 * buckets are created with three replicas, it places workers through them, and it goes on
 * placing them when one of the three servers is killed.
 */
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { afterAll, describe, expect, it } from "vitest";
import { connectNats, controlPlaneNames, kvReplicas, NodeRegistry, openShardMap } from "@tandem/cluster";
import { Controller } from "@tandem/control-plane";
import { nodeRecord, startNatsCluster, type TestNatsCluster, until } from "@tandem/testkit";

const CLUSTER = `replicated${Date.now()}`;
const names = controlPlaneNames(CLUSTER);
let nats: TestNatsCluster | undefined;
const connections: NatsConnection[] = [];

afterAll(async () => {
  for (const nc of connections) await nc.close().catch(() => undefined);
  await nats?.stop();
});

async function connected(): Promise<NatsConnection> {
  const nc = await connectNats(nats!.url);
  connections.push(nc);
  return nc;
}

describe("a three-server NATS cluster", () => {
  it("holds the control plane's buckets three times over, places workers through them, and survives losing a server", async () => {
    nats = await startNatsCluster(3);
    const control = await connected();
    expect(kvReplicas(control)).toBe(3);
    const controller = await Controller.start(
      control,
      {
        cluster: CLUSTER,
        replicaId: "r1",
        shardCount: 16,
        tickMs: 100,
        leaseTtlMs: 1000,
        heartbeatTtlMs: 1000,
      },
      pino({ level: "silent" }),
    );
    const registry = await NodeRegistry.open(await connected(), names, { heartbeatTtlMs: 1000 });
    const members = new Set(["w1"]);
    const beat = setInterval(() => {
      for (const id of members) void registry.heartbeat(nodeRecord(id)).catch(() => undefined);
    }, 100);
    try {
      const map = await openShardMap(await connected(), names);
      const names_ = async () =>
        new Set(Object.values((await map.read().catch(() => undefined))?.record.shards ?? {}));
      await until("w1 placed", async () => ((await names_()).has("w1") ? true : undefined));
      for (const bucket of [names.placementBucket, names.leaderBucket, names.nodesBucket])
        expect((await (await new Kvm(control).open(bucket)).status()).replicas, bucket).toBe(3);

      members.add("w2");
      await until("w2 placed", async () => ((await names_()).has("w2") ? true : undefined));

      // One server dies (SIGKILL): clients fail over to the others, the buckets' other two
      // replicas elect leaders, and placement goes on.
      await nats.servers[0]!.stop();
      members.add("w3");
      await until(
        "w3 placed after a server died",
        async () => ((await names_()).has("w3") ? true : undefined),
        30_000,
      );
      members.delete("w1");
      await until("w1's shards moved", async () => (!(await names_()).has("w1") ? true : undefined), 30_000);
    } finally {
      clearInterval(beat);
      await controller.stop();
    }
  }, 120_000);
});

describe("a two-server NATS cluster", () => {
  it("cannot place three replicas, so the buckets are created with one", async () => {
    const two = await startNatsCluster(2);
    try {
      const nc = await connectNats(two.url);
      connections.push(nc);
      expect(kvReplicas(nc)).toBe(3);
      const store = await openShardMap(nc, controlPlaneNames(`two${Date.now()}`));
      expect((await store.kv.status()).replicas).toBe(1);
    } finally {
      await two.stop();
    }
  }, 60_000);
});
