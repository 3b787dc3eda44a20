import { describe, expect, it } from "vitest";
import { batchQueueLocation } from "./batch-queues.ts";
import { validateJobData } from "./batch-jobs.ts";

describe("batch job data", () => {
  it("accepts well-formed jobs of every kind", () => {
    expect(() =>
      validateJobData("generate", {
        model: "m",
        prompts: ["a", "b"],
        maxTokens: 8,
        sampling: { temperature: 0.7, topP: 0.9, seed: 3 },
        weights: "int8",
      }),
    ).not.toThrow();
    expect(() =>
      validateJobData("calibrate", {
        model: "m",
        split: 3,
        exitLayers: [2, 3],
        textFile: "t",
        out: "o",
        targets: [0.99],
      }),
    ).not.toThrow();
    expect(() => validateJobData("build-graphs", { model: "m", split: 3 })).not.toThrow();
  });

  it("fills in every default once, from the schema", () => {
    expect(
      validateJobData("generate", { model: "m", prompts: ["a"], sampling: { temperature: 0.5 } }),
    ).toEqual({
      model: "m",
      prompts: ["a"],
      maxTokens: 64,
      target: 0.99,
      sampling: { temperature: 0.5, topP: 1, seed: 0, topK: 0 },
      weights: "fp32",
    });
  });

  it("names the bad field", () => {
    const cases: [Parameters<typeof validateJobData>[0], unknown, RegExp][] = [
      ["generate", null, /^data: must be an object, got null/],
      ["generate", { prompts: ["a"] }, /^model: is required/],
      ["generate", { model: "m", prompts: [] }, /^prompts: must hold at least 1 item/],
      ["generate", { model: "m", prompts: ["a", 3] }, /^prompts\[1\]: must be a string, got 3/],
      ["generate", { model: "m", prompts: ["a", ""] }, /^prompts\[1\]: must not be empty/],
      ["generate", { model: "m", prompts: ["a"], maxTokens: 0 }, /^maxTokens: must be ≥ 1, got 0/],
      ["generate", { model: "m", prompts: ["a"], maxTokens: 2.5 }, /^maxTokens: must be an integer, got 2.5/],
      [
        "generate",
        { model: "m", prompts: ["a"], weights: "fp8" },
        /^weights: must be one of fp32, int8, w8a8, int4, got "fp8"/,
      ],
      [
        "generate",
        { model: "m", prompts: ["a"], sampling: { topP: 0.5 } },
        /^sampling.temperature: is required/,
      ],
      // The one set of sampling limits (the edge's API and the escalation protocol take the same).
      [
        "generate",
        { model: "m", prompts: ["a"], sampling: { temperature: 101 } },
        /^sampling.temperature: must be ≤ 100/,
      ],
      [
        "generate",
        { model: "m", prompts: ["a"], sampling: { temperature: 1, presencePenalty: 2.5 } },
        /^sampling.presencePenalty: must be ≤ 2/,
      ],
      [
        "generate",
        { model: "m", prompts: ["a"], sampling: { temperature: 1, topK: -1 } },
        /^sampling.topK: must be ≥ 0/,
      ],
      // A typo is refused by name, not silently ignored.
      ["generate", { model: "m", prompts: ["a"], max_token: 5 }, /^max_token: is not a known key/],
      [
        "generate",
        { model: "m", prompts: ["a"], sampling: { temperature: 1, top_p: 0.5 } },
        /^sampling.top_p: is not a known key/,
      ],
      ["calibrate", { model: "m", split: 3, textFile: "t", out: "o" }, /^exitLayers: is required/],
      [
        "calibrate",
        { model: "m", split: 3, exitLayers: [2, 0], textFile: "t", out: "o" },
        /^exitLayers\[1\]: must be ≥ 1/,
      ],
      [
        "calibrate",
        { model: "m", split: 3, exitLayers: [2], textFile: "t", out: "o", targets: [1.5] },
        /^targets\[0\]: must be < 1/,
      ],
      ["build-graphs", { model: "m" }, /^split: is required/],
    ];
    for (const [kind, data, message] of cases) expect(() => validateJobData(kind, data)).toThrow(message);
  });

  it("keeps each cluster's queues under its own key prefix", () => {
    const location = batchQueueLocation("redis://127.0.0.1:6380/2", "edge-eu");
    expect(location.prefix).toBe("tandem:edge-eu");
    expect(location.connection).toMatchObject({ host: "127.0.0.1", port: 6380, db: 2 });
    expect(() => batchQueueLocation("http://x", "a")).toThrow(/^redisUrl: must be redis:\/\//);
    expect(() => batchQueueLocation("redis://x", "a:b")).toThrow(/^cluster:/);
    expect(() => batchQueueLocation("redis://x:6379/abc", "a")).toThrow(
      /^redisUrl: the database .* got "abc"/,
    );
    // A URL that does not parse is named without the password it may carry.
    expect(() => batchQueueLocation("redis://u:secret@[x", "a")).toThrow(/^redisUrl: is not a URL/);
    expect(() => batchQueueLocation("redis://u:secret@[x", "a")).not.toThrow(/secret/);
  });
});
