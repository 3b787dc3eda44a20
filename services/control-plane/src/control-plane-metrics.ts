/**
 * A control-plane replica's Prometheus metrics. Leadership is read at scrape time; what
 * the leader plans (the shard map's version, the live nodes, each node's share of the
 * expert load) is reported by its ticks. A replica that is not the leader keeps what it
 * last saw as leader: dashboards read these where tandem_control_plane_leader is 1, or
 * take their max over replicas.
 */
import { Gauge, type Registry } from "@tandem/common/metrics";

export class ControlPlaneMetrics {
  private readonly mapVersion: Gauge;
  private readonly nodes: Gauge;
  private readonly expertShare: Gauge<"node">;

  constructor(registry: Registry, isLeader: () => boolean) {
    const registers = [registry];
    new Gauge({
      name: "tandem_control_plane_leader",
      help: "1 while this replica holds the leader lease, else 0",
      registers,
      collect() {
        this.set(isLeader() ? 1 : 0);
      },
    });
    this.mapVersion = new Gauge({
      name: "tandem_placement_map_version",
      help: "Version of the shard placement map, as this replica last read or wrote it as leader",
      registers,
    });
    this.nodes = new Gauge({
      name: "tandem_cluster_nodes",
      help: "Live cloud workers (draining ones included), as the leader last counted them",
      registers,
    });
    this.expertShare = new Gauge({
      name: "tandem_expert_load_share",
      help: "Share of the measured expert load each node is expected to serve under the expert map written last",
      labelNames: ["node"],
      registers,
    });
  }

  placementVersion(version: number): void {
    this.mapVersion.set(version);
  }

  clusterNodes(count: number): void {
    this.nodes.set(count);
  }

  /** A new expert map: node id → its share of the load (the shares sum to 1). */
  expertLoadShares(shares: ReadonlyMap<string, number>): void {
    // Nodes the new map leaves out must not keep their old share.
    this.expertShare.reset();
    for (const [node, share] of shares) this.expertShare.set({ node }, share);
  }
}
