import { describe, expect, it } from "vitest";
import { timePrefillDecode, type TimedEngine } from "./prefill-decode-timing.ts";

/** An engine that records its calls and takes `ms` milliseconds per call (busy wait). */
function recordingEngine(msPerCall: (call: string, index: number) => number) {
  const calls: string[] = [];
  const busy = (ms: number) => {
    const until = performance.now() + ms;
    while (performance.now() < until);
  };
  const engine: TimedEngine = {
    reset: async () => {
      calls.push("reset");
    },
    prefill: async (prompt) => {
      calls.push(`prefill ${prompt.length}`);
      busy(msPerCall("prefill", calls.filter((c) => c.startsWith("prefill")).length - 1));
      return 7;
    },
    decode: async (token) => {
      calls.push(`decode ${token}`);
      busy(msPerCall("decode", 0));
      return token;
    },
  };
  return { engine, calls };
}

describe("timing an engine's prefill and decode", () => {
  it("warms up with the whole prompt and one decode step, then resets before each round", async () => {
    const { engine, calls } = recordingEngine(() => 0);
    await timePrefillDecode(engine, { prompt: [1, 2, 3, 4], decodeTokens: 2, rounds: 2 });
    expect(calls).toEqual([
      "reset",
      "prefill 4",
      "decode 7",
      "reset",
      "prefill 4",
      "decode 7",
      "decode 7",
      "reset",
      "prefill 4",
      "decode 7",
      "decode 7",
    ]);
  });

  it("reports the median round beside every round and the cold warm-up prefill apart", async () => {
    // Prefill calls take 200 ms (the warm-up), then 10, 90, 40 ms in the timed rounds.
    const prefillMs = [200, 10, 90, 40];
    const { engine } = recordingEngine((call, index) => (call === "prefill" ? prefillMs[index] : 1));
    const timing = await timePrefillDecode(engine, {
      prompt: new Array(100).fill(1),
      decodeTokens: 3,
      rounds: 3,
    });
    expect(timing.prefill_tokens_per_s_rounds).toHaveLength(3);
    expect(timing.decode_tokens_per_s_rounds).toHaveLength(3);
    // 100 tokens in at least 40 ms (the median round) is at most 2500 tokens/s; the warm-up's 200 ms 500.
    expect(timing.first_token_latency_ms).toBeGreaterThanOrEqual(40);
    expect(timing.prefill_tokens_per_s).toBeLessThanOrEqual(2500);
    expect(timing.cold_prefill_tokens_per_s).toBeLessThanOrEqual(500);
    expect(timing.cold_prefill_tokens_per_s).toBeLessThan(timing.prefill_tokens_per_s);
    const [fast, slow, middle] = timing.prefill_tokens_per_s_rounds;
    expect(fast).toBeGreaterThan(middle);
    expect(middle).toBeGreaterThan(slow);
    expect(timing.prefill_tokens_per_s).toBe(middle);
    expect(timing.decode_tokens_per_s).toBeLessThanOrEqual(1000);
  });

  it("refuses a round count that is not a positive integer", async () => {
    const { engine } = recordingEngine(() => 0);
    await expect(timePrefillDecode(engine, { prompt: [1], decodeTokens: 1, rounds: 0 })).rejects.toThrow(
      /rounds must be a positive integer/,
    );
  });
});
