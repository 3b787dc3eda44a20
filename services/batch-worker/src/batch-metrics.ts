/**
 * The batch worker's Prometheus metrics: how deep each kind's queue is (asked of Redis at
 * scrape time, for the whole cluster's queue, not only this worker's jobs) and how long
 * this worker's jobs took, by kind and outcome.
 */
import { Queue, type Job } from "bullmq";
import type { Logger } from "@tandem/common";
import { Gauge, Histogram, type Registry } from "@tandem/common/metrics";
import type { JobKind } from "./batch-jobs.ts";
import type { BatchQueueLocation } from "./batch-queues.ts";

/** The job states a queue's depth is reported in. */
const QUEUE_STATES = ["waiting", "prioritized", "delayed", "active", "failed", "completed"] as const;

export type JobOutcome = "completed" | "failed";

/** Generation jobs take seconds, graph builds of a large model many minutes. */
const JOB_SECONDS_BUCKETS = [0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600];

export class BatchMetrics {
  private readonly queues: Queue[];
  private readonly jobSeconds: Histogram<"kind" | "outcome">;

  constructor(registry: Registry, kinds: readonly JobKind[], location: BatchQueueLocation, log: Logger) {
    // Connections that fail at once when Redis is down: a scrape must not hang on it.
    const queues = kinds.map(
      (kind) => new Queue(kind, { connection: location.clientConnection, prefix: location.prefix }),
    );
    this.queues = queues;
    new Gauge({
      name: "tandem_batch_queue_depth",
      help: "Jobs in each kind's queue, by state (the cluster's queue, every worker's jobs)",
      labelNames: ["kind", "state"],
      registers: [registry],
      async collect() {
        this.reset();
        try {
          const counts = await Promise.all(queues.map((queue) => queue.getJobCounts(...QUEUE_STATES)));
          queues.forEach((queue, i) => {
            for (const state of QUEUE_STATES) this.set({ kind: queue.name, state }, counts[i][state] ?? 0);
          });
        } catch (error) {
          // Redis away: no depth rather than a failed scrape (the process metrics still count).
          log.warn({ err: (error as Error).message }, "queue depth unavailable");
        }
      },
    });
    this.jobSeconds = new Histogram({
      name: "tandem_batch_job_duration_seconds",
      help: "Time this worker spent on each try of a job, by kind and outcome",
      labelNames: ["kind", "outcome"],
      buckets: JOB_SECONDS_BUCKETS,
      registers: [registry],
    });
  }

  /** A try of `job` ended (BullMQ stamps when it was taken and when it finished). */
  jobFinished(kind: JobKind, outcome: JobOutcome, job: Job | undefined): void {
    if (job?.processedOn === undefined || job.finishedOn === undefined) return;
    this.jobSeconds.observe({ kind, outcome }, (job.finishedOn - job.processedOn) / 1000);
  }

  async close(): Promise<void> {
    await Promise.all(this.queues.map((queue) => queue.close()));
  }
}
