/**
 * Verified decoding: the cloud checks the edge's tokens in the frames that carry their
 * positions. "exact" yields only checked tokens and equals cloud-only decoding token for
 * token; "rollback" yields at once and withdraws what the cloud answers differently, so
 * the tokens left standing equal cloud-only decoding too.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { InvalidArgumentError, UnavailableError } from "@tandem/common";
import { loadCheckpoint } from "../checkpoint/load-checkpoint.ts";
import { AlwaysDeferPolicy, ThresholdExitPolicy } from "../exits/exit-policy.ts";
import { LocalUpperSegment } from "../protocol/local-upper-segment.ts";
import { TINY_LLAMA, writeRandomCheckpoint } from "../testing/random-checkpoint.ts";
import { loadLocalSplit, type LocalSplit } from "./local-split.ts";
import { GREEDY, type SamplingOptions } from "./sampler.ts";
import {
  SplitGenerator,
  type GenerateOptions,
  type GenerationItem,
  type UpperAnswer,
  type UpperFrame,
  type UpperSegment,
} from "./split-generator.ts";

let dir: string;
let split: LocalSplit;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "tandem-verified-"));
  // A random model whose exit after layer 2 often disagrees with its final head: the
  // checks find differences to roll back.
  await writeRandomCheckpoint(join(dir, "model"), {
    ...TINY_LLAMA,
    intermediateSize: 96,
    tieWordEmbeddings: true,
    seed: 9,
    initScale: 2,
  });
  split = await loadLocalSplit(await loadCheckpoint(join(dir, "model")), {
    cacheDir: join(dir, "graphs"),
    split: 2,
    exits: [{ afterLayer: 1 }, { afterLayer: 2 }],
  });
});
afterAll(async () => {
  await split.release();
  rmSync(dir, { recursive: true, force: true });
});

const PROMPTS = [[10, 20, 30, 40, 50, 60], [7, 7, 7], [299, 0, 150, 3, 88, 41, 12, 9], [1], [42, 43, 44, 45]];

/** Most exits answer at 0.05; few at 0.5: drafting runs long and short. */
const policy = (threshold: number) =>
  new ThresholdExitPolicy([
    { afterLayer: 1, metric: "prob", threshold: threshold * 2 },
    { afterLayer: 2, metric: "prob", threshold },
  ]);

let sessions = 0;

/** Runs one generation; returns the items it yielded and its stats. */
async function generate(
  prompt: number[],
  options: GenerateOptions,
  threshold?: number,
  upper: (inner: UpperSegment) => UpperSegment = (inner) => inner,
) {
  const local = new LocalUpperSegment(split.upper!, `s${sessions++}`);
  const generator = new SplitGenerator(
    split.lower,
    upper(local),
    threshold === undefined ? new AlwaysDeferPolicy() : policy(threshold),
  );
  const items: GenerationItem[] = [];
  try {
    for await (const item of generator.generate(prompt, options)) items.push(item);
  } finally {
    await local.close();
  }
  return { items, stats: generator.stats };
}

/** The tokens a client that applies rollbacks shows. */
function standing(items: GenerationItem[], promptTokens: number): number[] {
  const tokens: number[] = [];
  for (const item of items) {
    if (item.kind === "rollback") tokens.length = item.position - promptTokens;
    else {
      expect(item.position).toBe(promptTokens + tokens.length);
      tokens.push(item.token);
    }
  }
  return tokens;
}

async function cloudOnly(prompt: number[], options: GenerateOptions): Promise<number[]> {
  const { items } = await generate(prompt, options);
  return standing(items, prompt.length);
}

describe('verify "exact"', () => {
  it("generates the cloud-only tokens for every prompt, whatever the exits' threshold, and yields only checked tokens", async () => {
    let drafted = 0;
    let accepted = 0;
    let corrected = 0;
    for (const prompt of PROMPTS) {
      const expected = await cloudOnly(prompt, { maxTokens: 24 });
      for (const threshold of [0.02, 0.1, 0.4]) {
        const { items, stats } = await generate(prompt, { maxTokens: 24, verify: "exact" }, threshold);
        expect(items.some((item) => item.kind === "rollback")).toBe(false);
        expect(standing(items, prompt.length)).toEqual(expected);
        expect(stats.edgeTokens + stats.cloudTokens).toBe(24);
        drafted += stats.draftedTokens;
        accepted += stats.acceptedTokens;
        corrected += stats.cloudTokens;
      }
    }
    // The edge's drafts were both taken and refused: both paths ran.
    expect(accepted).toBeGreaterThan(0);
    expect(accepted).toBeLessThan(drafted);
    expect(corrected).toBeGreaterThan(0);
  });

  it("generates the cloud-only tokens when sampling with a seed, and with penalties", async () => {
    const sampled: SamplingOptions = { temperature: 0.5, topP: 0.95, seed: 1234n };
    const penalized: SamplingOptions = { ...GREEDY, repetitionPenalty: 1.5, frequencyPenalty: 0.5 };
    for (const sampling of [sampled, penalized]) {
      let accepted = 0;
      for (const prompt of PROMPTS) {
        const expected = await cloudOnly(prompt, { maxTokens: 20, sampling });
        const { items, stats } = await generate(prompt, { maxTokens: 20, sampling, verify: "exact" }, 0.05);
        expect(standing(items, prompt.length)).toEqual(expected);
        accepted += stats.acceptedTokens;
      }
      // Drafts were taken: the same draw on both sides agrees where the distributions do.
      expect(accepted).toBeGreaterThan(0);
    }
    // Another seed, another text: the seed is what the equality rests on.
    const other = await cloudOnly(PROMPTS[0], { maxTokens: 20, sampling: { ...sampled, seed: 99n } });
    expect(other).not.toEqual(await cloudOnly(PROMPTS[0], { maxTokens: 20, sampling: sampled }));
  });

  it("drafts at most max_draft_tokens before a check, and stops at a stop token", async () => {
    const prompt = PROMPTS[0];
    const expected = await cloudOnly(prompt, { maxTokens: 24 });
    const frames: number[] = [];
    const { items } = await generate(
      prompt,
      { maxTokens: 24, verify: "exact", maxDraftTokens: 3 },
      0.001,
      (inner) => ({
        extend: (frame: UpperFrame) => {
          if (frame.verifyFrom !== undefined) frames.push(frame.start + frame.count - frame.verifyFrom + 1);
          return inner.extend(frame);
        },
        close: () => inner.close(),
      }),
    );
    expect(standing(items, prompt.length)).toEqual(expected);
    expect(frames.length).toBeGreaterThan(0);
    expect(Math.max(...frames)).toBeLessThanOrEqual(3);

    const stop = expected[5];
    const stopped = await generate(prompt, { maxTokens: 24, verify: "exact", stopTokenIds: [stop] }, 0.02);
    expect(standing(stopped.items, prompt.length)).toEqual(expected.slice(0, expected.indexOf(stop) + 1));
  });

  it("waits for a cloud that comes back, and fails UNAVAILABLE rather than answering unchecked when it does not", async () => {
    const prompt = PROMPTS[0];
    const expected = await cloudOnly(prompt, { maxTokens: 12 });
    let calls = 0;
    const flaky = (inner: UpperSegment) => ({
      extend: (frame: UpperFrame) =>
        ++calls % 3 === 0 ? Promise.reject(new UnavailableError("worker restarting")) : inner.extend(frame),
      close: () => inner.close(),
    });
    const { items } = await generate(prompt, { maxTokens: 12, verify: "exact" }, 0.05, flaky);
    expect(standing(items, prompt.length)).toEqual(expected);

    const down = () => ({
      extend: (): Promise<UpperAnswer> => Promise.reject(new UnavailableError("cloud down")),
      close: () => Promise.resolve(),
    });
    await expect(
      generate(PROMPTS[0], { maxTokens: 8, verify: "exact", unreachableRetryMs: 300 }, 0.05, down),
    ).rejects.toBeInstanceOf(UnavailableError);
  });

  it("refuses a draft limit out of range, naming it", async () => {
    await expect(generate(PROMPTS[0], { maxTokens: 8, verify: "exact", maxDraftTokens: 0 })).rejects.toThrow(
      InvalidArgumentError,
    );
    await expect(generate(PROMPTS[0], { maxTokens: 8, verify: "exact", maxDraftTokens: 65 })).rejects.toThrow(
      /max_draft_tokens/,
    );
  });
});

describe('verify "rollback"', () => {
  it("streams the edge's tokens at once and, rollbacks applied, leaves the cloud-only tokens standing", async () => {
    let rollbacks = 0;
    for (const prompt of PROMPTS) {
      const expected = await cloudOnly(prompt, { maxTokens: 24 });
      for (const threshold of [0.02, 0.1]) {
        const { items, stats } = await generate(
          prompt,
          { maxTokens: 24, verify: "rollback", maxDraftTokens: 4 },
          threshold,
        );
        expect(standing(items, prompt.length)).toEqual(expected);
        const withdrawn = items.filter((item) => item.kind === "rollback").length;
        rollbacks += withdrawn;
        expect(stats.edgeTokens + stats.cloudTokens + stats.fallbackTokens).toBe(24);
        if (withdrawn > 0) expect(stats.rolledBackTokens).toBeGreaterThan(0);
      }
    }
    expect(rollbacks).toBeGreaterThan(0);
  });

  it("checks the last tokens before it ends, and a rollback there goes on generating to max_tokens", async () => {
    const prompt = PROMPTS[2];
    const expected = await cloudOnly(prompt, { maxTokens: 12 });
    // Checks only at the end (the limit is never reached) and at escalations.
    const { items } = await generate(
      prompt,
      { maxTokens: 12, verify: "rollback", maxDraftTokens: 64 },
      0.001,
    );
    expect(standing(items, prompt.length)).toEqual(expected);
  });

  it("checks a long run of fallback tokens a frame at a time once the cloud is back, and leaves the cloud-only tokens standing", async () => {
    const prompt = PROMPTS[0];
    const expected = await cloudOnly(prompt, { maxTokens: 100 });
    let calls = 0;
    const checked: number[] = [];
    const awayThenBack = (inner: UpperSegment) => ({
      extend: (frame: UpperFrame) => {
        if (++calls <= 90) return Promise.reject(new UnavailableError("cloud away"));
        if (frame.verifyFrom !== undefined) checked.push(frame.start + frame.count - frame.verifyFrom);
        return inner.extend(frame);
      },
      close: () => inner.close(),
    });
    const { items, stats } = await generate(
      prompt,
      { maxTokens: 100, verify: "rollback" },
      0.6,
      awayThenBack,
    );
    expect(stats.fallbackTokens + stats.edgeTokens + stats.cloudTokens).toBe(100);
    expect(standing(items, prompt.length)).toEqual(expected);
    // More than a frame's worth was waiting: it went up in frames of at most 64.
    expect(Math.max(...checked)).toBeLessThanOrEqual(64);
    expect(checked.filter((n) => n === 64).length).toBeGreaterThan(0);
  });

  it("keeps the edge's tokens (marked as it answered them) when the cloud cannot check them", async () => {
    const down = () => ({
      extend: (): Promise<UpperAnswer> => Promise.reject(new UnavailableError("cloud down")),
      close: () => Promise.resolve(),
    });
    const { items, stats } = await generate(PROMPTS[0], { maxTokens: 8, verify: "rollback" }, 0.3, down);
    expect(items.filter((item) => item.kind === "token")).toHaveLength(8);
    expect(items.some((item) => item.kind === "rollback")).toBe(false);
    expect(stats.edgeTokens + stats.fallbackTokens).toBe(8);
    expect(stats.acceptedTokens).toBe(0);
  });
});
