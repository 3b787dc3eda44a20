/**
 * A redis-server of the test's own (a free port, its files in a temp dir). Nothing is
 * persisted unless asked: `appendOnly` keeps an append-only file, so that a restart keeps
 * what was written (a Redis deployed for BullMQ is run that way).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "./processes.ts";
import { until } from "./until.ts";
import { waitForPort } from "./wait-for-port.ts";

/** Whether Redis on 127.0.0.1:port answers PING with PONG (not -LOADING, not an error). */
function pongs(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1", () => socket.write("PING\r\n"));
    socket.once("data", (data) => {
      socket.destroy();
      resolve(data.toString().startsWith("+PONG"));
    });
    socket.once("error", () => resolve(false));
  });
}

export interface RedisServerOptions {
  /** Serve TLS only, with this certificate and key; clients need not present one. @default plaintext */
  tls?: { certFile: string; keyFile: string; caFile: string };
  /** More redis-server arguments, e.g. an ACL user: `--user tandem on >password ~* &* +@all`. */
  args?: string[];
  /** Keep an append-only file, fsynced as named, so a restart keeps the data. @default nothing persisted */
  appendOnly?: { fsync: "always" | "everysec" };
}

export interface TestRedisServer {
  /** `redis://127.0.0.1:<port>`, or `rediss://…` with TLS. */
  url: string;
  port: number;
  /**
   * Kills the server (SIGKILL: a test may play a Redis lost mid-use) and removes its files.
   */
  stop(): Promise<void>;
  /**
   * Stops the server as a service manager would (SIGTERM: Redis flushes its append-only file
   * and exits) and starts it again on the same port and files. Without `appendOnly` the
   * server comes back empty.
   */
  restart(): Promise<void>;
}

export async function startRedisServer(options: RedisServerOptions = {}): Promise<TestRedisServer> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "tandem-redis-"));
  const { tls, appendOnly } = options;
  const listen = tls
    ? [
        ...["--port", "0", "--tls-port", String(port)],
        ...["--tls-cert-file", tls.certFile, "--tls-key-file", tls.keyFile],
        ...["--tls-ca-cert-file", tls.caFile, "--tls-auth-clients", "no"],
      ]
    : ["--port", String(port)];
  const persistence = appendOnly
    ? ["--appendonly", "yes", "--appendfsync", appendOnly.fsync]
    : ["--appendonly", "no"];
  const args = [
    ...listen,
    ...["--bind", "127.0.0.1", "--dir", dir, "--save", ""],
    ...persistence,
    ...(options.args ?? []),
  ];
  let child: ChildProcess | undefined;

  const launch = async () => {
    const started = spawn("redis-server", args, { stdio: ["ignore", "pipe", "pipe"] });
    child = started;
    // The log's tail, to say why a server that would not start did not.
    let output = "";
    const keep = (data: Buffer) => (output = (output + data.toString()).slice(-4000));
    started.stdout!.on("data", keep);
    started.stderr!.on("data", keep);
    // One that cannot start (not installed, an argument refused) fails the start at once, not
    // after the wait for its port.
    const failed = new Promise<never>((_, reject) => {
      started.once("error", reject);
      started.once("exit", (code, signal) =>
        reject(new Error(`redis-server exited (${code ?? signal}) before listening on ${port}:\n${output}`)),
      );
    });
    failed.catch(() => undefined); // once it listens, its exit is the stop's
    await Promise.race([waitForPort(port, "redis-server"), failed]);
    // A server replaying its append-only file listens before it serves (-LOADING): a
    // restart is over when it answers. (TLS-only servers are not probed: none persists.)
    if (appendOnly && !tls)
      await Promise.race([until("redis-server to load its data", () => pongs(port)), failed]);
  };

  const halt = async (signal: NodeJS.Signals) => {
    const running = child;
    if (!running || running.pid === undefined || running.exitCode !== null || running.signalCode !== null)
      return;
    const exited = new Promise<void>((r) => running.once("exit", () => r()));
    running.kill(signal);
    await exited;
  };

  const stop = async () => {
    await halt("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    await launch();
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    url: `${tls ? "rediss" : "redis"}://127.0.0.1:${port}`,
    port,
    stop,
    restart: async () => {
      await halt("SIGTERM");
      await launch();
    },
  };
}
