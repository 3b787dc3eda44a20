import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadCheckpoint } from "../checkpoint/load-checkpoint.ts";
import type { Checkpoint } from "../checkpoint/model-weights.ts";
import { AlwaysDeferPolicy, AlwaysExitPolicy, ThresholdExitPolicy } from "../exits/exit-policy.ts";
import { writeRandomCheckpoint } from "../testing/random-checkpoint.ts";
import { loadLocalSplit } from "./local-split.ts";
import type { SegmentSessions } from "../engine/segment-sessions.ts";
import { UnavailableError } from "@tandem/common";
import { LocalUpperSegment } from "../protocol/local-upper-segment.ts";
import { SplitGenerator, type UpperAnswer, type UpperFrame, type UpperSegment } from "./split-generator.ts";
import { GREEDY, type SamplingOptions } from "./sampler.ts";

let dir: string;
let checkpoint: Checkpoint;
const options = () => ({ cacheDir: join(dir, "graphs") });

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "tandem-split-"));
  await writeRandomCheckpoint(join(dir, "model"), {
    architecture: "llama",
    vocabSize: 300,
    hiddenSize: 64,
    intermediateSize: 96,
    numLayers: 4,
    numHeads: 4,
    numKvHeads: 2,
    tieWordEmbeddings: true,
    seed: 9,
    dtype: "F32",
    initScale: 2,
  });
  checkpoint = await loadCheckpoint(join(dir, "model"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Records what reaches the upper segment. */
class RecordingUpper implements UpperSegment {
  readonly counts: number[] = [];
  readonly tokenIds: (number[] | undefined)[] = [];
  constructor(private readonly inner: UpperSegment) {}
  extend(frame: UpperFrame): Promise<UpperAnswer | undefined> {
    this.counts.push(frame.count);
    this.tokenIds.push(frame.tokenIds);
    return this.inner.extend(frame);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

const PROMPT = [10, 20, 30, 40, 50, 60];

async function wholeModelTokens(maxTokens: number, sampling?: SamplingOptions): Promise<number[]> {
  const whole = await loadLocalSplit(checkpoint, options());
  const tokens = [];
  for await (const t of new SplitGenerator(whole.lower, undefined, new AlwaysExitPolicy()).tokens(PROMPT, {
    maxTokens,
    sampling,
  }))
    tokens.push(t.token);
  await whole.release();
  return tokens;
}

describe("SplitGenerator", () => {
  it("penalizes alike when the upper segment answers: the frames' token ids reach it", async () => {
    const penalized: SamplingOptions = { ...GREEDY, repetitionPenalty: 3, frequencyPenalty: 2 };
    const expected = await wholeModelTokens(16, penalized);
    // The penalties matter here: without them the whole model says something else.
    expect(expected).not.toEqual(await wholeModelTokens(16));
    const split = await loadLocalSplit(checkpoint, { ...options(), split: 2, exits: [{ afterLayer: 2 }] });
    const upper = new RecordingUpper(new LocalUpperSegment(split.upper!, "p"));
    const generator = new SplitGenerator(split.lower, upper, new AlwaysDeferPolicy());
    const tokens = [];
    for await (const t of generator.tokens(PROMPT, { maxTokens: 16, sampling: penalized }))
      tokens.push(t.token);
    expect(tokens).toEqual(expected);
    // Each frame carried its positions' ids: the prompt's, then one generated token at a time.
    expect(upper.tokenIds[0]).toEqual(PROMPT);
    expect(upper.tokenIds.slice(1)).toEqual(tokens.slice(0, -1).map((t) => [t]));
    await split.release();
  });

  it("with every token escalated, generates exactly the whole model's greedy tokens", async () => {
    const expected = await wholeModelTokens(16);
    const split = await loadLocalSplit(checkpoint, { ...options(), split: 2, exits: [{ afterLayer: 2 }] });
    const upper = new RecordingUpper(new LocalUpperSegment(split.upper!, "s"));
    const generator = new SplitGenerator(split.lower, upper, new AlwaysDeferPolicy());
    const tokens = [];
    for await (const t of generator.tokens(PROMPT, { maxTokens: 16 })) {
      expect(t.source).toBe("cloud");
      expect(t.exitLayer).toBe(4);
      tokens.push(t.token);
    }
    expect(tokens).toEqual(expected);
    // The prompt goes up once, then one new position per escalation; without penalties the
    // worker needs no token ids, so none are sent.
    expect(upper.counts).toEqual([PROMPT.length, ...Array(15).fill(1)]);
    expect(upper.tokenIds.every((ids) => ids === undefined)).toBe(true);
  });

  it("sends the hidden states of locally answered positions with the next escalation, each exactly once", async () => {
    const split = await loadLocalSplit(checkpoint, {
      ...options(),
      split: 2,
      exits: [{ afterLayer: 1 }, { afterLayer: 2 }],
    });
    const upper = new RecordingUpper(new LocalUpperSegment(split.upper!, "s"));
    const policy = new ThresholdExitPolicy([{ afterLayer: 2, metric: "prob", threshold: 0.6 }]);
    const generator = new SplitGenerator(split.lower, upper, policy);
    const tokens = [];
    for await (const t of generator.tokens(PROMPT, { maxTokens: 24 })) tokens.push(t);
    const { stats } = generator;
    expect(stats.edgeTokens).toBeGreaterThan(0);
    expect(stats.cloudTokens).toBeGreaterThan(0);
    expect(stats.edgeTokens + stats.cloudTokens).toBe(24);
    // Positions sent = every position up to the last escalated token, no more, no fewer.
    const lastCloud = tokens.map((t) => t.source).lastIndexOf("cloud");
    expect(upper.counts.reduce((a, b) => a + b, 0)).toBe(tokens[lastCloud].position);
    expect(stats.positionsSent).toBe(tokens[lastCloud].position);
    tokens.forEach((t, i) => expect(t.position).toBe(PROMPT.length + i));
  });

  it("stops at a stop token", async () => {
    const expected = await wholeModelTokens(8);
    const whole = await loadLocalSplit(checkpoint, options());
    const tokens = [];
    for await (const t of new SplitGenerator(whole.lower, undefined, new AlwaysExitPolicy()).tokens(PROMPT, {
      maxTokens: 8,
      stopTokenIds: [expected[2]],
    })) {
      tokens.push(t.token);
    }
    expect(tokens).toEqual(expected.slice(0, expected.indexOf(expected[2]) + 1));
  });

  it("stops at whichever of several stop tokens comes first, as a model with several end tokens (Llama 3) needs", async () => {
    const expected = await wholeModelTokens(8);
    const whole = await loadLocalSplit(checkpoint, options());
    // The config's end tokens in any order, one never generated among them.
    const unseen = [...Array(300).keys()].find((id) => !expected.includes(id))!;
    const stopTokenIds = [expected[5], unseen, expected[3]];
    const tokens = [];
    for await (const t of new SplitGenerator(whole.lower, undefined, new AlwaysExitPolicy()).tokens(PROMPT, {
      maxTokens: 8,
      stopTokenIds,
    }))
      tokens.push(t.token);
    await whole.release();
    const first = expected.findIndex((id) => stopTokenIds.includes(id));
    expect(first).toBeLessThanOrEqual(3);
    expect(tokens).toEqual(expected.slice(0, first + 1));
  });
});

/** An upper segment that fails on chosen escalations: unavailable, or forgetting its context. */
class FaultyUpper implements UpperSegment {
  calls = 0;
  readonly starts: number[] = [];
  constructor(
    private readonly inner: LocalUpperSegment,
    private readonly sessions: SegmentSessions,
    private readonly faults: Record<number, "unavailable" | "forget">,
  ) {}
  async extend(frame: UpperFrame): Promise<UpperAnswer | undefined> {
    const fault = this.faults[this.calls++];
    if (fault === "unavailable") throw new UnavailableError("cloud down");
    if (fault === "forget") await this.sessions.truncate("s", 0);
    this.starts.push(frame.start);
    return this.inner.extend(frame);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

describe("SplitGenerator when the upper side fails", () => {
  it("answers from the deepest exit while the upper side is down, then resends only the unsent context", async () => {
    const split = await loadLocalSplit(checkpoint, { ...options(), split: 2, exits: [{ afterLayer: 2 }] });
    const upper = new FaultyUpper(new LocalUpperSegment(split.upper!, "s"), split.upper!, {
      2: "unavailable",
      3: "unavailable",
    });
    const generator = new SplitGenerator(split.lower, upper, new AlwaysDeferPolicy());
    const tokens = [];
    for await (const t of generator.tokens(PROMPT, { maxTokens: 8 })) tokens.push(t);
    expect(tokens.map((t) => t.source)).toEqual([
      "cloud",
      "cloud",
      "edge_fallback",
      "edge_fallback",
      "cloud",
      "cloud",
      "cloud",
      "cloud",
    ]);
    expect(tokens.map((t) => t.position)).toEqual(Array.from({ length: 8 }, (_, i) => PROMPT.length + i));
    // After the outage the next escalation starts where the upper side's context ended.
    expect(upper.starts).toEqual([0, 6, 7, 10, 11, 12]);
    expect(generator.stats.fallbackTokens).toBe(2);
  });

  it("replays the context when the upper side lost it and generates what an uninterrupted run does", async () => {
    const reference = await loadLocalSplit(checkpoint, {
      ...options(),
      split: 2,
      exits: [{ afterLayer: 2 }],
    });
    const expected = [];
    for await (const t of new SplitGenerator(
      reference.lower,
      new LocalUpperSegment(reference.upper!, "r"),
      new AlwaysDeferPolicy(),
    ).tokens(PROMPT, { maxTokens: 10 })) {
      expected.push(t.token);
    }
    const split = await loadLocalSplit(checkpoint, { ...options(), split: 2, exits: [{ afterLayer: 2 }] });
    const upper = new FaultyUpper(new LocalUpperSegment(split.upper!, "s"), split.upper!, { 4: "forget" });
    const generator = new SplitGenerator(split.lower, upper, new AlwaysDeferPolicy());
    const tokens = [];
    for await (const t of generator.tokens(PROMPT, { maxTokens: 10 })) tokens.push(t.token);
    expect(tokens).toEqual(expected);
    expect(generator.stats.contextReplays).toBe(1);
    expect(upper.starts).toContain(0);
  });
});
