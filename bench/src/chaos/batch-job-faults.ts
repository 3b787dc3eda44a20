/**
 * The chaos benchmark's batch part: generation jobs on a `tandem-batch-worker` process,
 * submitted and read with `tandem jobs` as a user does, while the Redis holding the
 * queues is restarted (SIGTERM, then started again on its port and files). That Redis
 * keeps an append-only file fsynced every second — the setting a BullMQ deployment runs
 * with; a Redis without persistence loses every job on a restart by construction.
 *
 * Per run: submit the jobs, restart Redis after a random one of them (and a random
 * moment), then wait for every job. A job is lost when its result never arrives within
 * the timeout (missing, failed, still waiting) or arrives different from the uninterrupted
 * run of the same prompt.
 */
import { join } from "node:path";
import { runCli, startProgram, startRedisServer } from "@tandem/testkit";
import { DEMO_MODEL, REPO_ROOT } from "../bench-paths.ts";
import { type Random, randomInt } from "../seeded-random.ts";

export interface BatchSettings {
  runs: number;
  jobsPerRun: number;
  prompts: string[];
  tokens: number;
  /** Longest wait for the jobs of a run after the last was submitted. */
  timeoutMs: number;
  log: (line: string) => void;
}

export interface BatchRunOutcome {
  jobs: number;
  restart_after_job: number;
  completed: number;
  /** Completed, with the uninterrupted output. */
  correct: number;
  different: number;
  failed: number;
  /** Neither completed nor failed when the wait ended, or unknown to Redis. */
  missing: number;
  failures: string[];
}

interface JobView {
  state: string;
  result?: { outputs: { prompt: string; tokenIds: number[] }[] };
  failedReason?: string;
}

/** `tandem jobs …` against this Redis and cluster; stdout's JSON, or undefined when the command fails. */
async function jobsCli(redisUrl: string, cluster: string, args: string[]): Promise<unknown> {
  const result = await runCli(["jobs", ...args, "--redis", redisUrl, "--cluster", cluster]);
  if (result.code !== 0) return undefined;
  return JSON.parse(result.stdout.trim().split("\n").at(-1)!) as unknown;
}

async function submit(redisUrl: string, cluster: string, prompts: string[], tokens: number): Promise<string> {
  const data = { model: DEMO_MODEL, prompts, maxTokens: tokens };
  const submitted = (await jobsCli(redisUrl, cluster, [
    "submit",
    "generate",
    "--data",
    JSON.stringify(data),
  ])) as { id: string } | undefined;
  if (!submitted) throw new Error("tandem jobs submit failed");
  return submitted.id;
}

/** Polls until every job has completed or failed, or `timeoutMs` passes. */
async function finalViews(
  redisUrl: string,
  cluster: string,
  ids: string[],
  timeoutMs: number,
): Promise<Map<string, JobView | undefined>> {
  const views = new Map<string, JobView | undefined>();
  const deadline = Date.now() + timeoutMs;
  let pending = [...ids];
  while (pending.length > 0) {
    for (const id of pending)
      views.set(id, (await jobsCli(redisUrl, cluster, ["show", "generate", id])) as JobView | undefined);
    pending = pending.filter((id) => !["completed", "failed"].includes(views.get(id)?.state ?? ""));
    if (pending.length === 0 || Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 1000));
  }
  return views;
}

export async function redisRestartRuns(settings: BatchSettings, random: Random): Promise<BatchRunOutcome[]> {
  const redis = await startRedisServer({ appendOnly: { fsync: "everysec" } });
  const cluster = `chaos-jobs-${process.pid}-${Date.now()}`;
  const outcomes: BatchRunOutcome[] = [];
  let worker: Awaited<ReturnType<typeof startProgram>> | undefined;
  try {
    worker = await startProgram("tandem-batch-worker", {
      redisUrl: redis.url,
      cluster,
      kinds: "generate",
      fileRoots: join(REPO_ROOT, "models"),
    });
    // The uninterrupted run: every prompt in one job, Redis left alone.
    const referenceId = await submit(redis.url, cluster, settings.prompts, settings.tokens);
    const reference = (await finalViews(redis.url, cluster, [referenceId], settings.timeoutMs)).get(
      referenceId,
    );
    if (reference?.state !== "completed" || !reference.result)
      throw new Error(`the uninterrupted batch job did not complete: ${JSON.stringify(reference)}`);
    const expected = new Map(reference.result.outputs.map((o) => [o.prompt, o.tokenIds]));

    for (let run = 0; run < settings.runs; run++) {
      const restartAfter = randomInt(random, 1, settings.jobsPerRun - 1);
      const submitted: { id: string; prompt: string }[] = [];
      for (let j = 0; j < settings.jobsPerRun; j++) {
        const prompt = settings.prompts[(run + j) % settings.prompts.length];
        submitted.push({ id: await submit(redis.url, cluster, [prompt], settings.tokens), prompt });
        if (j + 1 === restartAfter) {
          await new Promise((r) => setTimeout(r, randomInt(random, 0, 500)));
          await redis.restart();
        }
      }
      const views = await finalViews(
        redis.url,
        cluster,
        submitted.map((s) => s.id),
        settings.timeoutMs,
      );
      const outcome: BatchRunOutcome = {
        jobs: submitted.length,
        restart_after_job: restartAfter,
        completed: 0,
        correct: 0,
        different: 0,
        failed: 0,
        missing: 0,
        failures: [],
      };
      for (const { id, prompt } of submitted) {
        const view = views.get(id);
        if (view?.state === "completed") {
          outcome.completed++;
          const output = view.result?.outputs[0];
          const same =
            output?.prompt === prompt &&
            JSON.stringify(output.tokenIds) === JSON.stringify(expected.get(prompt));
          if (same) outcome.correct++;
          else outcome.different++;
        } else if (view?.state === "failed") {
          outcome.failed++;
          outcome.failures.push(`job ${id}: ${view.failedReason ?? "failed"}`);
        } else {
          outcome.missing++;
          outcome.failures.push(`job ${id}: ${view ? `still ${view.state}` : "unknown to Redis"}`);
        }
      }
      outcome.failures = outcome.failures.slice(0, 3);
      settings.log(`redis_restart run ${run + 1}/${settings.runs}: ${JSON.stringify(outcome)}`);
      outcomes.push(outcome);
    }
  } finally {
    await worker?.kill("SIGKILL");
    await redis.stop();
  }
  return outcomes;
}
