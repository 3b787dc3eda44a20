/**
 * Waiting on a stream's flow control, on a plain EventEmitter with fake timers: the wait
 * ends on the first event after which writing makes sense again (drain) or no longer at all
 * (close, error, cancelled), gives up on a peer that stalls, and leaves no listener or
 * timer behind whichever way it ends. The servers' own stall test needs a reader that fills
 * the HTTP/2 buffers, which only Node 20's small ones allow; this one runs on every Node.
 */
import { EventEmitter } from "node:events";
import { CancelledError } from "@tandem/common";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { whenWritable } from "./stream-flow.ts";

const EVENTS = ["drain", "close", "error", "cancelled"] as const;

/** Listeners left on the stream, by event, for every event whenWritable listens to. */
const listeners = (call: EventEmitter) =>
  Object.fromEntries(EVENTS.map((event) => [event, call.listenerCount(event)]));
const NONE = Object.fromEntries(EVENTS.map((event) => [event, 0]));

/** Whether the promise has settled, and how, after the pending microtasks have run. */
async function stateOf(promise: Promise<void>): Promise<"pending" | "resolved" | "rejected"> {
  let state: "pending" | "resolved" | "rejected" = "pending";
  promise.then(
    () => (state = "resolved"),
    () => (state = "rejected"),
  );
  await vi.advanceTimersByTimeAsync(0);
  return state;
}

beforeEach(() => {
  vi.useFakeTimers();
});

afterEach(() => {
  vi.useRealTimers();
});

describe("whenWritable", () => {
  for (const event of EVENTS)
    it(`resolves on "${event}" and removes its listeners and its stall timer`, async () => {
      const call = new EventEmitter();
      const writable = whenWritable(call, 1000);
      expect(await stateOf(writable)).toBe("pending");
      expect(listeners(call)).toEqual(Object.fromEntries(EVENTS.map((e) => [e, 1])));

      call.emit(event, event === "error" ? new Error("stream reset") : undefined);
      await expect(writable).resolves.toBeUndefined();
      expect(listeners(call)).toEqual(NONE);
      expect(vi.getTimerCount()).toBe(0);
    });

  it("rejects with CancelledError once the peer has read nothing for the stall time, and removes its listeners", async () => {
    const call = new EventEmitter();
    const writable = whenWritable(call, 1000);
    const outcome = writable.catch((error: unknown) => error);

    await vi.advanceTimersByTimeAsync(999);
    expect(await stateOf(writable)).toBe("pending");
    await vi.advanceTimersByTimeAsync(1);
    const error = await outcome;
    expect(error).toBeInstanceOf(CancelledError);
    expect(error).toMatchObject({ code: "CANCELLED", message: "the client read nothing for 1000 ms" });
    expect(listeners(call)).toEqual(NONE);

    // A drain after giving up changes nothing: nobody listens any more.
    call.emit("drain");
    expect(listeners(call)).toEqual(NONE);
  });

  it("without a stall time, waits as long as it takes and sets no timer", async () => {
    const call = new EventEmitter();
    const writable = whenWritable(call);
    expect(vi.getTimerCount()).toBe(0);
    await vi.advanceTimersByTimeAsync(24 * 3600 * 1000);
    expect(await stateOf(writable)).toBe("pending");

    call.emit("drain");
    await expect(writable).resolves.toBeUndefined();
    expect(listeners(call)).toEqual(NONE);
  });

  it("resolves once when several events come together, and leaves the stream's other listeners alone", async () => {
    const call = new EventEmitter();
    const own = () => {};
    call.on("close", own);
    const writable = whenWritable(call, 1000);

    call.emit("drain");
    call.emit("close");
    await expect(writable).resolves.toBeUndefined();
    expect(call.listeners("close")).toEqual([own]);
    expect(listeners(call)).toEqual({ ...NONE, close: 1 });
  });
});
