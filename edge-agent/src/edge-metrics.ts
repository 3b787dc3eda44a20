/**
 * The edge agent's Prometheus metrics, on the Registry runProgram gives the agent. The
 * generation path reports tokens, first tokens, edge steps and generations; the cloud
 * link (CloudLinks' `metrics`) reports escalations, bytes, round trips and replays.
 *
 * The escalation rate is derived, not exported:
 *   sum(rate(tandem_edge_escalations_total[5m])) / sum(rate(tandem_edge_tokens_total[5m]))
 * (escalations count ContextLost replays too, as the generation summary's do).
 */
import { Counter, Gauge, Histogram, type Registry } from "@tandem/common/metrics";
import { CODEC_NAMES, type CodecName, type TokenSource } from "@tandem/runtime";

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
}

export class EdgeMetrics {
  private readonly tokens: Counter<"source">;
  private readonly exitLayer: Histogram;
  private readonly firstTokenSeconds: Histogram;
  private readonly stepSeconds: Histogram;
  private readonly activeGenerations: Gauge<"api">;
  private readonly generations: Counter<"api" | "outcome">;
  private readonly escalations: Counter;
  private readonly contextReplays: Counter;
  private readonly roundTripSeconds: Histogram;
  private readonly hiddenStateBytesSent: Counter<"codec">;
  private readonly escalationBytesSent: Counter<"codec">;
  private readonly escalationBytesReceived: Counter<"codec">;
  private readonly tokensBy: Record<TokenSource, Counter.Internal>;
  private readonly hiddenStateBytesSentBy: Record<CodecName, Counter.Internal>;
  private readonly escalationBytesSentBy: Record<CodecName, Counter.Internal>;
  private readonly escalationBytesReceivedBy: Record<CodecName, Counter.Internal>;

  constructor(registry: Registry, options: EdgeMetricsOptions = {}) {
    const registers = [registry];
    this.tokens = new Counter({
      name: "tandem_edge_tokens_total",
      help: "Tokens generated, by who answered: the edge's exits, the cloud, or the edge's deepest exit when the cloud did not answer",
      labelNames: ["source"],
      registers,
    });
    this.exitLayer = new Histogram({
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
    this.stepSeconds = new Histogram({
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
    this.escalations = new Counter({
      name: "tandem_edge_escalations_total",
      help: "Escalations: frames sent to the cloud asking for a token (replays after ContextLost included)",
      registers,
    });
    this.contextReplays = new Counter({
      name: "tandem_edge_context_replays_total",
      help: "ContextLost from the cloud: the session resends its context from where the worker's ends",
      registers,
    });
    this.roundTripSeconds = new Histogram({
      name: "tandem_edge_cloud_round_trip_seconds",
      help: "From sending an escalation to its token (opening the session's stream included, when it opens it)",
      buckets: ROUND_TRIP_SECONDS_BUCKETS,
      registers,
    });
    this.hiddenStateBytesSent = new Counter({
      name: "tandem_edge_hidden_state_bytes_sent_total",
      help: "Hidden-state payload bytes sent to the cloud, by codec",
      labelNames: ["codec"],
      registers,
    });
    this.escalationBytesSent = new Counter({
      name: "tandem_edge_escalation_bytes_sent_total",
      help: "Escalate messages' bytes sent (frames with their fields, closes), by codec",
      labelNames: ["codec"],
      registers,
    });
    this.escalationBytesReceived = new Counter({
      name: "tandem_edge_escalation_bytes_received_total",
      help: "Escalate replies' bytes received, by the session's codec",
      labelNames: ["codec"],
      registers,
    });
    // Every label value at zero from the start, so rates and dashboards see the series at
    // once; and each series bound once, so a token's reports hash no labels.
    this.tokensBy = Object.fromEntries(
      TOKEN_SOURCES.map((source) => [source, this.tokens.labels({ source })]),
    ) as Record<TokenSource, Counter.Internal>;
    for (const series of Object.values(this.tokensBy)) series.inc(0);
    for (const api of GENERATION_APIS) this.activeGenerations.set({ api }, 0);
    const byCodec = (counter: Counter<"codec">) => {
      const bound = Object.fromEntries(CODEC_NAMES.map((codec) => [codec, counter.labels({ codec })]));
      for (const series of Object.values(bound)) series.inc(0);
      return bound as Record<CodecName, Counter.Internal>;
    };
    this.hiddenStateBytesSentBy = byCodec(this.hiddenStateBytesSent);
    this.escalationBytesSentBy = byCodec(this.escalationBytesSent);
    this.escalationBytesReceivedBy = byCodec(this.escalationBytesReceived);
  }

  /** A token answered (`exitLayer`: the layer it was answered after). */
  tokenProduced(source: TokenSource, exitLayer: number): void {
    this.tokensBy[source].inc();
    this.exitLayer.observe(exitLayer);
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
    this.escalations.inc();
  }

  contextReplayed(): void {
    this.contextReplays.inc();
  }

  cloudRoundTrip(seconds: number): void {
    this.roundTripSeconds.observe(seconds);
  }

  hiddenStateSent(codec: CodecName, bytes: number): void {
    this.hiddenStateBytesSentBy[codec].inc(bytes);
  }

  messageSent(codec: CodecName, bytes: number): void {
    this.escalationBytesSentBy[codec].inc(bytes);
  }

  replyReceived(codec: CodecName, bytes: number): void {
    this.escalationBytesReceivedBy[codec].inc(bytes);
  }
}
