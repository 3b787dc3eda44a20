/**
 * A control-plane replica. Every tick it renews or contends for the leader lease; the
 * leader reads the alive nodes and, when the set changed, writes the next placement
 * version (sticky bounded-load consistent hashing: a dead node's shards move, others
 * stay; draining nodes get none). Several replicas run; at most one acts.
 */
import type { NatsConnection } from "@nats-io/transport-node";
import { Kvm } from "@nats-io/kv";
import type { Logger } from "@tandem/common";
import { controlPlaneNames } from "@tandem/cluster";
import { ExpertPlanner } from "./expert-planner.ts";
import { LeaderLease } from "./leader-lease.ts";
import { NodeRegistry } from "@tandem/cluster";
import { placeShards } from "./placement/shard-placement.ts";
import { PlacementStore, type ShardMapRecord } from "@tandem/cluster";

export interface ControllerOptions {
  cluster: string;
  replicaId: string;
  /** @default 4096 */
  shardCount?: number;
  /** @default 500 */
  tickMs?: number;
  /** @default 3000 */
  leaseTtlMs?: number;
  /** @default 3000 */
  heartbeatTtlMs?: number;
  /**
   * MoE experts to place: numExperts × the cloud workers' layers, expert id
   * (layer − split)·numExperts + expert, as workers count them. 0: a dense model. @default 0
   */
  experts?: number;
  /** Load window of expert placement. @default 5000 */
  expertWindowMs?: number;
}

export class Controller {
  private timer?: NodeJS.Timeout;
  private running = false;
  /** Maps this replica wrote (for tests and status). */
  written = 0;

  private constructor(
    private readonly registry: NodeRegistry,
    private readonly store: PlacementStore,
    readonly lease: LeaderLease,
    private readonly options: Required<ControllerOptions>,
    private readonly log: Logger,
    private readonly experts?: ExpertPlanner,
  ) {}

  static async start(nc: NatsConnection, options: ControllerOptions, log: Logger): Promise<Controller> {
    const full: Required<ControllerOptions> = {
      shardCount: 4096,
      tickMs: 500,
      leaseTtlMs: 3000,
      heartbeatTtlMs: 3000,
      experts: 0,
      expertWindowMs: 5000,
      ...options,
    };
    const names = controlPlaneNames(full.cluster);
    const registry = await NodeRegistry.open(nc, names, { heartbeatTtlMs: full.heartbeatTtlMs });
    const store = await PlacementStore.open(nc, names);
    const leaseKv = await new Kvm(nc).create(names.leaderBucket, { history: 1 });
    const controller = new Controller(
      registry,
      store,
      new LeaderLease(leaseKv, full.replicaId, full.leaseTtlMs),
      full,
      log,
      full.experts > 0
        ? new ExpertPlanner(nc, names, store, { experts: full.experts, windowMs: full.expertWindowMs }, log)
        : undefined,
    );
    controller.schedule(0);
    return controller;
  }

  private schedule(delay: number): void {
    this.timer = setTimeout(
      () => void this.tick().finally(() => this.timer && this.schedule(this.options.tickMs)),
      delay,
    );
  }

  /** One round: lease, then (as leader) re-place if membership changed. */
  async tick(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      const wasLeader = this.lease.isLeader();
      const leader = await this.lease.tick();
      if (leader && !wasLeader)
        this.log.info(
          { replica: this.options.replicaId, fencingToken: this.lease.fencingToken },
          "became leader",
        );
      if (!leader) return;
      const alive = await this.registry.alive();
      if (this.experts && this.lease.fencingToken !== undefined) {
        const version = await this.experts.maybeReplan(alive, this.lease.fencingToken);
        if (version !== undefined) this.log.info({ version }, "expert placement written");
      }
      const nodes = alive.filter((n) => !n.draining);
      const current = await this.store.read();
      const nodeIds = nodes.map((n) => n.id).sort();
      const currentIds = current ? [...new Set(Object.values(current.record.shards))].sort() : [];
      if (nodes.length === 0 || JSON.stringify(nodeIds) === JSON.stringify(currentIds)) return;
      const token = this.lease.fencingToken;
      if (token === undefined) return; // lease ran short while reading: do not act
      const previous = current
        ? new Map(Object.entries(current.record.shards).map(([s, n]) => [Number(s), n]))
        : undefined;
      const map = placeShards(
        this.options.shardCount,
        nodes.map((n) => ({ id: n.id, weight: n.weight })),
        previous,
      );
      const record: ShardMapRecord = {
        version: (current?.record.version ?? 0) + 1,
        fencingToken: token,
        shardCount: this.options.shardCount,
        shards: Object.fromEntries(map),
        endpoints: Object.fromEntries(nodes.map((n) => [n.id, n.endpoint])),
        writtenAt: Date.now(),
      };
      if (await this.store.write(record, current?.revision)) {
        this.written++;
        this.log.info({ version: record.version, nodes: nodeIds }, "placement written");
      }
    } catch (error) {
      this.log.warn({ err: (error as Error).message }, "control-plane tick failed");
    } finally {
      this.running = false;
    }
  }

  async stop(): Promise<void> {
    this.experts?.stop();
    this.registry.close();
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.lease.release().catch(() => undefined);
  }
}
