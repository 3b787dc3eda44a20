/** The edge's checks of a worker's SessionMoved: it may come in place of any reply, and names an address to dial. */
import { describe, expect, it } from "vitest";
import {
  InvalidReplyError,
  SessionMovedError,
  checkFrameReply,
  checkOpenedReply,
  movedReply,
  sessionMovedOf,
} from "./escalation-protocol.ts";

const owner = { workerId: "w2", address: "w2.workers.example.com:50052" };

describe("SessionMoved", () => {
  it("in place of SessionOpened or of a frame's reply, sends the edge to the owner", () => {
    for (const check of [
      () => checkOpenedReply(movedReply(owner), 10),
      () => checkFrameReply(movedReply(owner), { start: 0, count: 1 }, 100),
    ]) {
      let thrown: unknown;
      try {
        check();
      } catch (error) {
        thrown = error;
      }
      expect(thrown).toBeInstanceOf(SessionMovedError);
      expect(thrown).toMatchObject(owner);
    }
  });

  it("takes host:port, an IPv6 host in brackets too", () => {
    expect(sessionMovedOf(movedReply({ workerId: "w", address: "10.0.0.7:50052" }))?.address).toBe(
      "10.0.0.7:50052",
    );
    expect(sessionMovedOf(movedReply({ workerId: "w", address: "[fd00::7]:50052" }))?.address).toBe(
      "[fd00::7]:50052",
    );
  });

  it("naming no address an edge can dial is an invalid reply (the worker is then treated as unavailable)", () => {
    for (const address of ["", "no-port", "host:port", "a b:1", "unix:/tmp/socket", "x".repeat(300) + ":1"])
      expect(() => sessionMovedOf(movedReply({ workerId: "w", address }))).toThrow(InvalidReplyError);
  });

  it("is not read into any other reply", () => {
    expect(
      sessionMovedOf({ message: "opened", opened: { contextLength: 0, workerId: "w" } }),
    ).toBeUndefined();
  });
});
