/**
 * Batch work on a real redis-server (127.0.0.1:6379, queues under a key prefix of this
 * run's own): generation, calibration and graph builds through BullMQ, bad data failing
 * at once with the field named, and no job lost when a worker dies or stops mid-job.
 */
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { Job, Queue, Worker } from "bullmq";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  batchQueueLocation,
  batchWorkerOptions,
  type BatchWorker,
  type GenerateJobResult,
  JOB_KINDS,
  type JobKind,
  showJob,
  startBatchWorker,
  submitJob,
  type SubmitOptions,
  waitForJob,
} from "@tandem/batch-worker";
import { UnauthenticatedError, UnavailableError } from "@tandem/common";
import {
  caPaths,
  initCertificateAuthority,
  issueServerCertificate,
  serverPaths,
} from "@tandem/proto/certificates";
import { freePort, runCli, startProgram, startRedisServer, until } from "@tandem/testkit";
import { cloudSegmentSpec, loadCheckpoint, readCalibration, SegmentModel } from "@tandem/runtime";

const MODEL = join(import.meta.dirname, "..", "models", "tandem-demo");
const CALIBRATION = join(MODEL, "calibration.safetensors");
const REDIS = "redis://127.0.0.1:6379";
const log = pino({ level: "silent" });
let dir: string;

/** A cluster name of its own per test: its queues share nothing with any other run. */
const cluster = (name: string) => `test-${name}-${process.pid}-${Date.now()}`;
const used: string[] = [];
const optionsFor = (name: string): SubmitOptions => {
  const c = cluster(name);
  used.push(c);
  return { redisUrl: REDIS, cluster: c };
};

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "tandem-batch-"));
});
afterAll(async () => {
  for (const c of used) {
    const location = batchQueueLocation(REDIS, c);
    for (const kind of JOB_KINDS) {
      const queue = new Queue(kind, { connection: location.connection, prefix: location.prefix });
      await queue.obliterate({ force: true });
      await queue.close();
    }
  }
  rmSync(dir, { recursive: true, force: true });
});

/** The result of a job that must complete (waitForJob's outcome otherwise fails the test). */
async function resultOf(
  kind: JobKind,
  id: string,
  options: SubmitOptions,
  timeoutMs: number,
): Promise<unknown> {
  const outcome = await waitForJob(kind, id, options, timeoutMs);
  if (outcome.state !== "completed") throw new Error(`${kind} job ${id}: ${JSON.stringify(outcome)}`);
  return outcome.result;
}

async function withWorker<T>(options: SubmitOptions, body: (worker: BatchWorker) => Promise<T>): Promise<T> {
  const worker = await startBatchWorker({ ...options, cacheDir: join(dir, "graphs") }, log);
  try {
    return await body(worker);
  } finally {
    await worker.close();
  }
}

describe("batch jobs on BullMQ", () => {
  it("a generate job continues every prompt with the calibrated split, as tandem generate does", async () => {
    const options = optionsFor("generate");
    const prompts = ["The Python standard library", "A list comprehension is"];
    const result = await withWorker(options, async () => {
      const id = await submitJob(
        "generate",
        { model: MODEL, prompts, maxTokens: 12, calibration: CALIBRATION, target: 0.99 },
        options,
      );
      const value = (await resultOf("generate", id, options, 120_000)) as GenerateJobResult;
      const view = await showJob("generate", id, options);
      expect(view).toMatchObject({
        state: "completed",
        progress: { phase: "prompts", done: 2, total: 2 },
        attemptsMade: 1,
      });
      return value;
    });
    expect(result.outputs.map((o) => o.prompt)).toEqual(prompts);
    for (const output of result.outputs) {
      // The same prompt through `tandem generate`: it prints the prompt and its continuation,
      // and its statistics as the last line of stderr.
      const cli = await runCli([
        "generate",
        ...["--model", MODEL, "--prompt", output.prompt, "--max-tokens", "12"],
        ...["--calibration", CALIBRATION, "--target", "0.99"],
      ]);
      expect(cli.code).toBe(0);
      const stats = JSON.parse(cli.stderr.trim().split("\n").at(-1)!).stats;
      expect(output.prompt + output.text + "\n").toBe(cli.stdout);
      expect(output.tokenIds).toHaveLength(12);
      expect([output.edgeTokens, output.cloudTokens]).toEqual([stats.edgeTokens, stats.cloudTokens]);
    }
    expect(result.tokens).toBe(24);
  }, 180_000);

  it("a calibrate job writes a calibration file the edge agent can load", async () => {
    const options = optionsFor("calibrate");
    const out = join(dir, "calibration.safetensors");
    const result = await withWorker(options, async () => {
      const id = await submitJob(
        "calibrate",
        {
          model: MODEL,
          split: 3,
          exitLayers: [2, 3],
          textFile: join(MODEL, "heldout.txt"),
          out,
          targets: [0.99, 0.95],
          maxTokens: 2048,
        },
        options,
      );
      return (await resultOf("calibrate", id, options, 120_000)) as { split: number; policies: unknown[] };
    });
    const calibration = await readCalibration(out);
    expect(calibration.summary.split).toBe(3);
    expect(calibration.summary.policies.map((p) => p.targetAgreement)).toEqual([0.99, 0.95]);
    expect(result).toMatchObject({ out, split: 3 });
    expect(result.policies).toHaveLength(2);
  }, 180_000);

  it("a build-graphs job puts the graphs the programs load into the cache, once", async () => {
    const options = optionsFor("graphs");
    const cacheDir = join(dir, "prebuilt");
    const data = { model: MODEL, split: 3, calibration: CALIBRATION, cacheDir };
    const [first, second] = await withWorker(options, async () => {
      const a = await resultOf(
        "build-graphs",
        await submitJob("build-graphs", data, options),
        options,
        120_000,
      );
      const b = await resultOf(
        "build-graphs",
        await submitJob("build-graphs", data, options),
        options,
        120_000,
      );
      return [a, b] as {
        edgeGraph: string;
        cloudGraph: string;
        alreadyCached: { edge: boolean; cloud: boolean };
      }[];
    });
    expect(first.alreadyCached).toEqual({ edge: false, cloud: false });
    expect(second.alreadyCached).toEqual({ edge: true, cloud: true });
    expect(existsSync(first.edgeGraph) && existsSync(first.cloudGraph)).toBe(true);
    // The cloud worker's segment is the one built: loading it finds the graph in place.
    const checkpoint = await loadCheckpoint(MODEL);
    const built = statSync(first.cloudGraph).mtimeMs;
    const model = await SegmentModel.load(checkpoint, cloudSegmentSpec(3, 6, "fp32"), { cacheDir });
    expect(model.graphPath).toBe(first.cloudGraph);
    expect(statSync(model.graphPath).mtimeMs).toBe(built);
    await model.release();
  }, 180_000);

  it("bad data fails at once, unretried, naming the field or file; the worker carries on", async () => {
    const options = optionsFor("bad");
    const location = batchQueueLocation(REDIS, options.cluster);
    // Submitting validates: the job never reaches Redis.
    await expect(submitJob("generate", { model: MODEL, prompts: [] }, options)).rejects.toThrow(
      /^prompts: must hold at least 1 item/,
    );
    // Data that reached Redis by another way is checked again by the worker.
    const queue = new Queue("generate", { connection: location.connection, prefix: location.prefix });
    try {
      await withWorker(options, async (worker) => {
        const empty = await queue.add("generate", { model: MODEL, prompts: [] }, { attempts: 3 });
        const missing = await queue.add(
          "generate",
          { model: join(dir, "no-such-model"), prompts: ["x"] },
          { attempts: 3 },
        );
        expect(await waitForJob("generate", empty.id!, options, 30_000)).toEqual({
          state: "failed",
          failedReason: expect.stringMatching(/prompts: must hold at least 1 item/),
        });
        expect(await waitForJob("generate", missing.id!, options, 30_000)).toEqual({
          state: "failed",
          failedReason: expect.stringMatching(/no-such-model/),
        });
        // A calibration that cannot be written (its directory is a file) fails once, naming `out`.
        const unwritable = await submitJob(
          "calibrate",
          {
            model: MODEL,
            split: 3,
            exitLayers: [3],
            textFile: join(MODEL, "heldout.txt"),
            out: join(MODEL, "config.json", "calibration.safetensors"),
            maxTokens: 768,
          },
          options,
        );
        expect(await waitForJob("calibrate", unwritable, options, 60_000)).toEqual({
          state: "failed",
          failedReason: expect.stringMatching(/^out: cannot write/),
        });
        // So does a graph cache that cannot be written, naming `cacheDir`.
        const noCache = await submitJob(
          "build-graphs",
          { model: MODEL, split: 3, exitLayers: [3], cacheDir: join(MODEL, "config.json", "graphs") },
          options,
        );
        expect(await waitForJob("build-graphs", noCache, options, 60_000)).toEqual({
          state: "failed",
          failedReason: expect.stringMatching(/^cacheDir: cannot write graphs/),
        });
        for (const id of [empty.id!, missing.id!]) {
          const job = (await Job.fromId(queue, id))!;
          expect(await job.getState()).toBe("failed");
          expect(job.attemptsMade).toBe(1);
        }
        const good = await submitJob("generate", { model: MODEL, prompts: ["The"], maxTokens: 2 }, options);
        expect(((await resultOf("generate", good, options, 60_000)) as GenerateJobResult).tokens).toBe(2);
        expect(worker.counts).toEqual({ completed: 1, failed: 4 });
      });
    } finally {
      await queue.close();
    }
  }, 120_000);

  it("paths outside the worker's file roots, or with '..', fail at once naming the field; paths inside run", async () => {
    const options = optionsFor("roots");
    const roots = [join(import.meta.dirname, "..", "models"), dir];
    const worker = await startBatchWorker(
      { ...options, cacheDir: join(dir, "graphs"), fileRoots: roots },
      log,
    );
    try {
      const cases: [JobKind, Record<string, unknown>, RegExp][] = [
        ["generate", { model: "/etc", prompts: ["a"] }, /^model: \/etc is outside the worker's file roots/],
        [
          "generate",
          { model: `${MODEL}/../../../etc`, prompts: ["a"] },
          /^model: ".*" must not contain "\.\."/,
        ],
        [
          "calibrate",
          {
            model: MODEL,
            split: 3,
            exitLayers: [3],
            textFile: "/etc/passwd",
            out: join(dir, "c.safetensors"),
          },
          /^textFile: \/etc\/passwd is outside/,
        ],
        [
          "build-graphs",
          { model: MODEL, split: 3, exitLayers: [3], cacheDir: join(tmpdir(), "elsewhere") },
          /^cacheDir: .* is outside/,
        ],
      ];
      for (const [kind, data, reason] of cases) {
        const id = await submitJob(kind, data, options);
        expect(await waitForJob(kind, id, options, 30_000)).toEqual({
          state: "failed",
          failedReason: expect.stringMatching(reason),
        });
      }
      const good = await submitJob("generate", { model: MODEL, prompts: ["The"], maxTokens: 2 }, options);
      expect(((await resultOf("generate", good, options, 60_000)) as GenerateJobResult).tokens).toBe(2);
    } finally {
      await worker.close();
    }
  }, 120_000);

  it("tandem jobs submit names the bad field and runs a good job to its result", async () => {
    const options = optionsFor("cli");
    const flags = ["--redis", REDIS, "--cluster", options.cluster];
    const bad = await runCli(["jobs", "submit", "generate", "--data", `{"model":"${MODEL}"}`, ...flags]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--data: prompts: is required/);
    const typo = await runCli([
      "jobs",
      "submit",
      "generate",
      "--data",
      `{"model":"${MODEL}","prompts":["a"],"max_token":5}`,
      ...flags,
    ]);
    expect(typo.code).toBe(2);
    expect(typo.stderr).toMatch(/--data: max_token: is not a known key/);
    const kind = await runCli(["jobs", "submit", "summarize", "--data", "{}", ...flags]);
    expect(kind.stderr).toMatch(/KIND: must be one of generate, calibrate, build-graphs/);
    await withWorker(options, async () => {
      const run = await runCli([
        "jobs",
        "submit",
        "generate",
        "--wait",
        "--data",
        JSON.stringify({ model: MODEL, prompts: ["The Python"], maxTokens: 4 }),
        ...flags,
      ]);
      expect(run.code, run.stderr).toBe(0);
      const printed = JSON.parse(run.stdout) as { id: string; state: string; result: GenerateJobResult };
      expect(printed.state).toBe("completed");
      expect(printed.result.tokens).toBe(4);
      const shown = await runCli(["jobs", "show", "generate", printed.id, ...flags]);
      expect(JSON.parse(shown.stdout)).toMatchObject({
        state: "completed",
        progress: { phase: "prompts", done: 1, total: 1 },
      });
    });
  }, 120_000);
});

describe("no job lost", () => {
  const prompts = Array.from({ length: 24 }, (_, i) => `Example ${i}: the module`);
  const flags = (c: string) => ({
    redisUrl: REDIS,
    cluster: c,
    kinds: "generate",
    lockDurationMs: 1000,
    stalledIntervalMs: 500,
  });
  const env = () => ({ TANDEM_CACHE_DIR: join(dir, "cache") });

  /** Until the job is active and has reported progress: a worker is in the middle of it. */
  async function untilActive(options: SubmitOptions, id: string): Promise<void> {
    await until(
      `job ${id} to be active, with progress`,
      async () => {
        const view = await showJob("generate", id, options);
        return view?.state === "active" && ((view.progress as { done?: number } | undefined)?.done ?? 0) > 0;
      },
      60_000,
      100,
    );
  }

  it("a worker killed mid-job: the job stalls, another worker runs it to the end", async () => {
    const options = optionsFor("kill");
    const first = await startProgram("tandem-batch-worker", flags(options.cluster), env());
    try {
      const id = await submitJob("generate", { model: MODEL, prompts, maxTokens: 48 }, options);
      await untilActive(options, id);
      await first.kill("SIGKILL");
      await runsToTheEnd(options, id);
    } finally {
      await first.kill("SIGKILL");
    }
  }, 180_000);

  /** A second worker takes the stalled job and finishes it: every prompt, once. */
  async function runsToTheEnd(options: SubmitOptions, id: string): Promise<void> {
    const second = await startProgram("tandem-batch-worker", flags(options.cluster), env());
    try {
      const result = (await resultOf("generate", id, options, 120_000)) as GenerateJobResult;
      expect(result.outputs.map((o) => o.prompt)).toEqual(prompts);
      expect(result.tokens).toBe(prompts.length * 48);
      // It was taken back from the dead worker as stalled, not finished by it.
      const location = batchQueueLocation(REDIS, options.cluster);
      const queue = new Queue("generate", { connection: location.connection, prefix: location.prefix });
      expect((await Job.fromId(queue, id))!.stalledCounter).toBe(1);
      await queue.close();
    } finally {
      await second.kill();
    }
  }

  it("a worker asked to stop (SIGTERM) finishes the job in hand first", async () => {
    const options = optionsFor("term");
    const worker = await startProgram("tandem-batch-worker", flags(options.cluster), env());
    let id: string;
    try {
      id = await submitJob(
        "generate",
        { model: MODEL, prompts: prompts.slice(0, 8), maxTokens: 32 },
        options,
      );
      await untilActive(options, id);
      const exited = new Promise<number | null>((resolve) => worker.child.once("exit", resolve));
      worker.child.kill("SIGTERM");
      expect(await exited).toBe(0);
    } finally {
      await worker.kill("SIGKILL");
    }
    const view = await showJob("generate", id, options);
    expect(view).toMatchObject({ state: "completed", attemptsMade: 1 });
    expect((view!.result as GenerateJobResult).tokens).toBe(8 * 32);
  }, 120_000);
});

describe("a Redis with TLS and an ACL user", () => {
  it("serves a worker and a client that read the password from a file and trust the CA; refuses one without the password", async () => {
    const certs = join(dir, "redis-certs");
    await initCertificateAuthority(certs);
    await issueServerCertificate(certs, "redis", ["127.0.0.1"]);
    const redis = await startRedisServer({
      tls: {
        certFile: serverPaths(certs, "redis").cert,
        keyFile: serverPaths(certs, "redis").key,
        caFile: caPaths(certs).cert,
      },
      args: ["--user", "tandem", "on", ">s3cret-pw", "~*", "&*", "+@all", "--user", "default", "off"],
    });
    try {
      const passwordFile = join(dir, "redis-password");
      writeFileSync(passwordFile, "s3cret-pw\n", { mode: 0o600 });
      const options: SubmitOptions = {
        redisUrl: `rediss://tandem@127.0.0.1:${redis.port}`,
        cluster: `tls${Date.now()}`,
        redisSecrets: { passwordFile, caFile: caPaths(certs).cert },
      };
      const result = await withWorker(options, async () => {
        const id = await submitJob("generate", { model: MODEL, prompts: ["The"], maxTokens: 2 }, options);
        return (await resultOf("generate", id, options, 60_000)) as GenerateJobResult;
      });
      expect(result.tokens).toBe(2);
      // The password stays out of the URL, and without it Redis refuses: UNAUTHENTICATED, exit 2.
      await expect(
        submitJob(
          "generate",
          { model: MODEL, prompts: ["a"] },
          { ...options, redisSecrets: { caFile: caPaths(certs).cert } },
        ),
      ).rejects.toThrow(UnauthenticatedError);
      const cli = await runCli([
        "jobs",
        "submit",
        "generate",
        "--data",
        '{"model":"m","prompts":["a"]}',
        "--redis",
        options.redisUrl,
        "--redis-ca",
        caPaths(certs).cert,
        "--cluster",
        options.cluster,
      ]);
      expect(cli.code).toBe(2);
      expect(cli.stderr).toMatch(
        /^tandem jobs: Redis at rediss:\/\/tandem@127\.0\.0\.1:\d+ refused the credentials/,
      );
    } finally {
      await redis.stop();
    }
  }, 120_000);
});

describe("waiting for a job", () => {
  it("a wait that runs out says so (timed-out, exit 2), and the job still completes", async () => {
    const options = optionsFor("timeout");
    const flags = ["--redis", REDIS, "--cluster", options.cluster];
    const data = JSON.stringify({ model: MODEL, prompts: ["The"], maxTokens: 2 });
    // No worker yet: nothing can finish the job in time.
    const cli = await runCli([
      "jobs",
      "submit",
      "generate",
      "--wait",
      "--timeout-ms",
      "300",
      "--data",
      data,
      ...flags,
    ]);
    expect(cli.code, cli.stderr).toBe(2);
    const printed = JSON.parse(cli.stdout) as { id: string; state: string };
    expect(printed.state).toBe("timed-out");
    expect(cli.stderr).toMatch(/gave up waiting after 300 ms; the job is not finished/);
    expect(await waitForJob("generate", printed.id, options, 200)).toEqual({ state: "timed-out" });
    const result = await withWorker(options, () => resultOf("generate", printed.id, options, 60_000));
    expect((result as GenerateJobResult).tokens).toBe(2);
  }, 60_000);

  it("a job that finishes just as the wait starts is seen finished, not waited on until the timeout", async () => {
    const options = optionsFor("race");
    // Each job takes a few milliseconds more than the one before, so that some finish while
    // the wait is between reading the job's state and following the queue's events.
    const worker = new Worker(
      "generate",
      async (job: Job<{ prompts: string[] }>) => {
        await new Promise((resolve) => setTimeout(resolve, Number(job.data.prompts[0])));
        return job.data.prompts[0];
      },
      batchWorkerOptions(options),
    );
    try {
      await worker.waitUntilReady();
      for (let delayMs = 0; delayMs < 40; delayMs++) {
        const id = await submitJob("generate", { model: MODEL, prompts: [String(delayMs)] }, options);
        expect(await waitForJob("generate", id, options, 5_000)).toEqual({
          state: "completed",
          result: String(delayMs),
        });
      }
    } finally {
      await worker.close();
    }
  }, 60_000);

  // A wait that hung instead would run into these tests' own timeouts.
  it("an unreachable Redis fails the wait at once, as UnavailableError naming it", async () => {
    const redisUrl = `redis://127.0.0.1:${await freePort()}`;
    const error = await waitForJob("generate", "1", { redisUrl, cluster: "nowhere" }, 60_000).catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(UnavailableError);
    expect((error as Error).message).toMatch(new RegExp(`^Redis at ${redisUrl} cannot be reached`));
  }, 10_000);

  it("a Redis that goes away mid-wait fails the wait, as UnavailableError naming it", async () => {
    const redis = await startRedisServer();
    const options = { redisUrl: redis.url, cluster: cluster("lost") };
    try {
      const id = await submitJob("generate", { model: MODEL, prompts: ["x"] }, options);
      const waiting = waitForJob("generate", id, options, 60_000).catch((e: unknown) => e);
      // The wait follows the queue's events once BullMQ's events connection ("…:qe") is open.
      const clients = ["-p", String(redis.port), "CLIENT", "LIST"];
      await until("the wait to follow the queue's events", async () => {
        const { stdout } = await promisify(execFile)("redis-cli", clients);
        return stdout.includes(":qe");
      });
      await redis.stop();
      const error = await waiting;
      expect(error).toBeInstanceOf(UnavailableError);
      expect((error as Error).message).toMatch(new RegExp(`^Redis at ${options.redisUrl} cannot be reached`));
    } finally {
      await redis.stop();
    }
  }, 30_000);
});

describe("the retry policy on BullMQ", () => {
  it("retries a failing job with the worker's own backoff: waits within the policy's bounds, tries up to its attempts", async () => {
    const options = optionsFor("retry");
    const policy = { attempts: 3, initialDelayMs: 300, maxDelayMs: 10_000, jitter: 0.5 };
    const tries = new Map<string, number[]>();
    // The options tandem-batch-worker runs with (backoffStrategy included), around a processor
    // that fails "flaky" twice, then completes it, and always fails "broken".
    const worker = new Worker(
      "generate",
      async (job: Job<{ prompts: string[] }>) => {
        const times = [...(tries.get(job.id!) ?? []), Date.now()];
        tries.set(job.id!, times);
        if (job.data.prompts[0] === "broken" || times.length < 3) throw new Error("a transient failure");
        return "done";
      },
      batchWorkerOptions({ ...options, backoff: policy }),
    );
    try {
      // Submitted as tandem jobs submits: the worker's strategy computes the waits.
      const submit = (prompt: string) =>
        submitJob("generate", { model: MODEL, prompts: [prompt] }, { ...options, attempts: policy.attempts });
      const flaky = await submit("flaky");
      expect(await waitForJob("generate", flaky, options, 30_000)).toEqual({
        state: "completed",
        result: "done",
      });
      const times = tries.get(flaky)!;
      expect(times).toHaveLength(3);
      const [first, second] = [times[1] - times[0], times[2] - times[1]];
      // Attempt n waits initialDelayMs·2^(n−1), drawn from its upper half (jitter 0.5).
      expect(first).toBeGreaterThanOrEqual(150 - 20);
      expect(first).toBeLessThan(300 + 500);
      expect(second).toBeGreaterThanOrEqual(300 - 20);
      expect(second).toBeLessThan(600 + 500);
      // A job that keeps failing is tried `attempts` times, then fails for good.
      const broken = await submit("broken");
      expect(await waitForJob("generate", broken, options, 30_000)).toEqual({
        state: "failed",
        failedReason: "a transient failure",
      });
      expect(tries.get(broken)).toHaveLength(policy.attempts);
    } finally {
      await worker.close();
    }
  }, 60_000);
});
