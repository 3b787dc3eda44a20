/**
 * One generation on the edge, whichever API asked for it: admission against the agent's
 * stream limits, the collaborative loop of one session (SplitGenerator with a cloud
 * session), text decoding with stop sequences, and the summary. The gRPC service and the
 * OpenAI-compatible HTTP API both consume these events, so both generate the same tokens
 * for the same request.
 *
 * Each token event is yielded as soon as its token is produced. Text that cannot be
 * emitted yet (a possible start of a stop sequence, an unfinished character) joins a
 * later token's text; the last token of a generation — at max_tokens, an end token or a
 * stop sequence, each known when the token arrives — carries everything still held.
 *
 * With verify "rollback" a rollback event may follow (even after a token marked last):
 * the tokens from its position on are withdrawn with their text, and generation goes on
 * from the cloud's token there. The text state is rebuilt from the tokens that stand, so
 * the tokens that replace them carry exactly the text a run without the withdrawn ones
 * would have.
 */
import { randomUUID } from "node:crypto";
import {
  IncrementalDecoder,
  type ExitPolicy,
  type ModelConfig,
  type SegmentSessions,
  SplitGenerator,
  type TokenLogprobs,
  type TokenSource,
  type Tokenizer,
} from "@tandem/runtime";
import { ResourceExhaustedError, contextOf, type Context } from "@tandem/common";
import type { CloudLinks, CloudSession } from "./cloud-link.ts";
import type { RequestLimits, ValidRequest } from "./generation-request.ts";
import { StopSequenceFilter } from "./stop-sequences.ts";
import type { EdgeMetrics, GenerationApi, GenerationOutcome } from "./edge-metrics.ts";
import { EDGE_SPANS, runInRequestSpan, type RequestHeaders } from "./edge-tracing.ts";

export interface GeneratedTokenEvent {
  kind: "token";
  id: number;
  /** Text this token completes, with any text held back before it. */
  text: string;
  source: TokenSource;
  exitLayer: number;
  confidence: number;
  position: number;
  logprobs?: TokenLogprobs;
  /** The generation's last token. */
  last: boolean;
}

/** The tokens at `position` and after it are withdrawn (verify "rollback"). */
export interface GenerationRollback {
  kind: "rollback";
  position: number;
}

export type FinishReason = "length" | "stop" | "eos";

export interface GenerationSummary {
  kind: "summary";
  promptTokens: number;
  completionTokens: number;
  edgeTokens: number;
  cloudTokens: number;
  fallbackTokens: number;
  escalations: number;
  bytesSent: number;
  bytesReceived: number;
  finishReason: FinishReason;
  firstTokenMs: number;
  totalMs: number;
  edgeComputeMs: number;
  cloudWaitMs: number;
  /** Verified modes: edge tokens checked by the cloud, those it answered alike, tokens withdrawn. */
  draftedTokens: number;
  acceptedTokens: number;
  rolledBackTokens: number;
}

export type GenerationEvent = GeneratedTokenEvent | GenerationRollback | GenerationSummary;

/** What running a generation needs of the agent. */
export interface GenerationContext {
  config: ModelConfig;
  lower: SegmentSessions;
  tokenizer: Tokenizer;
  /** Undefined: no cloud configured (edge only). */
  cloud?: CloudLinks;
  limits: RequestLimits;
  /** Undefined: metrics off. */
  metrics?: EdgeMetrics;
}

/** How one API takes a generation's events. */
export interface GenerationSink {
  api: GenerationApi;
  /** The request's gRPC metadata or HTTP headers: a client's trace context, if it sent one. */
  headers: RequestHeaders;
  /**
   * Delivers one event (waiting on the client's flow control); false when the client has
   * gone, which ends the generation.
   */
  emit(event: GenerationEvent): Promise<boolean>;
}

/**
 * Runs one generation in its request span (the root of its trace, or a child of the
 * client's when the request's headers carry one; escalations are its children), counting it in the metrics, and delivers each event to `sink` as it comes.
 * Resolves when the generation is over: finished, ended by the client, or failed (then it
 * rejects, and the sink reports the error in its API's terms). The device session and
 * the cloud session are released before it settles.
 */
export async function runGeneration(
  context: GenerationContext,
  request: ValidRequest,
  sink: GenerationSink,
): Promise<void> {
  const metrics = context.metrics;
  metrics?.generationStarted(sink.api);
  let outcome: GenerationOutcome = "error";
  const sessionId = randomUUID();
  try {
    await runInRequestSpan(
      EDGE_SPANS.request,
      {
        "tandem.session_id": sessionId,
        "tandem.api": sink.api,
        "tandem.mode": request.mode,
        "tandem.prompt_tokens": request.ids.length,
        "tandem.max_tokens": request.maxTokens,
      },
      sink.headers,
      async (span) => {
        const events = generationEvents(context, request, sessionId, contextOf(span));
        try {
          for await (const event of events) {
            if (event.kind === "token") metrics?.tokenProduced(event.source, event.exitLayer);
            else if (event.kind === "summary") {
              metrics?.tokensChecked(event.draftedTokens, event.acceptedTokens, event.rolledBackTokens);
              if (span.isRecording())
                span.setAttributes({
                  "tandem.completion_tokens": event.completionTokens,
                  "tandem.edge_tokens": event.edgeTokens,
                  "tandem.cloud_tokens": event.cloudTokens,
                  "tandem.fallback_tokens": event.fallbackTokens,
                  "tandem.escalations": event.escalations,
                  "tandem.finish_reason": event.finishReason,
                  "tandem.verify": request.verify,
                  "tandem.drafted_tokens": event.draftedTokens,
                  "tandem.accepted_tokens": event.acceptedTokens,
                  "tandem.rolled_back_tokens": event.rolledBackTokens,
                });
            }
            if (!(await sink.emit(event))) {
              outcome = "cancelled";
              return;
            }
          }
          outcome = "ok";
        } finally {
          // Ends the generation if it is still running (a client gone, a write that failed).
          await events.return(undefined);
        }
      },
    );
  } finally {
    metrics?.generationEnded(sink.api, outcome);
  }
}

/** Places for generations running at once, overall and per API key. */
export class GenerationAdmission {
  private running = 0;
  private readonly runningByKey = new Map<string, number>();

  constructor(private readonly limits: Pick<RequestLimits, "maxStreams" | "maxStreamsPerKey">) {}

  /** Takes a place for one generation, or throws RESOURCE_EXHAUSTED; returns its release. */
  admit(key: string | undefined): () => void {
    const { maxStreams, maxStreamsPerKey } = this.limits;
    if (this.running >= maxStreams)
      throw new ResourceExhaustedError(
        "streams",
        `${this.running} generations are running, the limit is ${maxStreams}`,
      );
    const mine = key === undefined ? 0 : (this.runningByKey.get(key) ?? 0);
    if (key !== undefined && mine >= maxStreamsPerKey)
      throw new ResourceExhaustedError(
        "streams",
        `${mine} generations of this API key are running, the limit is ${maxStreamsPerKey}`,
      );
    this.running++;
    if (key !== undefined) this.runningByKey.set(key, mine + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.running--;
      if (key === undefined) return;
      const left = (this.runningByKey.get(key) ?? 1) - 1;
      if (left === 0) this.runningByKey.delete(key);
      else this.runningByKey.set(key, left);
    };
  }
}

/**
 * One generation's events: a token event per token, then the summary. A consumer that
 * stops iterating (a client gone) ends it: the device session and the cloud session are
 * released in the generator's `finally`. The cloud session's escalation spans are
 * children of `trace`, the request's span.
 */
async function* generationEvents(
  context: GenerationContext,
  request: ValidRequest,
  sessionId: string,
  trace: Context | undefined,
): AsyncGenerator<GenerationEvent> {
  const started = performance.now();
  let firstTokenMs = 0;
  let cloudSession: CloudSession | undefined;
  let finishReason: FinishReason = "length";
  const eos = new Set(context.config.eosTokenId ?? []);
  try {
    if (request.mode !== "MODE_EDGE_ONLY" && context.cloud)
      cloudSession = context.cloud.session(sessionId, trace);
    const generator = new SplitGenerator(
      context.lower,
      cloudSession,
      request.policy() satisfies ExitPolicy,
      sessionId,
    );
    const promptTokens = request.ids.length;
    /** The generated tokens that stand (withdrawn ones removed), and the text state after them. */
    const generated: number[] = [];
    let decoder = new IncrementalDecoder(context.tokenizer);
    let stops = new StopSequenceFilter(request.stops);
    let lowerMs = 0;
    for await (const item of generator.generate(request.ids, {
      maxTokens: request.maxTokens,
      stopTokenIds: [...eos],
      sampling: request.sampling,
      topLogprobs: request.topLogprobs,
      verify: request.verify,
      maxDraftTokens: request.maxDraftTokens,
    })) {
      if (item.kind === "rollback") {
        generated.length = item.position - promptTokens;
        decoder = new IncrementalDecoder(context.tokenizer);
        stops = new StopSequenceFilter(request.stops);
        for (const id of generated) if (!eos.has(id)) stops.push(decoder.push(id));
        finishReason = "length";
        yield { kind: "rollback", position: item.position };
        continue;
      }
      const token = item;
      generated.push(token.token);
      if (firstTokenMs === 0) {
        firstTokenMs = performance.now() - started;
        context.metrics?.firstToken(firstTokenMs / 1000);
      } else {
        // The device's step for this token (the first one's is the prompt's prefill).
        context.metrics?.edgeStep((generator.stats.lowerMs - lowerMs) / 1000);
      }
      lowerMs = generator.stats.lowerMs;
      const isEos = eos.has(token.token);
      let text = isEos ? "" : stops.push(decoder.push(token.token));
      if (isEos) finishReason = "eos";
      else if (stops.stopped) finishReason = "stop";
      const last = isEos || stops.stopped || generated.length === request.maxTokens;
      if (last) {
        text += stops.push(decoder.flush()) + stops.flush();
        // Over unless a check withdraws tokens (verify "rollback"): then generation goes on.
        generator.finish();
      }
      yield {
        kind: "token",
        id: token.token,
        text,
        source: token.source,
        exitLayer: token.exitLayer,
        confidence: token.confidence,
        position: token.position,
        logprobs: token.logprobs,
        last,
      };
    }
    const stats = generator.stats;
    yield {
      kind: "summary",
      promptTokens: stats.promptTokens,
      completionTokens: generated.length,
      edgeTokens: stats.edgeTokens,
      cloudTokens: stats.cloudTokens,
      fallbackTokens: stats.fallbackTokens,
      escalations: stats.escalations,
      bytesSent: cloudSession?.bytesSent ?? 0,
      bytesReceived: cloudSession?.bytesReceived ?? 0,
      finishReason,
      firstTokenMs,
      totalMs: performance.now() - started,
      edgeComputeMs: stats.lowerMs,
      cloudWaitMs: stats.upperMs,
      draftedTokens: stats.draftedTokens,
      acceptedTokens: stats.acceptedTokens,
      rolledBackTokens: stats.rolledBackTokens,
    };
  } finally {
    await cloudSession?.close();
  }
}
