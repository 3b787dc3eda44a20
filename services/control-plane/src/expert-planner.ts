/**
 * Expert placement from measured load: workers publish per-expert activation counts on
 * their load subjects; the planner sums a window of them and, when the leader asks,
 * plans a placement with replica shares (expert-plan.ts, sticky to the current one). It
 * writes a new map only when the current one has become clearly unbalanced under the
 * latest window (hysteresis), so the map does not flap on noise; re-balancing the shares
 * is tried before moving replicas.
 */
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import {
  EXPERT_LOAD_REPORT_SCHEMA,
  nextVersion,
  type ControlPlaneNames,
  type ExpertMapStore,
  type NodeRecord,
} from "@tandem/cluster";
import type { Logger } from "@tandem/common";
import { nextExpertPlan, type ExpertPlan } from "./placement/expert-plan.ts";
import { placementQuality, type ExpertPlacement } from "./placement/expert-placement.ts";
import { evenShares } from "./placement/replica-shares.ts";

export interface ExpertPlannerOptions {
  experts: number;
  /** Length of a load window. */
  windowMs: number;
}

export class ExpertPlanner {
  private window: number[];
  private windowStart = Date.now();
  private readonly subscription: Subscription;
  /** Nodes already warned about: a misconfigured worker is named once, not every heartbeat. */
  private readonly warned = new Set<string>();
  /** Each node's share of the load under the map written last (for the metrics). */
  loadShares?: Map<string, number>;

  constructor(
    nc: NatsConnection,
    names: ControlPlaneNames,
    private readonly store: ExpertMapStore,
    private readonly options: ExpertPlannerOptions,
    private readonly log?: Logger,
  ) {
    this.window = new Array<number>(options.experts).fill(0);
    const subscription = nc.subscribe(names.loadSubject("*"));
    this.subscription = subscription;
    void (async () => {
      for await (const message of subscription) {
        // A report that is not JSON or fails the schema carries nothing the plan could use.
        let json: unknown;
        try {
          json = message.json();
        } catch {
          continue;
        }
        const parsed = EXPERT_LOAD_REPORT_SCHEMA.safeParse(json);
        if (!parsed.success) continue;
        const report = parsed.data;
        if (report.counts.length === options.experts) {
          report.counts.forEach((c, e) => (this.window[e] += c));
        } else if (report.counts.length > 0 && !this.warned.has(report.nodeId)) {
          // A worker counting a different number of experts: the control plane's `experts`
          // or the worker's split does not match the model. Its counts cannot be placed.
          this.warned.add(report.nodeId);
          this.log?.warn(
            { node: report.nodeId, counts: report.counts.length, experts: options.experts },
            "expert counts ignored: their length differs from the configured experts",
          );
        }
      }
    })();
  }

  /** At the end of a window (leader only): re-plan if needed. Returns the version written, if any. */
  async maybeReplan(nodes: NodeRecord[], fencingToken: number): Promise<number | undefined> {
    const now = Date.now();
    if (now - this.windowStart < this.options.windowMs) return undefined;
    const loads = this.window;
    this.window = new Array<number>(this.options.experts).fill(0);
    this.windowStart = now;
    const hosts = nodes.filter((n) => n.expertSlots > 0 && !n.draining);
    if (hosts.length === 0 || loads.every((l) => l === 0)) return undefined;
    if (hosts.reduce((s, n) => s + n.expertSlots, 0) < this.options.experts) return undefined;
    const current = await this.store.readForUpdate((error) =>
      this.log?.warn({ err: error.message }, "invalid expert map: planning afresh over it"),
    );
    // A map that fails its schema counts as no map: it is planned afresh and overwritten.
    const previousMap = current?.record;
    const ids = hosts.map((n) => n.id).sort();
    const workers = hosts.map((n) => ({ id: n.id, slots: n.expertSlots }));
    const previous: ExpertPlacement | undefined = previousMap
      ? new Map(
          Object.entries(previousMap.experts).map(([e, w]) => [
            Number(e),
            w.filter((id) => ids.includes(id)),
          ]),
        )
      : undefined;
    const membershipChanged =
      !previousMap || Object.values(previousMap.experts).some((w) => w.some((id) => !ids.includes(id)));
    const held: ExpertPlan | undefined =
      previousMap && previous && !membershipChanged
        ? {
            placement: previous,
            shares: previousMap.shares
              ? new Map(Object.entries(previousMap.shares).map(([e, s]) => [Number(e), s]))
              : evenShares(previous),
            maxMeanLoad: previousMap.maxMeanLoad,
          }
        : undefined;
    const { plan, change } = nextExpertPlan(loads, workers, held);
    if (change === "none") return undefined;
    const { version, epoch } = nextVersion(current);
    const written = await this.store.write(
      {
        version,
        epoch,
        fencingToken,
        experts: Object.fromEntries([...plan.placement].map(([e, w]) => [String(e), w])),
        shares: Object.fromEntries([...plan.shares].map(([e, s]) => [String(e), s])),
        // Where other workers call a host's experts: its Experts service.
        endpoints: Object.fromEntries(hosts.map((n) => [n.id, n.expertEndpoint ?? n.endpoint])),
        loads,
        maxMeanLoad: plan.maxMeanLoad,
        writtenAt: now,
      },
      current?.revision,
    );
    if (written === undefined) return undefined;
    const total = loads.reduce((a, b) => a + b, 0);
    const { workerLoads } = placementQuality(loads, plan.placement, ids, plan.shares);
    this.loadShares = new Map(ids.map((id, i) => [id, workerLoads[i] / total]));
    return version;
  }

  stop(): void {
    this.subscription.unsubscribe();
  }
}
