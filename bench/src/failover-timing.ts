/**
 * Failover timing on a real nats-server of its own: how long after a worker's last
 * heartbeat the leader publishes a map without it, and how long after the leader's
 * process is killed another replica holds the lease. Part of `bench placement`.
 */
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import {
  controlPlaneNames,
  NodeRecordWriter,
  openLease,
  openShardMap,
  type ShardMapRecord,
  VersionedMapView,
} from "@tandem/cluster";
import { Controller } from "@tandem/control-plane";
import { startNatsServer, startProgram, until } from "@tandem/testkit";

export interface FailoverOptions {
  trials: number;
  tickMs: number;
  heartbeatMs: number;
  heartbeatTtlMs: number;
  leaseTtlMs: number;
}

/** The lease is polled every 10 ms: the figures measured are about a second, so the polling adds ≤ 1%. */
const poll = <T>(what: string, check: () => Promise<T | undefined>) => until(what, check, 30_000, 10);

/** Resolves when the map the view follows first meets `check`: timed by the watch's event, not by polling. */
async function mapWhere(
  view: VersionedMapView<ShardMapRecord>,
  what: string,
  check: (map: ShardMapRecord) => boolean,
): Promise<void> {
  if ((await view.waitFor((map) => (check(map) ? true : undefined), 30_000)) === undefined)
    throw new Error(`timed out waiting for ${what}`);
}

export async function failoverTiming(options: FailoverOptions) {
  const server = await startNatsServer();
  const log = pino({ level: "silent" });
  const connections: NatsConnection[] = [];
  const open = async () => {
    const nc = await connect({ servers: server.url });
    connections.push(nc);
    return nc;
  };
  const shardMoves: number[] = [];
  const takeovers: number[] = [];
  try {
    for (let trial = 0; trial < options.trials; trial++) {
      // A worker stops heartbeating: time until a map without it.
      const cluster = `failover${trial}`;
      const names = controlPlaneNames(cluster);
      const controller = await Controller.start(
        await open(),
        {
          cluster,
          replicaId: "cp",
          tickMs: options.tickMs,
          leaseTtlMs: options.leaseTtlMs,
          heartbeatTtlMs: options.heartbeatTtlMs,
          shardCount: 1024,
        },
        log,
      );
      const workers = await NodeRecordWriter.open(await open(), names, {
        heartbeatTtlMs: options.heartbeatTtlMs,
      });
      const alive = new Set(["w1", "w2", "w3", "w4"]);
      const lastBeat = new Map<string, number>();
      const beat = setInterval(() => {
        for (const id of alive) {
          lastBeat.set(id, Date.now());
          void workers.heartbeat({
            id,
            role: "cloud-worker",
            endpoint: `127.0.0.1:${6000 + Number(id.slice(1))}`,
            weight: 1,
            expertSlots: 0,
            load: { sessions: 0, kvBytes: 0 },
            draining: false,
          });
        }
      }, options.heartbeatMs);
      const view = await VersionedMapView.follow(await openShardMap(await open(), names));
      await mapWhere(view, "a map with four workers", (map) => Object.keys(map.endpoints).length === 4);
      alive.delete("w2");
      const last = lastBeat.get("w2")!;
      await mapWhere(view, "the failover", (map) => !Object.values(map.shards).includes("w2"));
      shardMoves.push(Date.now() - last);
      clearInterval(beat);
      view.stop();
      await controller.stop();
    }
    for (let trial = 0; trial < options.trials; trial++) {
      // The leader's process is killed: time until another replica holds the lease.
      const cluster = `takeover${trial}`;
      const flags = {
        natsUrl: server.url,
        cluster,
        tickMs: options.tickMs,
        leaseTtlMs: options.leaseTtlMs,
        heartbeatTtlMs: options.heartbeatTtlMs,
        shardCount: 64,
      };
      const replicas = [
        await startProgram("tandem-control-plane", { ...flags, replicaId: "cp-a" }),
        await startProgram("tandem-control-plane", { ...flags, replicaId: "cp-b" }),
      ];
      const lease = await openLease(await open(), controlPlaneNames(cluster));
      const holder = async () => {
        const record = (await lease.read())?.record;
        return record && record.expiresAt > Date.now() ? record.holder : undefined;
      };
      const first = await poll("a leader", holder);
      const killedAt = Date.now();
      await replicas[first === "cp-a" ? 0 : 1].kill("SIGKILL");
      await poll("the failover", async () => {
        const now = await holder();
        return now && now !== first ? now : undefined;
      });
      takeovers.push(Date.now() - killedAt);
      for (const replica of replicas) await replica.kill();
    }
  } finally {
    for (const nc of connections) await nc.close().catch(() => undefined);
    await server.stop();
  }
  const summary = (values: number[]) => ({
    p50: [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)],
    max: Math.max(...values),
    trials: values.length,
  });
  return {
    settings: options,
    shard_move_after_last_heartbeat_ms: summary(shardMoves),
    leader_takeover_after_kill_ms: summary(takeovers),
  };
}
