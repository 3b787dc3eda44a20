/**
 * The control plane's expert-load series: after the leader writes an expert map, each
 * node's share of the measured load under it (real NATS, real planner), summing to 1;
 * a node a newer map leaves out has no share left.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectNats, controlPlaneNames, openExpertMap, type NodeRecord } from "@tandem/cluster";
import { Registry } from "@tandem/common/metrics";
import { nodeRecord, parseMetrics, startNatsServer, until, type TestNatsServer } from "@tandem/testkit";
import type { NatsConnection } from "@nats-io/transport-node";
import { ControlPlaneMetrics } from "./control-plane-metrics.ts";
import { ExpertPlanner } from "./expert-planner.ts";

let server: TestNatsServer;
let nc: NatsConnection;
beforeAll(async () => {
  server = await startNatsServer();
  nc = await connectNats(server.url);
});
afterAll(async () => {
  await nc?.close();
  await server?.stop();
});

const node = (id: string): NodeRecord => ({ ...nodeRecord(id, { expertSlots: 4 }), heartbeatAt: Date.now() });

describe("ControlPlaneMetrics", () => {
  it("reports each node's share of the expert load under the map the leader wrote", async () => {
    const names = controlPlaneNames(`metrics${Date.now()}`);
    const planner = new ExpertPlanner(nc, names, await openExpertMap(nc, names), { experts: 4, windowMs: 1 });
    const registry = new Registry();
    const metrics = new ControlPlaneMetrics(registry, () => true);
    const share = async (id: string) =>
      parseMetrics(await registry.metrics()).value("tandem_expert_load_share", { node: id });
    try {
      // Expert 0 carries most of the load.
      await until("the planner to count the load", async () => {
        nc.publish(names.loadSubject("w1"), JSON.stringify({ nodeId: "w1", counts: [70, 10, 10, 10] }));
        await nc.flush();
        return (await planner.maybeReplan([node("w1"), node("w2")], 1)) !== undefined;
      });
      metrics.expertLoadShares(planner.loadShares!);
      const [w1, w2] = [await share("w1"), await share("w2")];
      expect(w1! + w2!).toBeCloseTo(1, 9);
      expect(w1).toBeGreaterThan(0);
      expect(w2).toBeGreaterThan(0);
      expect(parseMetrics(await registry.metrics()).value("tandem_control_plane_leader")).toBe(1);

      metrics.expertLoadShares(new Map([["w1", 1]]));
      expect(await share("w1")).toBe(1);
      expect(await share("w2")).toBeUndefined();
    } finally {
      planner.stop();
    }
  });
});
