/**
 * A worker's part in the control plane: it heartbeats its record (endpoint, capacity,
 * load) into the node registry and watches the placement map. When a new map gives one
 * of its sessions' shards to another worker, it drops that session's KV: the edge follows
 * the map to the new owner and replays the context there. Draining marks the record so
 * the leader moves every shard away; the worker stops once the map no longer names it.
 */
import type { NatsConnection } from "@nats-io/transport-node";
import {
  connectNats,
  controlPlaneNames,
  type ControlPlaneNames,
  type ExpertLoadReport,
  type ExpertMapRecord,
  expertsOf,
  NodeRecordWriter,
  ownerOf,
  openExpertMap,
  openShardMap,
  type ShardMapRecord,
  VersionedMapView,
} from "@tandem/cluster";
import { CLUSTER_DEFAULTS, type Logger } from "@tandem/common";
import { sessionIdOfContextKey } from "@tandem/runtime";
import type { ContextManager } from "./context-manager.ts";
import { DEFAULT_MEMBERSHIP_OPTIONS, type MembershipOptions } from "./membership-options.ts";

export class ClusterMembership {
  private draining = false;
  private timer?: NodeJS.Timeout;
  private expertMap?: { version: number; held: Map<number, number> };

  private constructor(
    private readonly nc: NatsConnection,
    private readonly names: ControlPlaneNames,
    private readonly nodeRecord: NodeRecordWriter,
    private readonly shardMap: VersionedMapView<ShardMapRecord>,
    private readonly expertMaps: VersionedMapView<ExpertMapRecord>,
    private readonly options: MembershipOptions,
    private readonly contexts: ContextManager,
    private readonly log: Logger,
  ) {}

  static async start(
    options: MembershipOptions,
    contexts: ContextManager,
    log: Logger,
  ): Promise<ClusterMembership> {
    const nc = await connectNats(options.natsUrl, {
      name: `tandem-cloud-worker ${options.nodeId}`,
      credentials: options.natsCredentials,
    });
    const names = controlPlaneNames(options.cluster);
    // Write-only: the worker heartbeats its own record and reads no other node's.
    const nodeRecord = await NodeRecordWriter.open(nc, names);
    // A map that fails its schema is skipped (and named in the log): the worker keeps the last good one.
    const invalid = (error: Error) => log.warn({ err: error.message }, "placement map ignored");
    const membership = new ClusterMembership(
      nc,
      names,
      nodeRecord,
      await VersionedMapView.follow(await openShardMap(nc, names), invalid),
      await VersionedMapView.follow(await openExpertMap(nc, names), invalid),
      options,
      contexts,
      log,
    );
    membership.shardMap.onChange((map) => membership.onMap(map));
    membership.expertMaps.onChange((map) => membership.onExpertMap(map));
    if (membership.shardMap.current) membership.onMap(membership.shardMap.current);
    if (membership.expertMaps.current) membership.onExpertMap(membership.expertMaps.current);
    await membership.heartbeat();
    membership.timer = setInterval(
      () => void membership.heartbeat(),
      options.heartbeatMs ?? CLUSTER_DEFAULTS.heartbeatMs,
    );
    return membership;
  }

  private async heartbeat(): Promise<void> {
    const stats = this.contexts.stats();
    // Load on the subject too, for whoever aggregates it (the expert planner): the experts
    // this worker's tokens activated since the last report (empty for a dense model).
    const report: ExpertLoadReport = {
      nodeId: this.options.nodeId,
      counts: this.options.takeExpertCounts?.() ?? [],
      sessions: stats.sessions,
      kvBytes: stats.kvBytes,
    };
    this.nc.publish(this.names.loadSubject(this.options.nodeId), JSON.stringify(report));
    await this.nodeRecord
      .heartbeat({
        id: this.options.nodeId,
        role: "cloud-worker",
        endpoint: this.options.endpoint,
        expertEndpoint: this.options.expertEndpoint,
        weight: this.options.weight ?? DEFAULT_MEMBERSHIP_OPTIONS.weight,
        expertSlots: this.options.expertSlots ?? 0,
        load: {
          sessions: stats.sessions,
          kvBytes: stats.kvBytes,
          expertMapVersion: this.expertMap?.version,
          heldExperts: this.options.heldExperts?.(),
        },
        draining: this.draining,
      })
      .catch((error: Error) => this.log.warn({ err: error.message }, "heartbeat failed"));
  }

  private onMap(map: ShardMapRecord): void {
    let released = 0;
    for (const contextKey of this.contexts.sessionIds()) {
      const owner = ownerOf(map, sessionIdOfContextKey(contextKey));
      if (owner && owner.nodeId !== this.options.nodeId) {
        this.contexts.release(contextKey);
        released++;
      }
    }
    if (released > 0) this.log.info({ version: map.version, released }, "sessions moved to other workers");
  }

  /**
   * A new expert map: take up this worker's replicas and their token shares (reported by
   * version in the heartbeat, so the leader and `tandem status` see the map converge). A
   * worker with expert parallelism loads the experts it gained and later frees those it
   * lost (onExpertMap); one without holds every expert of its layers.
   */
  private onExpertMap(map: ExpertMapRecord): void {
    const held = expertsOf(map, this.options.nodeId);
    this.expertMap = { version: map.version, held };
    this.log.info({ version: map.version, replicas: held.size }, "expert map taken up");
    this.options.onExpertMap?.(map, held);
  }

  /** This worker's expert replicas under the latest expert map (expert → share), and its version. */
  expertAssignment(): { version: number; held: Map<number, number> } | undefined {
    return this.expertMap;
  }

  /**
   * The owner of `sessionId` when the current map gives it to another worker (where the
   * escalation service redirects its edge); undefined when it is this worker's, or no map
   * names an owner yet.
   */
  elsewhere(sessionId: string): { workerId: string; address: string } | undefined {
    const map = this.shardMap.current;
    const owner = map ? ownerOf(map, sessionId) : undefined;
    return owner && owner.nodeId !== this.options.nodeId
      ? { workerId: owner.nodeId, address: owner.endpoint }
      : undefined;
  }

  /** Whether the current map gives this worker any shard. */
  ownsShards(): boolean {
    const map = this.shardMap.current;
    return map !== undefined && this.holdsShards(map);
  }

  private holdsShards(map: ShardMapRecord): boolean {
    return Object.values(map.shards).includes(this.options.nodeId);
  }

  /** Planned removal: asks the leader to move this worker's shards away, then waits until it has. */
  async drain(
    timeoutMs = this.options.drainTimeoutMs ?? DEFAULT_MEMBERSHIP_OPTIONS.drainTimeoutMs,
  ): Promise<boolean> {
    this.draining = true;
    await this.heartbeat();
    const moved = await this.shardMap.waitFor((map) => (this.holdsShards(map) ? undefined : true), timeoutMs);
    return moved === true;
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.shardMap.stop();
    this.expertMaps.stop();
    await this.nodeRecord.remove(this.options.nodeId).catch(() => undefined);
    await this.nc.close();
  }
}
