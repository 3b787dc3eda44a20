import { describe, expect, it } from "vitest";
import type { GenerationRecord, TimedToken } from "./generation-record.ts";
import { recoveryAfter, scoreGeneration, type Reference } from "./scoring.ts";

const CLOUD = "TOKEN_SOURCE_CLOUD";
const EDGE = "TOKEN_SOURCE_EDGE";
const FALLBACK = "TOKEN_SOURCE_EDGE_FALLBACK";

/** The uninterrupted output: ids 10, 11, … at positions 5, 6, … */
const reference = (count: number): Reference => ({
  ids: Array.from({ length: count }, (_, i) => 10 + i),
  positions: Array.from({ length: count }, (_, i) => 5 + i),
});

/** A record of tokens given as [index into the reference, source, arrival ms]. */
function record(tokens: [number, string, number][], options: { start?: number; error?: string } = {}) {
  const timed: TimedToken[] = tokens.map(([i, source, at]) => ({ id: 10 + i, position: 5 + i, source, at }));
  const start = options.start ?? 0;
  const end = timed.length ? timed[timed.length - 1].at + 1 : start + 1;
  return {
    prompt: "p",
    startedAt: start,
    endedAt: end,
    tokens: timed,
    error: options.error,
  } as GenerationRecord;
}

describe("scoreGeneration", () => {
  it("counts nothing for the uninterrupted output", () => {
    const got = record([0, 1, 2].map((i) => [i, CLOUD, i] as [number, string, number]));
    expect(scoreGeneration(reference(3), got, "MODE_CLOUD_ONLY")).toEqual({
      lost: 0,
      repeated: 0,
      different: false,
      fallback: 0,
    });
  });

  it("counts a skipped position as lost and a position sent twice as repeated", () => {
    const skipped = record([
      [0, CLOUD, 0],
      [2, CLOUD, 1],
    ]);
    expect(scoreGeneration(reference(3), skipped, "MODE_CLOUD_ONLY")).toMatchObject({
      lost: 1,
      repeated: 0,
      different: true,
    });
    const twice = record([
      [0, CLOUD, 0],
      [1, CLOUD, 1],
      [1, CLOUD, 2],
      [2, CLOUD, 3],
    ]);
    expect(scoreGeneration(reference(3), twice, "MODE_CLOUD_ONLY")).toMatchObject({
      lost: 0,
      repeated: 1,
      different: true,
    });
  });

  it("counts positions past the uninterrupted output as repeated, and a cut-short output as lost", () => {
    const longer = record([0, 1, 2, 3].map((i) => [i, CLOUD, i] as [number, string, number]));
    expect(scoreGeneration(reference(3), longer, "MODE_CLOUD_ONLY")).toMatchObject({ repeated: 1, lost: 0 });
    const cut = record([[0, CLOUD, 0]], { error: "UNAVAILABLE: gone" });
    expect(scoreGeneration(reference(3), cut, "MODE_CLOUD_ONLY")).toMatchObject({ lost: 2, different: true });
  });

  it("counts edge answers as fallback in cloud-only mode, and only EDGE_FALLBACK in auto mode", () => {
    const got = record([
      [0, EDGE, 0],
      [1, FALLBACK, 1],
      [2, CLOUD, 2],
    ]);
    expect(scoreGeneration(reference(3), got, "MODE_CLOUD_ONLY").fallback).toBe(2);
    expect(scoreGeneration(reference(3), got, "MODE_AUTO").fallback).toBe(1);
  });

  it("tells a different token at the right position", () => {
    const got = record([0, 1, 2].map((i) => [i, CLOUD, i] as [number, string, number]));
    got.tokens[1] = { ...got.tokens[1], id: 99 };
    expect(scoreGeneration(reference(3), got, "MODE_CLOUD_ONLY")).toMatchObject({
      different: true,
      lost: 0,
      repeated: 0,
    });
  });
});

describe("recoveryAfter", () => {
  it("is the gap to the next cloud token when the fault disturbs nothing", () => {
    const run = record([
      [0, CLOUD, 100],
      [1, CLOUD, 105],
      [2, CLOUD, 110],
    ]);
    expect(recoveryAfter([run], 101, "MODE_CLOUD_ONLY", 500)).toEqual({ ms: 4, recovered: true });
  });

  it("ends at the cloud token that ends a stall", () => {
    const run = record([
      [0, CLOUD, 100],
      [1, CLOUD, 2100],
      [2, CLOUD, 2105],
    ]);
    expect(recoveryAfter([run], 101, "MODE_CLOUD_ONLY", 500)).toEqual({ ms: 1999, recovered: true });
  });

  it("waits for a cloud token after the last fallback, across generations", () => {
    const first = record([
      [0, CLOUD, 100],
      [1, FALLBACK, 2100],
      [2, FALLBACK, 2105],
    ]);
    const second = record(
      [
        [0, CLOUD, 2120],
        [1, CLOUD, 2125],
      ],
      { start: 2107 },
    );
    expect(recoveryAfter([first, second], 101, "MODE_CLOUD_ONLY", 500)).toEqual({
      ms: 2019,
      recovered: true,
    });
  });

  it("has not recovered when the last generation fails", () => {
    const first = record([[0, CLOUD, 100]]);
    const failed = record([[0, CLOUD, 120]], { start: 110, error: "UNAVAILABLE: gone" });
    const recovery = recoveryAfter([first, failed], 101, "MODE_CLOUD_ONLY", 500);
    expect(recovery.recovered).toBe(false);
    expect(recovery.ms).toBe(20);
  });
});
