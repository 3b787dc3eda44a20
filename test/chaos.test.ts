/**
 * `tandem bench chaos --smoke` as a user runs it: a local cluster of real processes, one
 * run of every fault, the JSON last. Checked: its shape, that every fault ran as asked,
 * that its figures are consistent with one another, that nothing it started is left
 * running — and what must hold whatever the timing: no token lost or repeated under any
 * fault, no batch job lost, and generations across the faults that leave every worker
 * running (the leader killed, NATS restarted, one of three NATS servers killed) exactly
 * the uninterrupted ones. Whether a killed worker's session reaches its new owner within
 * the edge's deadline is a matter of timing: the benchmark reports it, no test asserts it
 * (this machine is shared).
 */
import { randomUUID } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { runCli } from "@tandem/testkit";

const GENERATION_FAULTS = ["worker_kill", "leader_kill", "nats_restart", "nats_server_kill"];

interface GenerationFault {
  runs: number;
  tokens_lost: number;
  tokens_repeated: number;
  outputs_different: number;
  fallback_tokens_p95: number;
  recovery_ms_p50: number;
  recovery_ms_p95: number;
  fallback_tokens: number;
  leader_changes: number;
  placement_changes: number;
  maps_without_live_worker: number;
  generations: number;
  tokens: number;
  per_run: { fault_token: number; target: string; generations: number; recovery_ms: number }[];
}

interface BatchFault {
  runs: number;
  jobs: number;
  jobs_lost: number;
  per_run: unknown[];
}

/** Processes whose environment carries `marker`: what the benchmark started and left behind. */
function processesMarked(marker: string): string[] {
  const found: string[] = [];
  for (const pid of readdirSync("/proc").filter((name) => /^\d+$/.test(name))) {
    try {
      if (readFileSync(`/proc/${pid}/environ`, "latin1").includes(marker))
        found.push(readFileSync(`/proc/${pid}/cmdline`, "latin1").replaceAll("\0", " "));
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return found;
}

describe("tandem bench chaos --smoke", () => {
  it("runs every fault once on a local cluster and reports consistent figures, leaving no process behind", async () => {
    const marker = `TANDEM_CHAOS_TEST=${randomUUID()}`;
    const [key, value] = marker.split("=");
    const { stdout, stderr, code } = await runCli(["bench", "chaos", "--smoke"], {
      ...process.env,
      [key]: value,
    });
    expect(code, stderr).toBe(0);
    expect(stderr).toMatch(/^chaos: worker_kill run 1\/1: /m);
    const result = JSON.parse(stdout.trim().split("\n").at(-1)!) as {
      name: string;
      tokens: number;
      faults: Record<string, unknown>;
      jobs_lost: number;
    };
    expect(result.name).toBe("chaos");
    expect(Object.keys(result.faults).sort()).toEqual([...GENERATION_FAULTS, "redis_restart"].sort());

    for (const name of GENERATION_FAULTS) {
      const fault = result.faults[name] as GenerationFault;
      expect(fault.runs, name).toBe(1);
      expect(fault.per_run, name).toHaveLength(1);
      for (const count of [
        fault.tokens_lost,
        fault.tokens_repeated,
        fault.outputs_different,
        fault.fallback_tokens,
        fault.placement_changes,
        fault.maps_without_live_worker,
      ])
        expect(Number.isInteger(count) && count >= 0, `${name}: ${count}`).toBe(true);
      for (const ms of [fault.recovery_ms_p50, fault.recovery_ms_p95])
        expect(Number.isFinite(ms) && ms >= 0, `${name}: ${ms}`).toBe(true);
      // Generations went on after the fault, every one of them scored.
      expect(fault.generations, name).toBeGreaterThanOrEqual(2);
      expect(fault.tokens, name).toBeGreaterThan(0);
      const [run] = fault.per_run;
      expect(run.fault_token, name).toBeGreaterThanOrEqual(1);
      // The edge's replay and fallback never skip or repeat a position.
      expect(fault.tokens_lost, name).toBe(0);
      expect(fault.tokens_repeated, name).toBe(0);
      if (name !== "worker_kill") expect(fault.outputs_different, name).toBe(0);
    }
    // Each fault hit what it names, and the cluster noticed: the serving worker (a map
    // without it was written), the lease holder (another replica holds the lease).
    const workerKill = result.faults.worker_kill as GenerationFault;
    expect(workerKill.per_run[0].target).toMatch(/^w[12] /);
    expect(workerKill.placement_changes).toBeGreaterThanOrEqual(1);
    const leaderKill = result.faults.leader_kill as GenerationFault;
    expect(leaderKill.per_run[0].target).toMatch(/^cp[12]$/);
    expect(leaderKill.leader_changes).toBe(1);

    const batch = result.faults.redis_restart as BatchFault;
    expect(batch.runs).toBe(1);
    expect(batch.per_run).toHaveLength(1);
    expect(batch.jobs).toBeGreaterThan(0);
    expect(batch.jobs_lost).toBe(0);
    expect(result.jobs_lost).toBe(batch.jobs_lost);

    expect(processesMarked(marker)).toEqual([]);
  }, 240_000);
});
