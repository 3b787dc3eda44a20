import { connect } from "node:net";
import { describe, expect, it } from "vitest";
import { startRedisServer } from "./redis-server.ts";

/** What Redis answers a PING on 127.0.0.1:port with, or the connection's error code. */
function ping(port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1", () => socket.write("PING\r\n"));
    socket.once("data", (data) => {
      socket.destroy();
      resolve(data.toString().trim());
    });
    socket.once("error", (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
  });
}

describe("startRedisServer", () => {
  it("starts a redis-server of the test's own that answers once started, and is gone once stopped", async () => {
    const redis = await startRedisServer();
    expect(redis.url).toBe(`redis://127.0.0.1:${redis.port}`);
    expect(await ping(redis.port)).toBe("+PONG");
    await redis.stop();
    expect(await ping(redis.port)).toBe("ECONNREFUSED");
  });

  it("fails at once, with the server's own words, when redis-server refuses its arguments", async () => {
    const started = Date.now();
    const error = await startRedisServer({ args: ["--no-such-option", "x"] }).catch((e: unknown) => e);
    expect((error as Error).message).toMatch(
      /^redis-server exited \(1\) before listening on \d+:\n[\s\S]*no-such-option/,
    );
    // Not after the 10 s wait for its port.
    expect(Date.now() - started).toBeLessThan(5000);
  });
});
