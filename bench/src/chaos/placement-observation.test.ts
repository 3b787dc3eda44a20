import { describe, expect, it } from "vitest";
import { mapsWritten, type ObservedMap } from "./placement-observation.ts";

const map = (version: number, epoch = "a"): ObservedMap => ({ at: 0, version, epoch, owners: new Set() });

describe("mapsWritten", () => {
  it("counts version steps, so a map the watcher skipped still counts", () => {
    expect(mapsWritten({ initial: map(3), maps: [] })).toBe(0);
    expect(mapsWritten({ initial: map(3), maps: [map(4), map(6)] })).toBe(3);
  });

  it("counts a map of a new epoch (versions start again) as one", () => {
    expect(mapsWritten({ initial: map(7), maps: [map(1, "b"), map(2, "b")] })).toBe(2);
    expect(mapsWritten({ maps: [map(5)] })).toBe(1);
  });
});
