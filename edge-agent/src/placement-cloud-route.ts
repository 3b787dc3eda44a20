/**
 * The route of an edge inside a cluster: each session goes to the owner of its KV shard
 * in the control plane's placement map, watched on NATS; the map changes when workers
 * join, drain or die, and sessions follow it.
 */
import type { NatsConnection } from "@nats-io/transport-node";
import {
  connectNats,
  controlPlaneNames,
  openShardMap,
  ownerOf,
  watchVersioned,
  type ShardMapRecord,
} from "@tandem/cluster";
import type { Logger } from "@tandem/common";
import type { CloudRoute } from "./cloud-route.ts";

export class PlacementCloudRoute implements CloudRoute {
  private map?: ShardMapRecord;
  private readonly listeners = new Set<() => void>();

  private stopWatch: () => void = () => undefined;

  private constructor(private readonly nc: NatsConnection) {}

  static async start(servers: string, cluster: string, log: Logger): Promise<PlacementCloudRoute> {
    const nc = await connectNats(servers, { name: "tandem-edge" });
    const route = new PlacementCloudRoute(nc);
    const watch = await watchVersioned(
      await openShardMap(nc, controlPlaneNames(cluster)),
      (map) => {
        route.map = map;
        for (const listener of [...route.listeners]) listener();
      },
      // A map that fails its schema is skipped: sessions keep following the last good one.
      (error) => log.warn({ err: error.message }, "placement map ignored"),
    );
    route.stopWatch = () => watch.stop();
    return route;
  }

  address(sessionId: string): string | undefined {
    return this.map ? ownerOf(this.map, sessionId)?.endpoint : undefined;
  }

  waitForOwnerChange(
    sessionId: string,
    from: string | undefined,
    timeoutMs: number,
  ): Promise<string | undefined> {
    return new Promise((resolve) => {
      const check = () => {
        const now = this.address(sessionId);
        if (now !== undefined && now !== from) {
          done(now);
        }
      };
      const done = (value: string | undefined) => {
        clearTimeout(timer);
        this.listeners.delete(check);
        resolve(value);
      };
      const timer = setTimeout(() => done(undefined), timeoutMs);
      this.listeners.add(check);
      check();
    });
  }

  async close(): Promise<void> {
    this.stopWatch();
    await this.nc.close();
  }
}
