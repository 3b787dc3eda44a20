/**
 * The order a prefetch gives up loaded experts in: the layer a step reaches last first.
 */
import { describe, expect, it } from "vitest";
import { evictionOrder, layersOf } from "./expert-eviction.ts";

describe("the eviction order of a prefetch", () => {
  const layers = [3, 4, 5, 6];

  it("gives up, for layer 5, the layer just run first, then the one before, and the next layer's last", () => {
    const leastRecentFirst = ["6:0", "3:1", "4:2", "4:7", "5:1", "6:3"];
    expect(evictionOrder(leastRecentFirst, 5, layers)).toEqual(["5:1", "4:2", "4:7", "3:1", "6:0", "6:3"]);
  });

  it("keeps the least recently used first among one layer's experts, and wraps around the segment's layers", () => {
    expect(evictionOrder(["3:2", "3:0", "6:1"], 3, layers)).toEqual(["3:2", "3:0", "6:1"]);
    expect(evictionOrder(["4:0", "3:0", "6:1"], 3, layers)).toEqual(["3:0", "6:1", "4:0"]);
  });

  it("reads the layers of a store from its keys, in the order a step runs them", () => {
    expect(layersOf(["10:1", "9:0", "10:0", "2:5"])).toEqual([2, 9, 10]);
  });
});
