/** A redis-server of the test's own (a free port, its files in a temp dir, nothing persisted). */
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "./processes.ts";
import { waitForPort } from "./wait-for-port.ts";

export interface RedisServerOptions {
  /** Serve TLS only, with this certificate and key; clients need not present one. @default plaintext */
  tls?: { certFile: string; keyFile: string; caFile: string };
  /** More redis-server arguments, e.g. an ACL user: `--user tandem on >password ~* &* +@all`. */
  args?: string[];
}

export interface TestRedisServer {
  /** `redis://127.0.0.1:<port>`, or `rediss://…` with TLS. */
  url: string;
  port: number;
  /**
   * Kills the server (SIGKILL: it holds nothing worth saving, and a test may play a Redis
   * lost mid-use) and removes its files.
   */
  stop(): Promise<void>;
}

export async function startRedisServer(options: RedisServerOptions = {}): Promise<TestRedisServer> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "tandem-redis-"));
  const { tls } = options;
  const listen = tls
    ? [
        ...["--port", "0", "--tls-port", String(port)],
        ...["--tls-cert-file", tls.certFile, "--tls-key-file", tls.keyFile],
        ...["--tls-ca-cert-file", tls.caFile, "--tls-auth-clients", "no"],
      ]
    : ["--port", String(port)];
  const child = spawn(
    "redis-server",
    [
      ...listen,
      "--bind",
      "127.0.0.1",
      "--dir",
      dir,
      "--save",
      "",
      "--appendonly",
      "no",
      ...(options.args ?? []),
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  // The log's tail, to say why a server that would not start did not.
  let output = "";
  const keep = (data: Buffer) => (output = (output + data.toString()).slice(-4000));
  child.stdout!.on("data", keep);
  child.stderr!.on("data", keep);
  // One that cannot start (not installed, an argument refused) fails the start at once, not
  // after the wait for its port.
  const failed = new Promise<never>((_, reject) => {
    child.once("error", reject);
    child.once("exit", (code, signal) =>
      reject(new Error(`redis-server exited (${code ?? signal}) before listening on ${port}:\n${output}`)),
    );
  });
  failed.catch(() => undefined); // once it listens, its exit is the stop's
  const stop = async () => {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((r) => child.once("exit", () => r()));
      child.kill("SIGKILL");
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await Promise.race([waitForPort(port, "redis-server"), failed]);
  } catch (error) {
    await stop();
    throw error;
  }
  return { url: `${tls ? "rediss" : "redis"}://127.0.0.1:${port}`, port, stop };
}
