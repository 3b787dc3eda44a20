/**
 * The probes of the programs that serve no gRPC of their own: with healthPort, the control
 * plane and the batch worker serve grpc.health.v1 alone (what the kubelet's gRPC probe
 * asks), SERVING while they can do their work — the control plane connected to NATS and
 * ticking, the batch worker taking jobs with Redis connected — and NOT_SERVING otherwise
 * and as they stop. Real programs, on a nats-server and a redis-server of the test's own.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  freePort,
  healthClient,
  healthList,
  healthStatus,
  startNatsServer,
  startProgram,
  startRedisServer,
  type RunningProcess,
  type TestNatsServer,
  until,
  waitUntilServing,
} from "@tandem/testkit";

const STATUS_CODE_NOT_FOUND = 5;

/** Until the program's health service answers `status` for the server as a whole. */
const untilStatus = (address: string, status: string) =>
  until(
    `${address} to report ${status}`,
    async () => (await healthStatus(address, "").catch(() => undefined)) === status,
    20_000,
    100,
  );

/**
 * Stops the program (SIGTERM) with a Watch call open, and resolves with every status the
 * watch saw, up to the end of the call.
 */
async function statusesWhileStopping(address: string, program: RunningProcess): Promise<string[]> {
  const client = healthClient(address);
  const watch = client.watch({ service: "" });
  const seen: string[] = [];
  watch.on("data", (reply: { status: string }) => seen.push(reply.status));
  const ended = new Promise<void>((resolve) => {
    watch.on("status", () => resolve());
    watch.on("error", () => resolve());
  });
  await until("the watch to report the current status", () => seen.length > 0);
  await program.kill("SIGTERM");
  await ended;
  client.close();
  return seen;
}

describe("tandem-control-plane's health service", () => {
  let nats: TestNatsServer;
  beforeAll(async () => {
    nats = await startNatsServer();
  });
  afterAll(async () => {
    await nats?.stop();
  });

  const start = async (cluster: string) => {
    const port = await freePort();
    const program = await startProgram("tandem-control-plane", {
      natsUrl: nats.url,
      cluster,
      replicaId: "cp-probed",
      tickMs: 100,
      leaseTtlMs: 1000,
      healthPort: port,
    });
    return { program, address: `127.0.0.1:${port}` };
  };

  it("is SERVING while connected to NATS and ticking, NOT_SERVING while NATS is away, SERVING again once it is back", async () => {
    const { program, address } = await start(`probe${Date.now()}`);
    try {
      await waitUntilServing(address, 20_000);
      // The health service alone: the program as a whole (readiness), and liveness.
      expect(await healthList(address)).toEqual({ "": "SERVING", liveness: "SERVING" });
      await expect(healthStatus(address, "tandem.v1.CloudWorker")).rejects.toMatchObject({
        code: STATUS_CODE_NOT_FOUND,
      });
      await nats.restart({
        whileStopped: async () => {
          await untilStatus(address, "NOT_SERVING");
          // Unready, not dead: a liveness probe must not restart it for an outage of NATS.
          expect(await healthStatus(address, "liveness")).toBe("SERVING");
        },
      });
      await untilStatus(address, "SERVING");
    } finally {
      await program.kill("SIGKILL");
    }
  });

  it("reports NOT_SERVING as it stops", async () => {
    const { program, address } = await start(`probe-stop${Date.now()}`);
    await waitUntilServing(address, 20_000);
    expect(await statusesWhileStopping(address, program)).toEqual(["SERVING", "NOT_SERVING"]);
  });
});

describe("tandem-batch-worker's health service", () => {
  const start = async (redisUrl: string) => {
    const port = await freePort();
    const program = await startProgram("tandem-batch-worker", {
      redisUrl,
      cluster: `probe${Date.now()}`,
      kinds: "generate",
      healthPort: port,
    });
    return { program, address: `127.0.0.1:${port}` };
  };

  it("is SERVING while taking jobs with Redis connected, NOT_SERVING once Redis is gone", async () => {
    const redis = await startRedisServer();
    const { program, address } = await start(redis.url);
    try {
      await waitUntilServing(address, 20_000);
      expect(await healthList(address)).toEqual({ "": "SERVING", liveness: "SERVING" });
      await redis.stop();
      await untilStatus(address, "NOT_SERVING");
      expect(await healthStatus(address, "liveness")).toBe("SERVING");
    } finally {
      // Without Redis a graceful stop would wait on it: this one is killed.
      await program.kill("SIGKILL");
      await redis.stop();
    }
  });

  it("reports NOT_SERVING as it stops", async () => {
    const redis = await startRedisServer();
    try {
      const { program, address } = await start(redis.url);
      await waitUntilServing(address, 20_000);
      expect(await statusesWhileStopping(address, program)).toEqual(["SERVING", "NOT_SERVING"]);
    } finally {
      await redis.stop();
    }
  });
});
