/**
 * The route of an edge inside a cluster: each session goes to the owner of its KV shard
 * in the control plane's placement map, watched on NATS; the map changes when workers
 * join, drain or die, and sessions follow it.
 */
import type { NatsConnection } from "@nats-io/transport-node";
import {
  VersionedMapView,
  connectNats,
  controlPlaneNames,
  openShardMap,
  ownerOf,
  type NatsCredentials,
  type ShardMapRecord,
} from "@tandem/cluster";
import type { Logger } from "@tandem/common";
import type { CloudRoute } from "./cloud-route.ts";

export class PlacementCloudRoute implements CloudRoute {
  private constructor(
    private readonly nc: NatsConnection,
    private readonly view: VersionedMapView<ShardMapRecord>,
  ) {}

  static async start(
    servers: string,
    cluster: string,
    log: Logger,
    credentials?: NatsCredentials,
  ): Promise<PlacementCloudRoute> {
    const nc = await connectNats(servers, { name: "tandem-edge", credentials });
    const view = await VersionedMapView.follow(
      await openShardMap(nc, controlPlaneNames(cluster)),
      // A map that fails its schema is skipped: sessions keep following the last good one.
      (error) => log.warn({ err: error.message }, "placement map ignored"),
    );
    return new PlacementCloudRoute(nc, view);
  }

  address(sessionId: string): string | undefined {
    const map = this.view.current;
    return map ? ownerOf(map, sessionId)?.endpoint : undefined;
  }

  waitForOwnerChange(
    sessionId: string,
    from: string | undefined,
    timeoutMs: number,
  ): Promise<string | undefined> {
    return this.view.waitFor((map) => {
      const owner = ownerOf(map, sessionId)?.endpoint;
      return owner !== undefined && owner !== from ? owner : undefined;
    }, timeoutMs);
  }

  async close(): Promise<void> {
    this.view.stop();
    await this.nc.close();
  }
}
