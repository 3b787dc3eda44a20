import { ConfigErrors, loadConfig } from "@tandem/common";
import { describe, expect, it } from "vitest";
import { CONTROL_CONFIG_SCHEMA, CONTROL_ENV_PREFIX } from "./control-config.ts";

const load = (overrides: Record<string, unknown>) =>
  loadConfig(CONTROL_CONFIG_SCHEMA, { env: {}, envPrefix: CONTROL_ENV_PREFIX, overrides });

const messagesOf = (run: () => unknown): string[] => {
  try {
    run();
  } catch (error) {
    if (error instanceof ConfigErrors) return error.errors.map((e) => e.message);
    throw error;
  }
  return [];
};

describe("control-plane configuration", () => {
  it("takes the defaults, and a lease that outlasts its margin and a tick", () => {
    expect(load({}).leaseTtlMs).toBe(3000);
    expect(load({ leaseTtlMs: "1000", tickMs: "100" }).leaseTtlMs).toBe(1000);
  });

  it("refuses a lease too short to be acted on, naming leaseTtlMs and where it came from", () => {
    // The lease's margin is 500 ms: a lease no longer is won every tick and never acted on.
    expect(messagesOf(() => load({ leaseTtlMs: "500" }))).toEqual([
      "leaseTtlMs: must be ≥ 501, got 500 (from the command line)",
    ]);
    // Nor one that lapses between two renewals (tickMs 500 by default).
    expect(messagesOf(() => load({ leaseTtlMs: "800" }))).toEqual([
      "leaseTtlMs: must be > 1000 (the lease's 500 ms margin + tickMs), got 800 (from the command line)",
    ]);
    // With the margin it must also outlast the interval between renewals.
    expect(messagesOf(() => load({ leaseTtlMs: "900", tickMs: "400" }))).toEqual([
      "leaseTtlMs: must be > 900 (the lease's 500 ms margin + tickMs), got 900 (from the command line)",
    ]);
  });
});
