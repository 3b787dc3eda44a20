/** The token ids a worker keeps beside a session's context, for penalties. */
import { describe, expect, it } from "vitest";
import { SessionTokens } from "./session-tokens.ts";

describe("SessionTokens", () => {
  it("follows the context: appended frame by frame, a resent frame replacing what followed its start", () => {
    const tokens = new SessionTokens();
    tokens.record("s", 0, 3, [10, 11, 12]);
    tokens.record("s", 3, 1, [13]);
    expect(tokens.history("s")).toEqual([10, 11, 12, 13]);
    tokens.record("s", 2, 2, [20, 21]);
    expect(tokens.history("s")).toEqual([10, 11, 20, 21]);
  });

  it("knows nothing past a frame sent without ids, until a frame before it resends them", () => {
    const tokens = new SessionTokens();
    tokens.record("s", 0, 2, [1, 2]);
    tokens.record("s", 2, 2, []);
    tokens.record("s", 4, 1, [5]);
    expect(tokens.history("s")).toEqual([1, 2]);
    tokens.record("s", 2, 3, [3, 4, 5]);
    expect(tokens.history("s")).toEqual([1, 2, 3, 4, 5]);
  });

  it("forgets a released session", () => {
    const tokens = new SessionTokens();
    tokens.record("s", 0, 1, [1]);
    tokens.release("s");
    expect(tokens.history("s")).toEqual([]);
  });
});
