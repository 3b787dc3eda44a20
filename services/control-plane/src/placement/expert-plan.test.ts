import { describe, expect, it } from "vitest";
import { chainPlacement } from "./chain-placement.ts";
import { planExperts, rebalance } from "./expert-plan.ts";
import {
  placementQuality,
  replicaMoves,
  type ExpertPlacement,
  type ExpertWorker,
} from "./expert-placement.ts";
import { balancedShares, evenShares } from "./replica-shares.ts";

const zipf = (n: number, s = 1.1) =>
  Array.from({ length: n }, (_, i) => Math.round(100000 / Math.pow(i + 1, s)));
const workers = (n: number, slots: number): ExpertWorker[] =>
  Array.from({ length: n }, (_, i) => ({ id: `w${String(i).padStart(3, "0")}`, slots }));
const ids = (ws: ExpertWorker[]) => ws.map((w) => w.id);

function expectValid(
  plan: { placement: ExpertPlacement; shares: Map<number, number[]> },
  ws: ExpertWorker[],
  experts: number,
) {
  expect(plan.placement.size).toBe(experts);
  const used = new Map<string, number>();
  for (const [expert, holders] of plan.placement) {
    expect(holders.length).toBeGreaterThan(0);
    expect(new Set(holders).size).toBe(holders.length);
    const shares = plan.shares.get(expert)!;
    expect(shares).toHaveLength(holders.length);
    expect(shares.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 9);
    expect(shares.every((s) => s >= 0)).toBe(true);
    for (const id of holders) used.set(id, (used.get(id) ?? 0) + 1);
  }
  for (const w of ws) expect(used.get(w.id) ?? 0).toBeLessThanOrEqual(w.slots);
}

describe("replica shares", () => {
  it("split an expert's tokens so that no worker carries more than it must", () => {
    // Expert 0 (load 90) on a and b; expert 1 (load 10) on b only: the best is 50 / 50.
    const placement: ExpertPlacement = new Map([
      [0, ["a", "b"]],
      [1, ["b"]],
    ]);
    const loads = [90, 10];
    expect(placementQuality(loads, placement, ["a", "b"], evenShares(placement)).workerLoads).toEqual([
      45, 55,
    ]);
    const shares = balancedShares(loads, placement, ["a", "b"]);
    const quality = placementQuality(loads, placement, ["a", "b"], shares);
    expect(quality.workerLoads[0]).toBeCloseTo(50, 2);
    expect(quality.workerLoads[1]).toBeCloseTo(50, 2);
  });

  it("cannot beat the structure: an expert alone on its workers keeps its load there", () => {
    const placement: ExpertPlacement = new Map([
      [0, ["a"]],
      [1, ["b"]],
    ]);
    const quality = placementQuality(
      [30, 10],
      placement,
      ["a", "b"],
      balancedShares([30, 10], placement, ["a", "b"]),
    );
    expect(quality.maxMeanLoad).toBeCloseTo(1.5, 9);
  });
});

describe("chain placement (split routing)", () => {
  it("loads every worker with exactly the mean, within slots and the replica budget", () => {
    for (const [experts, count] of [
      [64, 8],
      [64, 256],
      [256, 256],
    ]) {
      const ws = workers(count, Math.ceil((2 * (experts + count)) / count));
      const plan = chainPlacement(zipf(experts), ws, experts + count)!;
      expect(plan).toBeDefined();
      expectValid(plan, ws, experts);
      expect(placementQuality(zipf(experts), plan.placement, ids(ws), plan.shares).maxMeanLoad).toBeCloseTo(
        1,
        6,
      );
      expect([...plan.placement.values()].reduce((a, h) => a + h.length, 0)).toBeLessThanOrEqual(
        experts + count,
      );
    }
  });

  it("gives up (undefined) when two slots per worker cannot hold the light experts", () => {
    expect(chainPlacement(zipf(64), workers(64, 1), 128)).toBeUndefined();
  });
});

describe("expert plan", () => {
  it("reaches max/mean ≤ 1.05 with one redundant replica per worker, where even splits cannot", () => {
    const loads = zipf(64);
    const ws = workers(256, 3);
    const plan = planExperts(loads, ws);
    expectValid(plan, ws, 64);
    expect(plan.maxMeanLoad).toBeLessThanOrEqual(1.05);
    expect(
      placementQuality(loads, plan.placement, ids(ws), evenShares(plan.placement)).maxMeanLoad,
    ).toBeGreaterThan(1.05);
  });

  it("is deterministic and moves few replicas when the load barely changes", () => {
    const loads = zipf(64);
    const ws = workers(64, 4);
    const a = planExperts(loads, ws);
    expect([...planExperts(loads, ws).placement]).toEqual([...a.placement]);
    const noisy = loads.map((l, i) => l + (i % 5) - 2);
    // Re-balancing the shares alone absorbs the noise: no replica needs to move.
    expect(rebalance(noisy, a.placement, ids(ws)).maxMeanLoad).toBeLessThan(1.01);
    const b = planExperts(noisy, ws, a.placement);
    expect(replicaMoves(a.placement, b.placement)).toBeLessThanOrEqual(8);
  });

  it("falls back to even-split packing when slots are too tight for the chain", () => {
    const ws = workers(8, 9);
    expect(chainPlacement(zipf(64), ws, 72)).toBeUndefined();
    const plan = planExperts(zipf(64), ws, undefined, { redundantReplicas: 8 });
    expectValid(plan, ws, 64);
    expect(plan.maxMeanLoad).toBeLessThan(1.1);
  });
});
