/**
 * Waiting on a gRPC server stream's flow control: a server that writes to a peer that
 * does not read must stop producing until the stream takes writes again, not buffer
 * without end — and may give up on a peer that stalls.
 */
import type { EventEmitter } from "node:events";
import { CancelledError } from "@tandem/common";

/** The events after which writing makes sense again, or no longer at all. */
const WRITABLE_OR_OVER = ["drain", "close", "error", "cancelled"] as const;

/**
 * Resolves once `call` takes writes again or has ended. With `stallMs`, rejects with
 * CancelledError if it does neither within that long (the peer read nothing).
 */
export function whenWritable(call: EventEmitter, stallMs?: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const stop = () => {
      clearTimeout(timer);
      for (const event of WRITABLE_OR_OVER) call.off(event, done);
    };
    const done = () => {
      stop();
      resolve();
    };
    const timer =
      stallMs === undefined
        ? undefined
        : setTimeout(() => {
            stop();
            reject(new CancelledError(`the client read nothing for ${stallMs} ms`));
          }, stallMs);
    for (const event of WRITABLE_OR_OVER) call.on(event, done);
  });
}
