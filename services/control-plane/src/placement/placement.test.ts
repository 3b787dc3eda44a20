import { describe, expect, it } from "vitest";
import {
  greedyBaseline,
  placeExperts,
  placementQuality,
  replicaCounts,
  replicaMoves,
  shouldReplan,
  type ExpertWorker,
} from "./expert-placement.ts";
import { sessionShard } from "@tandem/cluster";
import { placeShards, shardMoves, type ShardNode } from "./shard-placement.ts";

const nodes = (n: number, weight = (i: number) => (i % 3 === 0 ? 2 : 1)): ShardNode[] =>
  Array.from({ length: n }, (_, i) => ({ id: `n${i}`, weight: weight(i) }));

function counts(map: Map<number, string>): Map<string, number> {
  const out = new Map<string, number>();
  for (const node of map.values()) out.set(node, (out.get(node) ?? 0) + 1);
  return out;
}

describe("KV shard placement", () => {
  it("places every shard, within the load bound of each node's weighted fair share", () => {
    for (const n of [3, 16, 100]) {
      const ns = nodes(n);
      const map = placeShards(2048, ns);
      expect(map.size).toBe(2048);
      const total = ns.reduce((a, b) => a + b.weight, 0);
      for (const node of ns)
        expect(counts(map).get(node.id) ?? 0).toBeLessThanOrEqual(
          Math.ceil(((2048 * node.weight) / total) * 1.25),
        );
    }
  });

  it("is deterministic and independent of the order nodes are listed in", () => {
    const ns = nodes(20);
    expect([...placeShards(1024, ns)]).toEqual([...placeShards(1024, [...ns].reverse())]);
  });

  it("moves only the lost node's shards when a node dies", () => {
    for (const n of [4, 32, 128]) {
      const ns = nodes(n);
      const before = placeShards(4096, ns);
      const lost = ns[n >> 1];
      const after = placeShards(
        4096,
        ns.filter((x) => x !== lost),
        before,
      );
      const own = counts(before).get(lost.id)!;
      expect([...after.values()].includes(lost.id)).toBe(false);
      expect(shardMoves(before, after)).toBeLessThanOrEqual(Math.ceil(own * 1.1));
    }
  });

  it("gives a joining node about its fair share, taken from the others", () => {
    const ns = nodes(16, () => 1);
    const before = placeShards(4096, ns);
    const after = placeShards(4096, [...ns, { id: "new", weight: 1 }], before);
    const fair = 4096 / 17;
    expect(counts(after).get("new")).toBeGreaterThanOrEqual(Math.floor(fair));
    expect(shardMoves(before, after)).toBeLessThanOrEqual(Math.ceil(fair * 1.1));
  });

  it("hashes a session to the same shard every time", () => {
    expect(sessionShard("abc", 256)).toBe(sessionShard("abc", 256));
    const spread = new Set(Array.from({ length: 1000 }, (_, i) => sessionShard(`s${i}`, 16)));
    expect(spread.size).toBe(16);
  });
});

function zipf(n: number, s = 1.1): number[] {
  return Array.from({ length: n }, (_, i) => Math.round(100000 / Math.pow(i + 1, s)));
}

describe("MoE expert placement", () => {
  const workers = (n: number, slots: number): ExpertWorker[] =>
    Array.from({ length: n }, (_, i) => ({ id: `w${String(i).padStart(2, "0")}`, slots }));

  it("gives hot experts more replicas, every expert at least one", () => {
    const c = replicaCounts(zipf(16), 24, 8);
    expect(c.reduce((a, b) => a + b, 0)).toBe(24);
    expect(c.every((x) => x >= 1)).toBe(true);
    expect(c[0]).toBeGreaterThan(c[15]);
  });

  it("balances Zipf load far better than the greedy baseline, never exceeding slots", () => {
    const loads = zipf(64);
    const ws = workers(8, 18);
    const placement = placeExperts(loads, ws);
    const ids = ws.map((w) => w.id);
    const quality = placementQuality(loads, placement, ids);
    expect(quality.maxMeanLoad).toBeLessThan(1.05);
    expect(placementQuality(loads, greedyBaseline(loads, ws), ids).maxMeanLoad).toBeGreaterThan(1.5);
    const used = new Map<string, number>();
    for (const holders of placement.values()) {
      expect(new Set(holders).size).toBe(holders.length); // no two replicas of an expert on one worker
      for (const id of holders) used.set(id, (used.get(id) ?? 0) + 1);
    }
    for (const w of ws) expect(used.get(w.id) ?? 0).toBeLessThanOrEqual(w.slots);
    expect(placement.size).toBe(64);
  });

  it("is deterministic and moves little when the load barely changes", () => {
    const loads = zipf(64);
    const ws = workers(8, 18);
    const a = placeExperts(loads, ws);
    expect([...placeExperts(loads, ws)]).toEqual([...a]);
    const noisy = loads.map((l, i) => l + (i % 5) - 2);
    const b = placeExperts(noisy, ws, a);
    expect(replicaMoves(a, b)).toBeLessThan(10);
  });

  it("re-plans only when the imbalance is real (hysteresis)", () => {
    expect(shouldReplan(1.02, 1.0)).toBe(false);
    expect(shouldReplan(1.2, 1.19)).toBe(false);
    expect(shouldReplan(1.2, 1.02)).toBe(true);
  });

  it("refuses when the workers cannot hold every expert", () => {
    expect(() => placeExperts(zipf(10), workers(2, 4))).toThrow(/need 10 slots/);
  });
});
