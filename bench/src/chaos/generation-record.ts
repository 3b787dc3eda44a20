/**
 * One generation as the chaos benchmark's client saw it: every token event with the time
 * it arrived (performance.now(), ms), and how the call ended. Timed at arrival, not in
 * whatever the callback then does (a fault injected on a token runs in the background).
 */
import * as grpc from "@grpc/grpc-js";
import { generate } from "@tandem/testkit";

export type GenerationMode = "MODE_CLOUD_ONLY" | "MODE_AUTO";

export interface TimedToken {
  id: number;
  position: number;
  /** TOKEN_SOURCE_CLOUD, TOKEN_SOURCE_EDGE or TOKEN_SOURCE_EDGE_FALLBACK. */
  source: string;
  at: number;
}

export interface GenerationRecord {
  prompt: string;
  startedAt: number;
  endedAt: number;
  tokens: TimedToken[];
  /** The call's status when it failed (e.g. "UNAVAILABLE: …"). */
  error?: string;
}

/** Runs one greedy generation through the edge's public API; `onToken` must not block (it is not awaited). */
export async function timedGeneration(
  edgeAddress: string,
  prompt: string,
  maxTokens: number,
  mode: GenerationMode,
  onToken?: (index: number) => void,
): Promise<GenerationRecord> {
  const arrivals: number[] = [];
  const startedAt = performance.now();
  const result = await generate(edgeAddress, { text: prompt, maxTokens, mode }, (index) => {
    arrivals[index] = performance.now();
    onToken?.(index);
  });
  const endedAt = performance.now();
  return {
    prompt,
    startedAt,
    endedAt,
    tokens: result.tokens.map((token, index) => ({
      id: token.id,
      position: token.position,
      source: String(token.source),
      at: arrivals[index] ?? endedAt,
    })),
    error: result.error ? `${grpc.status[result.error.code]}: ${result.error.details}` : undefined,
  };
}
