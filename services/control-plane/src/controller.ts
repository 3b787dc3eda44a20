/**
 * A control-plane replica. Every tick it renews or contends for the leader lease; the
 * leader reads the alive nodes and lets the planners write what changed: the shard map
 * (ShardPlanner, when membership changed) and the expert map (ExpertPlanner, at the end
 * of each load window). Several replicas run; at most one acts, and every write carries
 * its lease's fencing token.
 */
import type { NatsConnection } from "@nats-io/transport-node";
import { NodeRegistry, controlPlaneNames, openExpertMap, openLease, openShardMap } from "@tandem/cluster";
import { CLUSTER_DEFAULTS, ConfigValueError, type Logger } from "@tandem/common";
import type { ControlPlaneMetrics } from "./control-plane-metrics.ts";
import { ExpertPlanner } from "./expert-planner.ts";
import { DEFAULT_LEASE_TIMING, LeaderLease, leaseTtlProblem } from "./leader-lease.ts";
import { ShardPlanner } from "./shard-planner.ts";

export interface ControllerOptions {
  cluster: string;
  replicaId: string;
  /** Virtual KV shards. @default 4096 */
  shardCount?: number;
  /** Control loop interval. @default 500 */
  tickMs?: number;
  /** Leader lease duration. @default 3000 */
  leaseTtlMs?: number;
  /** A worker is dead after this long without a heartbeat. @default CLUSTER_DEFAULTS.heartbeatTtlMs */
  heartbeatTtlMs?: number;
  /**
   * MoE experts to place: numExperts × the cloud workers' layers, expert id
   * (layer − split)·numExperts + expert, as workers count them. 0: a dense model. @default 0
   */
  experts?: number;
  /** Load window of expert placement. @default 5000 */
  expertWindowMs?: number;
}

export const DEFAULT_CONTROLLER_OPTIONS = {
  shardCount: 4096,
  tickMs: 500,
  leaseTtlMs: DEFAULT_LEASE_TIMING.ttlMs,
  heartbeatTtlMs: CLUSTER_DEFAULTS.heartbeatTtlMs,
  experts: 0,
  expertWindowMs: 5000,
} as const satisfies Omit<Required<ControllerOptions>, "cluster" | "replicaId">;

export class Controller {
  private timer?: NodeJS.Timeout;
  private running = false;
  /** Shard maps this replica wrote (for tests and status). */
  written = 0;
  /** When the last tick that ran without error ended (epoch ms): its health check reads it. */
  lastTickAt?: number;

  private constructor(
    private readonly registry: NodeRegistry,
    private readonly shards: ShardPlanner,
    readonly lease: LeaderLease,
    private readonly options: Required<ControllerOptions>,
    private readonly log: Logger,
    private readonly experts?: ExpertPlanner,
    private readonly metrics?: ControlPlaneMetrics,
  ) {}

  /** `metrics`: where the leader's ticks report what they plan. @default none */
  static async start(
    nc: NatsConnection,
    options: ControllerOptions,
    log: Logger,
    metrics?: ControlPlaneMetrics,
  ): Promise<Controller> {
    const full: Required<ControllerOptions> = { ...DEFAULT_CONTROLLER_OPTIONS, ...options };
    // The settings refuse such a lease already; options passed here directly are held to the
    // same rule, before anything is opened (a lease never acted on would leave no leader).
    const leaseProblem = leaseTtlProblem(full.leaseTtlMs, full.tickMs);
    if (leaseProblem) throw new ConfigValueError("leaseTtlMs", "the controller's options", leaseProblem);
    const names = controlPlaneNames(full.cluster);
    const registry = await NodeRegistry.open(nc, names, { heartbeatTtlMs: full.heartbeatTtlMs });
    const controller = new Controller(
      registry,
      new ShardPlanner(await openShardMap(nc, names), { shardCount: full.shardCount }, log),
      new LeaderLease(
        await openLease(nc, names),
        full.replicaId,
        full.leaseTtlMs,
        DEFAULT_LEASE_TIMING.marginMs,
        log,
      ),
      full,
      log,
      full.experts > 0
        ? new ExpertPlanner(
            nc,
            names,
            await openExpertMap(nc, names),
            { experts: full.experts, windowMs: full.expertWindowMs },
            log,
          )
        : undefined,
      metrics,
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

  /** One round: the lease, then (as leader) whatever the planners find to write. */
  async tick(): Promise<void> {
    if (this.running) return;
    this.running = true;
    let failed = false;
    try {
      const wasLeader = this.lease.isLeader();
      const leader = await this.lease.tick();
      if (leader && !wasLeader)
        this.log.info(
          { replica: this.options.replicaId, fencingToken: this.lease.fencingToken },
          "became leader",
        );
      if (!leader) return;
      // Membership as the leader acts on it: a node that looks dead is read again (the
      // watch may lag), and none counts dead while no heartbeat lands at all (NATS is down).
      const alive = await this.registry.aliveConfirmed();
      const token = this.lease.fencingToken;
      if (token === undefined) return; // the lease ran short while reading: do not act
      this.metrics?.clusterNodes(alive.length);
      if (this.experts) {
        const version = await this.experts.maybeReplan(alive, token);
        if (version !== undefined) this.log.info({ version }, "expert placement written");
        if (version !== undefined && this.experts.loadShares)
          this.metrics?.expertLoadShares(this.experts.loadShares);
      }
      const version = await this.shards.maybeReplan(alive, token);
      if (this.shards.version !== undefined) this.metrics?.placementVersion(this.shards.version);
      if (version !== undefined) {
        this.written++;
        this.log.info(
          { version, nodes: alive.filter((n) => !n.draining).map((n) => n.id) },
          "placement written",
        );
      }
    } catch (error) {
      failed = true;
      this.log.warn({ err: (error as Error).message }, "control-plane tick failed");
    } finally {
      this.running = false;
      if (!failed) this.lastTickAt = Date.now();
    }
  }

  async stop(): Promise<void> {
    this.experts?.stop();
    this.registry.close();
    clearTimeout(this.timer);
    this.timer = undefined;
    // Best effort: a stopping replica whose NATS is gone cannot release; the lease then expires.
    await this.lease.release().catch(() => undefined);
  }
}
