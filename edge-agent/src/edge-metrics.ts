/**
 * The edge agent's Prometheus metrics, on the Registry runProgram gives the agent. The
 * generation path reports tokens, first tokens, edge steps and generations; the cloud
 * link (CloudLinks' `metrics`) reports escalations, bytes, round trips and replays.
 *
 * The escalation rate is derived, not exported:
 *   sum(rate(tandem_edge_escalations_total[5m])) / sum(rate(tandem_edge_tokens_total[5m]))
 * (escalations count ContextLost replays too, as the generation summary's do).
 *
 * What happens per token (tokens, escalations, bytes, exit layers, steps, round trips) is
 * counted in plain numbers and BucketHistograms and read at scrape time: prom-client's own
 * inc and observe build and hash a label object per call, a cost paid per token.
 */
import { BucketHistogram, Counter, Gauge, Histogram, type Registry } from "@tandem/common/metrics";
import { CODEC_NAMES, type CodecName, type ExpertCacheStats, type TokenSource } from "@tandem/runtime";

export type GenerationApi = "grpc" | "http";
export type GenerationOutcome = "ok" | "error" | "cancelled";

const TOKEN_SOURCES: TokenSource[] = ["edge", "cloud", "edge_fallback"];
const GENERATION_APIS: GenerationApi[] = ["grpc", "http"];

/** Layer numbers a model of up to 128 layers exits at: one bucket per layer up to 32. */
const DEFAULT_EXIT_LAYER_BUCKETS = [
  ...Array.from({ length: 32 }, (_, i) => i + 1),
  40,
  48,
  56,
  64,
  80,
  96,
  128,
];
/** A demo model's step takes about a millisecond, a 1B model's on a phone tens of ms. */
const STEP_SECONDS_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];
/** A round trip to the cloud: a LAN's milliseconds up to the cloud deadline (3 s). */
const ROUND_TRIP_SECONDS_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5];
const FIRST_TOKEN_SECONDS_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export interface EdgeMetricsOptions {
  /** The model's layers: the exit-layer histogram gets one bucket per layer. @default buckets for up to 128 layers */
  layers?: number;
  /** MoE with expertBudgetMb: the expert cache's counters, read at scrape time. @default no expert metrics */
  expertCache?: () => ExpertCacheStats;
}

/** Counts by label value, read into a prom-client Counter when scraped. */
type Tally<K extends string> = Record<K, number>;

const tally = <K extends string>(keys: readonly K[]): Tally<K> =>
  Object.fromEntries(keys.map((k) => [k, 0])) as Tally<K>;

export class EdgeMetrics {
  private readonly tokens = tally(TOKEN_SOURCES);
  private readonly hiddenStateBytesSent = tally(CODEC_NAMES);
  private readonly escalationBytesSent = tally(CODEC_NAMES);
  private readonly escalationBytesReceived = tally(CODEC_NAMES);
  private escalations = 0;
  private contextReplays = 0;
  private readonly checkedTokens = tally(["accepted", "rejected"] as const);
  private rolledBackTokens = 0;
  private readonly exitLayer: BucketHistogram;
  private readonly stepSeconds: BucketHistogram;
  private readonly roundTripSeconds: BucketHistogram;
  private readonly firstTokenSeconds: Histogram;
  private readonly activeGenerations: Gauge<"api">;
  private readonly generations: Counter<"api" | "outcome">;

  constructor(registry: Registry, options: EdgeMetricsOptions = {}) {
    const registers = [registry];
    /** A counter whose series are `counts`' entries, one per value of `label`. */
    const countedBy = <K extends string>(name: string, help: string, label: string, counts: Tally<K>) =>
      new Counter({
        name,
        help,
        labelNames: [label],
        registers,
        collect() {
          this.reset();
          for (const [value, count] of Object.entries(counts)) this.inc({ [label]: value }, count as number);
        },
      });
    /** A counter without labels whose value is `read()`. */
    const counted = (name: string, help: string, read: () => number) =>
      new Counter({
        name,
        help,
        registers,
        collect() {
          this.reset();
          this.inc(read());
        },
      });
    countedBy(
      "tandem_edge_tokens_total",
      "Tokens generated, by who answered: the edge's exits, the cloud, or the edge's deepest exit when the cloud did not answer",
      "source",
      this.tokens,
    );
    this.exitLayer = new BucketHistogram({
      name: "tandem_edge_exit_layer",
      help: "Layer each token was answered after (the model's layer count for the cloud's)",
      buckets: options.layers
        ? Array.from({ length: options.layers }, (_, i) => i + 1)
        : DEFAULT_EXIT_LAYER_BUCKETS,
      registers,
    });
    this.firstTokenSeconds = new Histogram({
      name: "tandem_edge_time_to_first_token_seconds",
      help: "From a generation's request to its first token",
      buckets: FIRST_TOKEN_SECONDS_BUCKETS,
      registers,
    });
    this.stepSeconds = new BucketHistogram({
      name: "tandem_edge_step_seconds",
      help: "One decode step of the edge's layers and exits",
      buckets: STEP_SECONDS_BUCKETS,
      registers,
    });
    this.activeGenerations = new Gauge({
      name: "tandem_edge_active_generations",
      help: "Generations in progress, by API",
      labelNames: ["api"],
      registers,
    });
    this.generations = new Counter({
      name: "tandem_edge_generations_total",
      help: "Generations ended, by API and outcome",
      labelNames: ["api", "outcome"],
      registers,
    });
    counted(
      "tandem_edge_escalations_total",
      "Escalations: frames sent to the cloud asking for a token (replays after ContextLost included)",
      () => this.escalations,
    );
    counted(
      "tandem_edge_context_replays_total",
      "ContextLost from the cloud: the session resends its context from where the worker's ends",
      () => this.contextReplays,
    );
    countedBy(
      "tandem_edge_checked_tokens_total",
      "Edge tokens the cloud checked (verify rollback/exact), by whether it answered them alike",
      "outcome",
      this.checkedTokens,
    );
    counted(
      "tandem_edge_rolled_back_tokens_total",
      "Tokens streamed and then withdrawn by a Rollback (verify rollback)",
      () => this.rolledBackTokens,
    );
    this.roundTripSeconds = new BucketHistogram({
      name: "tandem_edge_cloud_round_trip_seconds",
      help: "From sending an escalation to its token (opening the session's stream included, when it opens it)",
      buckets: ROUND_TRIP_SECONDS_BUCKETS,
      registers,
    });
    countedBy(
      "tandem_edge_hidden_state_bytes_sent_total",
      "Hidden-state payload bytes sent to the cloud, by codec",
      "codec",
      this.hiddenStateBytesSent,
    );
    countedBy(
      "tandem_edge_escalation_bytes_sent_total",
      "Escalate messages' bytes sent (frames with their fields, closes), by codec",
      "codec",
      this.escalationBytesSent,
    );
    countedBy(
      "tandem_edge_escalation_bytes_received_total",
      "Escalate replies' bytes received, by the session's codec",
      "codec",
      this.escalationBytesReceived,
    );
    const expertCache = options.expertCache;
    if (expertCache) {
      // How well expertBudgetMb fits the traffic: the hit rate is hits ÷ (hits + misses).
      counted(
        "tandem_edge_expert_cache_hits_total",
        "Expert runs whose expert was in memory (expertBudgetMb)",
        () => expertCache().hits,
      );
      counted(
        "tandem_edge_expert_cache_misses_total",
        "Expert runs that loaded their expert from disk first (expertBudgetMb)",
        () => expertCache().misses,
      );
      counted(
        "tandem_edge_expert_cache_prefetches_total",
        "Experts loaded ahead of need, predicted from the layer before (expertThreads)",
        () => expertCache().prefetches,
      );
      counted(
        "tandem_edge_expert_cache_prefetch_hits_total",
        "Runs whose expert a prefetch had loaded: predictions that came true",
        () => expertCache().prefetchHits,
      );
      counted(
        "tandem_edge_expert_cache_evictions_total",
        "Experts dropped to make room under expertBudgetMb",
        () => expertCache().evictions,
      );
      new Gauge({
        name: "tandem_edge_expert_cache_experts_bytes",
        help: "Bytes of all the segment's experts in their formats: what expertBudgetMb holds a share of",
        registers,
        collect() {
          this.set(expertCache().allExpertBytes);
        },
      });
      new Gauge({
        name: "tandem_edge_expert_cache_resident_bytes",
        help: "Bytes of expert weights in memory (at most expertBudgetMb)",
        registers,
        collect() {
          this.set(expertCache().residentBytes);
        },
      });
    }
    // Every label value at zero from the start, so rates and dashboards see the series at once.
    for (const api of GENERATION_APIS) this.activeGenerations.set({ api }, 0);
  }

  /** A token answered (`exitLayer`: the layer it was answered after). */
  tokenProduced(source: TokenSource, exitLayer: number): void {
    this.tokens[source]++;
    this.exitLayer.observe(exitLayer);
  }

  /** A generation's checks of its edge tokens (verified modes). */
  tokensChecked(drafted: number, accepted: number, rolledBack: number): void {
    this.checkedTokens.accepted += accepted;
    this.checkedTokens.rejected += drafted - accepted;
    this.rolledBackTokens += rolledBack;
  }

  firstToken(seconds: number): void {
    this.firstTokenSeconds.observe(seconds);
  }

  edgeStep(seconds: number): void {
    this.stepSeconds.observe(seconds);
  }

  generationStarted(api: GenerationApi): void {
    this.activeGenerations.inc({ api });
  }

  generationEnded(api: GenerationApi, outcome: GenerationOutcome): void {
    this.activeGenerations.dec({ api });
    this.generations.inc({ api, outcome });
  }

  /** The cloud link's side. */
  escalated(): void {
    this.escalations++;
  }

  contextReplayed(): void {
    this.contextReplays++;
  }

  cloudRoundTrip(seconds: number): void {
    this.roundTripSeconds.observe(seconds);
  }

  hiddenStateSent(codec: CodecName, bytes: number): void {
    this.hiddenStateBytesSent[codec] += bytes;
  }

  messageSent(codec: CodecName, bytes: number): void {
    this.escalationBytesSent[codec] += bytes;
  }

  replyReceived(codec: CodecName, bytes: number): void {
    this.escalationBytesReceived[codec] += bytes;
  }
}
