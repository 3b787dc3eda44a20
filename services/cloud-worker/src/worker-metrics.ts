/**
 * The cloud worker's Prometheus metrics. What the worker already counts (its streams'
 * counters, the context manager's sessions, KV bytes and evictions) is read at scrape
 * time; the decode batcher and the context manager report batches and steps as they run.
 */
import { BucketHistogram, Counter, Gauge, type Registry } from "@tandem/common/metrics";
import { CODEC_NAMES, type CodecName } from "@tandem/runtime";

/** What the scrape-time series read: the context manager's stats and the streams' counters. */
export interface WorkerMetricSources {
  stats(): { sessions: number; kvBytes: number; evictions: number };
  counters: {
    tokens: number;
    contextLost: number;
    verifiedTokens: number;
    verifyRejections: number;
    bytesReceivedByCodec: Partial<Record<CodecName, number>>;
  };
}

/** Batch sizes up to the largest maxBatch worth having (a bucket per size at the small end). */
const BATCH_SIZE_BUCKETS = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64];
/** A step of the demo models takes ~1 ms, of a 1B model tens of ms. */
const STEP_SECONDS_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

export class WorkerMetrics {
  // Observed per frame: BucketHistograms, which hash no labels.
  private readonly batchSize: BucketHistogram;
  private readonly stepSeconds: BucketHistogram;

  constructor(registry: Registry, sources: WorkerMetricSources) {
    new Gauge({
      name: "tandem_worker_active_sessions",
      help: "Sessions whose KV cache this worker holds",
      registers: [registry],
      collect() {
        this.set(sources.stats().sessions);
      },
    });
    new Gauge({
      name: "tandem_worker_kv_cache_bytes",
      help: "Bytes the sessions' KV caches take (what memoryMb budgets)",
      registers: [registry],
      collect() {
        this.set(sources.stats().kvBytes);
      },
    });
    // Counters the worker keeps anyway, copied at scrape time (reset, then the running total).
    new Counter({
      name: "tandem_worker_evictions_total",
      help: "Idle sessions evicted to stay within the KV budget",
      registers: [registry],
      collect() {
        this.reset();
        this.inc(sources.stats().evictions);
      },
    });
    new Counter({
      name: "tandem_worker_context_lost_total",
      help: "Frames answered ContextLost (the edge replays its context)",
      registers: [registry],
      collect() {
        this.reset();
        this.inc(sources.counters.contextLost);
      },
    });
    new Counter({
      name: "tandem_worker_tokens_total",
      help: "Tokens this worker answered",
      registers: [registry],
      collect() {
        this.reset();
        this.inc(sources.counters.tokens);
      },
    });
    new Counter({
      name: "tandem_worker_checked_tokens_total",
      help: "Edge tokens checked against this worker's head (verified decoding), by whether it answered them alike",
      labelNames: ["outcome"],
      registers: [registry],
      collect() {
        this.reset();
        this.inc({ outcome: "accepted" }, sources.counters.verifiedTokens);
        this.inc({ outcome: "rejected" }, sources.counters.verifyRejections);
      },
    });
    new Counter({
      name: "tandem_worker_hidden_state_bytes_received_total",
      help: "Hidden-state payload bytes of the frames received, by codec",
      labelNames: ["codec"],
      registers: [registry],
      collect() {
        this.reset();
        for (const codec of CODEC_NAMES)
          this.inc({ codec }, sources.counters.bytesReceivedByCodec[codec] ?? 0);
      },
    });
    this.batchSize = new BucketHistogram({
      name: "tandem_worker_decode_batch_size",
      help: "Sessions in each step the decode batcher ran",
      buckets: BATCH_SIZE_BUCKETS,
      registers: [registry],
    });
    this.stepSeconds = new BucketHistogram({
      name: "tandem_worker_step_seconds",
      help: "Time to apply one frame to a session's context, waiting for its decode batch included",
      buckets: STEP_SECONDS_BUCKETS,
      registers: [registry],
    });
  }

  decodeBatchRan(sessions: number): void {
    this.batchSize.observe(sessions);
  }

  /** Starts timing a frame's step; call the result when it is done. */
  stepStarted(): () => void {
    // Not prom-client's startTimer: it merges label objects on every call, once per frame.
    const started = performance.now();
    return () => this.stepSeconds.observe((performance.now() - started) / 1000);
  }
}
