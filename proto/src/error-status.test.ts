import { status } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import {
  CheckpointError,
  ContextLostError,
  FailedPreconditionError,
  InternalError,
  InvalidArgumentError,
  ModelConfigError,
  ResourceExhaustedError,
  SessionNotFoundError,
  UnavailableError,
  UnsupportedError,
  isRetryable,
} from "@tandem/common";
import { errorOfStatus, statusOf } from "./error-status.ts";

describe("errors on the wire", () => {
  it("tell the caller's fault from state that is gone, from load, from a peer, from ours", () => {
    const cases: [Error, status][] = [
      [new InvalidArgumentError("prompt.text", "must not be empty"), status.INVALID_ARGUMENT],
      [new FailedPreconditionError("mode", "no cloud configured"), status.FAILED_PRECONDITION],
      [new SessionNotFoundError("s1"), status.NOT_FOUND],
      [new ContextLostError(4, "evicted"), status.FAILED_PRECONDITION],
      [new ResourceExhaustedError("sessions", "the worker holds 512 MiB of KV"), status.RESOURCE_EXHAUSTED],
      [new UnavailableError("cloud worker unreachable"), status.UNAVAILABLE],
      // The server's model or code: never reported as the client's fault.
      [new CheckpointError("/m/model.safetensors", "truncated"), status.INTERNAL],
      [new ModelConfigError("/m/config.json", "rope_scaling", "is not supported"), status.INTERNAL],
      [new UnsupportedError("head_dim 12"), status.UNIMPLEMENTED],
      [new InternalError("an invariant broke"), status.INTERNAL],
      [new TypeError("x is undefined"), status.INTERNAL],
    ];
    for (const [error, expected] of cases)
      expect({ error: error.name, code: status[statusOf(error).code] }).toEqual({
        error: error.name,
        code: status[expected],
      });
  });

  it("keep a Tandem error's message (it names the field); a fault of ours tells the caller only an incident id, which the log gives with the message", () => {
    expect(statusOf(new InvalidArgumentError("sampling.top_p", "must be in [0, 1], got 2")).details).toBe(
      "sampling.top_p: must be in [0, 1], got 2",
    );
    for (const fault of [
      new TypeError("boom at /srv/x.js"),
      new CheckpointError("/m/model.safetensors", "truncated"),
    ]) {
      const { details, logged } = statusOf(fault);
      const incident = /^internal error \(incident ([0-9a-f]{8}); the server's log has the details\)$/.exec(
        details,
      )?.[1];
      expect(incident, details).toBeDefined();
      expect(details).not.toContain("/");
      expect(logged).toBe(`incident ${incident}: ${fault.message}`);
    }
  });

  it("become errors a client classifies by code: retry a peer's outage, never a refusal", () => {
    const received = (code: status) =>
      errorOfStatus({ code, details: "d", message: "m" }, "cloud worker at w:1");
    expect(received(status.INVALID_ARGUMENT)).toMatchObject({ code: "INVALID_ARGUMENT" });
    expect(received(status.NOT_FOUND)).toMatchObject({ code: "SESSION_NOT_FOUND" });
    expect(received(status.UNAVAILABLE).message).toBe("cloud worker at w:1: UNAVAILABLE: d");
    // A call we did not cancel was cancelled by the peer (a worker shutting down): an outage.
    expect(received(status.CANCELLED)).toMatchObject({ code: "UNAVAILABLE" });
    expect(received(status.DEADLINE_EXCEEDED)).toMatchObject({ code: "UNAVAILABLE" });
    expect(received(status.DATA_LOSS)).toMatchObject({ code: "INTERNAL" });
    for (const code of [status.UNAVAILABLE, status.CANCELLED, status.RESOURCE_EXHAUSTED, status.INTERNAL])
      expect(isRetryable(received(code)), status[code]).toBe(true);
    for (const code of [
      status.INVALID_ARGUMENT,
      status.FAILED_PRECONDITION,
      status.NOT_FOUND,
      status.UNIMPLEMENTED,
    ])
      expect(isRetryable(received(code)), status[code]).toBe(false);
  });
});
