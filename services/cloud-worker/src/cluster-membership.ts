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
  NodeRegistry,
  ownerOf,
  openExpertMap,
  openShardMap,
  type ShardMapRecord,
  watchVersioned,
} from "@tandem/cluster";
import { CLUSTER_DEFAULTS, type Logger } from "@tandem/common";
import type { ContextManager } from "./context-manager.ts";
import { DEFAULT_MEMBERSHIP_OPTIONS, type MembershipOptions } from "./membership-options.ts";

export class ClusterMembership {
  private draining = false;
  private timer?: NodeJS.Timeout;
  private map?: ShardMapRecord;
  private expertMap?: { version: number; held: Map<number, number> };
  private readonly mapListeners = new Set<() => void>();

  private constructor(
    private readonly nc: NatsConnection,
    private readonly names: ControlPlaneNames,
    private readonly registry: NodeRegistry,
    private readonly stopWatch: () => void,
    private readonly options: MembershipOptions,
    private readonly contexts: ContextManager,
    private readonly log: Logger,
  ) {}

  static async start(
    options: MembershipOptions,
    contexts: ContextManager,
    log: Logger,
  ): Promise<ClusterMembership> {
    const nc = await connectNats(options.natsUrl, { name: `tandem-cloud-worker ${options.nodeId}` });
    const names = controlPlaneNames(options.cluster);
    const registry = await NodeRegistry.open(nc, names);
    const holder: { membership?: ClusterMembership } = {};
    // A map that fails its schema is skipped (and named in the log): the worker keeps the last good one.
    const invalid = (error: Error) => log.warn({ err: error.message }, "placement map ignored");
    const watch = await watchVersioned(
      await openShardMap(nc, names),
      (map) => holder.membership?.onMap(map),
      invalid,
    );
    const expertWatch = await watchVersioned(
      await openExpertMap(nc, names),
      (map) => holder.membership?.onExpertMap(map),
      invalid,
    );
    const membership = new ClusterMembership(
      nc,
      names,
      registry,
      () => {
        watch.stop();
        expertWatch.stop();
      },
      options,
      contexts,
      log,
    );
    holder.membership = membership;
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
    await this.registry
      .heartbeat({
        id: this.options.nodeId,
        role: "cloud-worker",
        endpoint: this.options.endpoint,
        weight: this.options.weight ?? DEFAULT_MEMBERSHIP_OPTIONS.weight,
        expertSlots: this.options.expertSlots ?? 0,
        load: { sessions: stats.sessions, kvBytes: stats.kvBytes, expertMapVersion: this.expertMap?.version },
        draining: this.draining,
      })
      .catch((error: Error) => this.log.warn({ err: error.message }, "heartbeat failed"));
  }

  private onMap(map: ShardMapRecord): void {
    this.map = map;
    let released = 0;
    for (const sessionId of this.contexts.sessionIds()) {
      const owner = ownerOf(map, sessionId);
      if (owner && owner.nodeId !== this.options.nodeId) {
        this.contexts.release(sessionId);
        released++;
      }
    }
    if (released > 0) this.log.info({ version: map.version, released }, "sessions moved to other workers");
    for (const listener of [...this.mapListeners]) listener();
  }

  /**
   * A new expert map: take up this worker's replicas and their token shares. Every worker
   * holds all experts of its layers today, so taking up is recording (and reporting the
   * version in the heartbeat, so the leader and `tandem status` see the map converge).
   */
  private onExpertMap(map: ExpertMapRecord): void {
    const held = expertsOf(map, this.options.nodeId);
    this.expertMap = { version: map.version, held };
    this.log.info({ version: map.version, replicas: held.size }, "expert map taken up");
  }

  /** This worker's expert replicas under the latest expert map (expert → share), and its version. */
  expertAssignment(): { version: number; held: Map<number, number> } | undefined {
    return this.expertMap;
  }

  /** Whether the current map gives this worker any shard. */
  ownsShards(): boolean {
    return this.map !== undefined && Object.values(this.map.shards).includes(this.options.nodeId);
  }

  /** Planned removal: asks the leader to move this worker's shards away, then waits until it has. */
  async drain(
    timeoutMs = this.options.drainTimeoutMs ?? DEFAULT_MEMBERSHIP_OPTIONS.drainTimeoutMs,
  ): Promise<boolean> {
    this.draining = true;
    await this.heartbeat();
    return new Promise((resolve) => {
      const check = () => {
        if (this.map && !this.ownsShards()) done(true);
      };
      const done = (ok: boolean) => {
        clearTimeout(timer);
        this.mapListeners.delete(check);
        resolve(ok);
      };
      const timer = setTimeout(() => done(false), timeoutMs);
      this.mapListeners.add(check);
      check();
    });
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.stopWatch();
    await this.registry.remove(this.options.nodeId).catch(() => undefined);
    this.registry.close();
    await this.nc.close();
  }
}
