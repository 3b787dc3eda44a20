/**
 * The control plane on a NATS that authenticates every party by NKey and gives each role
 * only what it needs (the sample permissions in SECURITY.md): the control plane writes
 * maps and the lease; a worker writes its own node record and load subject; an edge reads
 * the placement map. Each forbidden write is refused by the real nats-server.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { nkeys, type NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
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

/**
 * The nats-server permissions of each role: SECURITY.md's sample block itself, for this
 * test's cluster, with its NKeys (so the documented configuration is the tested one).
 */
function authorization(publicKeys: Record<Role, string>): string {
  const security = readFileSync(join(import.meta.dirname, "..", "SECURITY.md"), "utf8");
  const block = /## NATS permissions per role[\s\S]*?```\n([\s\S]*?)```/.exec(security)?.[1];
  if (!block) throw new Error("SECURITY.md has no NATS permissions block");
  return block
    .replace("UCONTROL…", publicKeys.control)
    .replace("UWORKER1…", publicKeys.worker)
    .replace("UEDGE…", publicKeys.edge)
    .replaceAll("tandem_C_", `tandem_${CLUSTER}_`)
    .replaceAll("tandem.C.", `tandem.${CLUSTER}.`);
}

async function as(role: Role): Promise<NatsConnection> {
  const nc = await connectNats(server.url, { credentials: { nkeySeedFile: seedFile[role] } });
  connections.push(nc);
  return nc;
}

/** A stream purge and a stream delete through the JetStream API, both of which the server must refuse. */
async function refusedStreamAdmin(nc: NatsConnection, bucket: string): Promise<Error[]> {
  const jsm = await jetstreamManager(nc);
  const refused = (operation: Promise<unknown>, what: string) =>
    operation.then(
      () => {
        throw new Error(`${what} of ${bucket} was accepted`);
      },
      (error: Error) => error,
    );
  return [
    await refused(jsm.streams.purge(`KV_${bucket}`), "a purge"),
    await refused(jsm.streams.delete(`KV_${bucket}`), "a delete"),
  ];
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

  it("names an unreachable server without the password its URL carries", async () => {
    await expect(
      connectNats("nats://app:pw@127.0.0.1:1", { reconnect: false, timeoutMs: 2000 }),
    ).rejects.toThrow(/^NATS at nats:\/\/app:\*\*\*@127\.0\.0\.1:1 cannot be reached/);
  });

  it("names a credentials file that is readable but not a credential, before connecting", async () => {
    const bad = join(dir, "bad.nk");
    writeFileSync(bad, "SUnotaseed\n", { mode: 0o600 });
    await expect(connectNats(server.url, { credentials: { nkeySeedFile: bad } })).rejects.toThrow(
      /^natsNkeySeed: is not a valid NATS credential/,
    );
    await expect(
      connectNats(server.url, { credentials: { nkeySeedFile: seedFile.edge, credsFile: bad } }),
    ).rejects.toThrow(/^natsNkeySeed: set natsNkeySeed or natsCreds, not both/);
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
      // Nor wipe a bucket through the JetStream API.
      for (const nc of [worker, edge])
        for (const bucket of [names.placementBucket, names.leaderBucket, names.nodesBucket])
          for (const error of await refusedStreamAdmin(nc, bucket))
            expect(error.message).toMatch(/permission/i);
      expect((await openShardMap(edge, names).then((store) => store.read()))?.record.shards).toBeDefined();
    } finally {
      await controller.stop();
    }
  }, 60_000);
});
