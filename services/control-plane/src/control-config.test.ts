import { ConfigValueError, createLogger, loadConfig } from "@tandem/common";
import { describe, expect, it } from "vitest";
import { CONTROL_CONFIG_SCHEMA, CONTROL_ENV_PREFIX } from "./control-config.ts";
import { Controller } from "./controller.ts";

const load = (overrides: Record<string, unknown>) =>
  loadConfig(CONTROL_CONFIG_SCHEMA, { env: {}, envPrefix: CONTROL_ENV_PREFIX, overrides });

/** ConfigErrors with exactly this message: one line per problem, so one line is one problem. */
const refused = (message: string) => expect.objectContaining({ name: "ConfigErrors", message });

describe("control-plane configuration", () => {
  it("takes the defaults, and a lease that outlasts its margin and a tick", () => {
    expect(load({}).leaseTtlMs).toBe(3000);
    expect(load({ leaseTtlMs: "1000", tickMs: "100" }).leaseTtlMs).toBe(1000);
  });

  it("refuses a lease too short to be acted on, naming leaseTtlMs and where it came from", () => {
    // The lease's margin is 500 ms: a lease no longer is won every tick and never acted on.
    expect(() => load({ leaseTtlMs: "500" })).toThrow(
      refused("leaseTtlMs: must be ≥ 501, got 500 (from the command line)"),
    );
    // Nor one that lapses between two renewals (tickMs 500 by default).
    expect(() => load({ leaseTtlMs: "800" })).toThrow(
      refused(
        "leaseTtlMs: must be > 1000 (the lease's 500 ms margin + tickMs), got 800 (from the command line)",
      ),
    );
    // With the margin it must also outlast the interval between renewals.
    expect(() => load({ leaseTtlMs: "900", tickMs: "400" })).toThrow(
      refused(
        "leaseTtlMs: must be > 900 (the lease's 500 ms margin + tickMs), got 900 (from the command line)",
      ),
    );
  });

  it("is the rule Controller.start holds options given to it directly, before it touches NATS", async () => {
    // No NATS connection: the options are refused before one would be used.
    const start = (options: { leaseTtlMs: number; tickMs?: number }) =>
      Controller.start(
        {} as Parameters<typeof Controller.start>[0],
        { cluster: "c", replicaId: "r", ...options },
        createLogger("test"),
      );
    const refusedOption = (message: string) =>
      new ConfigValueError("leaseTtlMs", "the controller's options", message);
    await expect(start({ leaseTtlMs: 800 })).rejects.toThrow(
      refusedOption("must be > 1000 (the lease's 500 ms margin + tickMs), got 800"),
    );
    await expect(start({ leaseTtlMs: 900, tickMs: 400 })).rejects.toThrow(
      refusedOption("must be > 900 (the lease's 500 ms margin + tickMs), got 900"),
    );
    // Within the margin alone too (the settings refuse that with their minimum).
    await expect(start({ leaseTtlMs: 400, tickMs: 50 })).rejects.toThrow(
      refusedOption("must be > 550 (the lease's 500 ms margin + tickMs), got 400"),
    );
  });
});
