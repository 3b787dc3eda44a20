import { connect } from "node:net";
import { describe, expect, it } from "vitest";
import { startRedisServer } from "./redis-server.ts";

/** Sends one inline command to Redis on 127.0.0.1:port and resolves with its first reply line(s). */
function command(port: number, line: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1", () => socket.write(`${line}\r\n`));
    socket.once("data", (data) => {
      socket.destroy();
      resolve(data.toString().trim());
    });
    socket.once("error", reject);
  });
}

describe("a restarted redis-server", () => {
  it("keeps what was written when it keeps an append-only file", async () => {
    const redis = await startRedisServer({ appendOnly: { fsync: "everysec" } });
    try {
      expect(await command(redis.port, "SET kept yes")).toBe("+OK");
      await redis.restart();
      expect(await command(redis.port, "GET kept")).toBe("$3\r\nyes");
    } finally {
      await redis.stop();
    }
  });

  it("comes back empty without one", async () => {
    const redis = await startRedisServer();
    try {
      expect(await command(redis.port, "SET lost yes")).toBe("+OK");
      await redis.restart();
      expect(await command(redis.port, "GET lost")).toBe("$-1");
    } finally {
      await redis.stop();
    }
  });
});
