/**
 * How the chaos benchmark scores what a client received across a fault, against the
 * uninterrupted run of the same prompt (greedy, fp32 codec: the same tokens every time).
 *
 * - tokens_lost: positions of the uninterrupted output that never arrived (a generation
 *   cut short by an error, or a position skipped).
 * - tokens_repeated: token events at a position already delivered, plus events at a
 *   position the uninterrupted output does not have (output longer).
 * - different: the token ids, in the order they arrived, are not the uninterrupted ones.
 * - fallback tokens: answered by the edge's own exit — EDGE_FALLBACK, and in cloud-only
 *   mode any token not from the cloud.
 * - recovery: from the fault to the first cloud token T such that from T to the end of the
 *   observation every token is from the cloud, no generation fails and the client never
 *   waits more than `stallMs` for the next event. For a fault the client does not notice,
 *   that is the gap to the next cloud token; a run still disrupted at its end has not
 *   recovered, and counts the whole window (a lower bound).
 */
import type { GenerationMode, GenerationRecord, TimedToken } from "./generation-record.ts";

/** The uninterrupted output of a prompt: token ids and the position of each. */
export interface Reference {
  ids: number[];
  positions: number[];
}

export interface GenerationScore {
  lost: number;
  repeated: number;
  different: boolean;
  fallback: number;
}

export function isFallback(token: TimedToken, mode: GenerationMode): boolean {
  if (token.source === "TOKEN_SOURCE_EDGE_FALLBACK") return true;
  return mode === "MODE_CLOUD_ONLY" && token.source !== "TOKEN_SOURCE_CLOUD";
}

export function scoreGeneration(
  reference: Reference,
  record: GenerationRecord,
  mode: GenerationMode,
): GenerationScore {
  const expected = new Set(reference.positions);
  const seen = new Map<number, number>();
  let repeated = 0;
  for (const token of record.tokens) {
    const count = seen.get(token.position) ?? 0;
    if (count > 0 || !expected.has(token.position)) repeated++;
    seen.set(token.position, count + 1);
  }
  const lost = reference.positions.filter((position) => !seen.has(position)).length;
  const ids = record.tokens.map((token) => token.id);
  const different = ids.length !== reference.ids.length || ids.some((id, i) => id !== reference.ids[i]);
  const fallback = record.tokens.filter((token) => isFallback(token, mode)).length;
  return { lost, repeated, different, fallback };
}

export interface Recovery {
  /** ms from the fault; the whole observed window when `recovered` is false. */
  ms: number;
  recovered: boolean;
}

/**
 * Recovery after a fault at `faultAt` over the generations that ran from then on, in order
 * (the one the fault hit first). See the module's comment.
 */
export function recoveryAfter(
  records: GenerationRecord[],
  faultAt: number,
  mode: GenerationMode,
  stallMs: number,
): Recovery {
  let previous = faultAt;
  let recoveredAt: number | undefined;
  /** The gap since the last event, counted from the fault for the first one after it. */
  const gapTo = (at: number) => {
    const gap = at - Math.max(previous, faultAt);
    previous = at;
    return gap;
  };
  for (const record of records) {
    if (record.startedAt >= faultAt && gapTo(record.startedAt) > stallMs) recoveredAt = undefined;
    for (const token of record.tokens) {
      if (token.at < faultAt) {
        previous = token.at;
        continue;
      }
      const stalled = gapTo(token.at) > stallMs;
      if (isFallback(token, mode)) recoveredAt = undefined;
      else if (token.source === "TOKEN_SOURCE_CLOUD") {
        // A cloud token after a stall ends it: it is where the client is served again.
        if (stalled || recoveredAt === undefined) recoveredAt = token.at;
      } else if (stalled) recoveredAt = undefined; // an edge token proves nothing about the cloud
    }
    if (record.endedAt >= faultAt && (gapTo(record.endedAt) > stallMs || record.error !== undefined))
      recoveredAt = undefined;
  }
  if (recoveredAt !== undefined) return { ms: recoveredAt - faultAt, recovered: true };
  return { ms: previous - faultAt, recovered: false };
}

/** The longest the client waited for its next event (a generation's start, a token, its end) after the fault. */
export function longestWait(records: GenerationRecord[], faultAt: number): number {
  let previous = faultAt;
  let longest = 0;
  for (const record of records)
    for (const at of [record.startedAt, ...record.tokens.map((t) => t.at), record.endedAt]) {
      if (at < faultAt) continue;
      longest = Math.max(longest, at - Math.max(previous, faultAt));
      previous = at;
    }
  return longest;
}
