/**
 * The fuzz benchmark's guarantee as a test: 1,000 mutated Escalate streams and Generate
 * requests (a fixed seed, so a failure reproduces with `tandem bench fuzz --cases 1000
 * --seed 1`) against a running edge and worker each end with a status; nothing crashes,
 * nothing ends INTERNAL (bytes that are no protobuf message are the caller's mistake too)
 * and no generation keeps its device session.
 */
import { describe, expect, it } from "vitest";
import { BENCHMARKS } from "@tandem/bench";

describe("fuzzed calls", () => {
  it("each end with a status, crash nothing, and leave no session behind", async () => {
    const fuzz = await BENCHMARKS.fuzz.load();
    const result = (await fuzz({ smoke: false, options: { cases: 1000, seed: 1 } })) as {
      cases: number;
      crashes: number;
      crash_samples: string[];
      unanswered: number;
      statuses: Record<string, number>;
      statuses_by_kind: Record<string, Record<string, number>>;
      internal_details: Record<string, number>;
      leaked_edge_sessions: number;
    };
    expect(result.cases).toBe(1000);
    expect(result.crashes, result.crash_samples.join("\n")).toBe(0);
    expect(result.unanswered).toBe(0);
    expect(result.leaked_edge_sessions).toBe(0);
    // Refusals name the caller's mistake, bytes that are not a protobuf message at all
    // included: no case is a server-side fault.
    expect(Object.keys(result.statuses).sort()).toEqual(
      expect.arrayContaining(["INVALID_ARGUMENT", "FAILED_PRECONDITION", "OK"]),
    );
    for (const code of Object.keys(result.statuses))
      expect(["OK", "INVALID_ARGUMENT", "FAILED_PRECONDITION", "INTERNAL", "CLIENT_REFUSED"]).toContain(code);
    expect(result.statuses.INTERNAL ?? 0, JSON.stringify(result.internal_details)).toBe(0);
    expect(result.internal_details).toEqual({});
    for (const kind of ["escalate-bytes", "generate-bytes"])
      expect(result.statuses_by_kind[kind]?.INVALID_ARGUMENT, kind).toBeGreaterThan(0);
  }, 120_000);
});
