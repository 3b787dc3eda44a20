/**
 * The control plane on a NATS that authenticates every party by NKey and gives each role
 * only what it needs (the sample permissions in SECURITY.md): the control plane writes
 * maps and the lease; a worker writes its own node record and load subject; an edge reads
 * the placement map. Each forbidden write is refused by the real nats-server.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { nkeys, type NatsConnection } from "@nats-io/transport-node";
import { Kvm } from "@nats-io/kv";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectNats, controlPlaneNames, NodeRegistry, openShardMap } from "@tandem/cluster";
import { UnauthenticatedError } from "@tandem/common";
import { Controller } from "@tandem/control-plane";
import { startNatsServer, type TestNatsServer, until } from "@tandem/testkit";

const CLUSTER = `auth${Date.now()}`;
const names = controlPlaneNames(CLUSTER);
const roles = ["control", "worker", "edge"] as const;
type Role = (typeof roles)[number];

let server: TestNatsServer;
let dir: string;
const seedFile: Partial<Record<Role, string>> = {};
const connections: NatsConnection[] = [];

/** The nats-server permissions of each role, for cluster `c` and worker `w1`. */
function authorization(publicKeys: Record<Role, string>): string {
  const kv = (bucket: string) => `$KV.tandem_${CLUSTER}_${bucket}`;
  return `
authorization {
  users = [
    { nkey: ${publicKeys.control}, permissions: { publish: ">", subscribe: ">" } }
    { nkey: ${publicKeys.worker}, permissions: {
        publish: { allow: ["$JS.API.>", "_INBOX.>", "${kv("nodes")}.w1", "tandem.${CLUSTER}.load.w1"] },
        subscribe: ">" } }
    { nkey: ${publicKeys.edge}, permissions: {
        publish: { allow: ["$JS.API.>", "_INBOX.>"], deny: ["$KV.>"] },
        subscribe: ">" } }
  ]
}
`;
}

async function as(role: Role): Promise<NatsConnection> {
  const nc = await connectNats(server.url, { credentials: { nkeySeedFile: seedFile[role] } });
  connections.push(nc);
  return nc;
}

/** A KV put that the server must refuse: resolves with the error it fails with. */
async function refusedPut(nc: NatsConnection, bucket: string, key: string): Promise<Error> {
  const kv = await new Kvm(nc).open(bucket);
  return kv.put(key, "{}").then(
    () => {
      throw new Error(`a put to ${bucket}/${key} was accepted`);
    },
    (error: Error) => error,
  );
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "tandem-nats-auth-"));
  const publicKeys = {} as Record<Role, string>;
  for (const role of roles) {
    const user = nkeys.createUser();
    publicKeys[role] = user.getPublicKey();
    seedFile[role] = join(dir, `${role}.nk`);
    writeFileSync(seedFile[role]!, new TextDecoder().decode(user.getSeed()) + "\n", { mode: 0o600 });
  }
  server = await startNatsServer({ config: authorization(publicKeys) });
});

afterAll(async () => {
  for (const nc of connections) await nc.close().catch(() => undefined);
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe("a NATS that authenticates each party", () => {
  it("refuses an anonymous connection as UNAUTHENTICATED, naming the server", async () => {
    await expect(connectNats(server.url, { reconnect: false })).rejects.toThrow(UnauthenticatedError);
    await expect(connectNats(server.url, { reconnect: false })).rejects.toThrow(
      /NATS at .* refused the credentials/,
    );
  });

  it("lets the control plane lead and place a worker's shards, the worker write only its own record, and the edge only read", async () => {
    const controller = await Controller.start(
      await as("control"),
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
    try {
      const worker = await as("worker");
      const registry = await NodeRegistry.open(worker, names, { heartbeatTtlMs: 1000 });
      const beat = () =>
        registry.heartbeat({
          id: "w1",
          role: "cloud-worker",
          endpoint: "127.0.0.1:5001",
          weight: 1,
          expertSlots: 0,
          load: { sessions: 0, kvBytes: 0 },
          draining: false,
        });
      await beat();
      const timer = setInterval(() => void beat().catch(() => undefined), 200);
      try {
        // The edge reads the map the control plane wrote for the worker.
        const edgeMap = await openShardMap(await as("edge"), names);
        const map = await until("a placement map naming w1", async () => {
          const read = await edgeMap.read();
          return read && Object.values(read.record.shards).includes("w1") ? read.record : undefined;
        });
        expect(Object.keys(map.endpoints)).toEqual(["w1"]);
      } finally {
        clearInterval(timer);
      }

      // What each role must never write.
      expect((await refusedPut(worker, names.leaderBucket, "lease")).message).toMatch(/permission/i);
      expect((await refusedPut(worker, names.placementBucket, "kv-shards")).message).toMatch(/permission/i);
      expect((await refusedPut(worker, names.nodesBucket, "w2")).message).toMatch(/permission/i);
      const edge = await as("edge");
      expect((await refusedPut(edge, names.placementBucket, "kv-shards")).message).toMatch(/permission/i);
      expect((await refusedPut(edge, names.nodesBucket, "w9")).message).toMatch(/permission/i);
    } finally {
      await controller.stop();
    }
  }, 60_000);
});
