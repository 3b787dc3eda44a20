/** A nats-server of the test's own (JetStream on, storage in a temp dir, a free port). */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "./processes.ts";
import { waitForPort } from "./wait-for-port.ts";

export interface TestNatsServer {
  url: string;
  port: number;
  stop(): Promise<void>;
  /**
   * Stops and starts the server on the same port; `emptyStore` first deletes its JetStream
   * storage (a lost disk); `whileStopped` runs before it starts again (to watch an outage).
   */
  restart(options?: { emptyStore?: boolean; whileStopped?: () => Promise<unknown> }): Promise<void>;
}

export interface NatsServerOptions {
  /** nats-server configuration (e.g. `authorization { users = [...] }`), besides address, port and JetStream. */
  config?: string;
  /** Serve TLS only, with this certificate and key (PEM files). @default plaintext */
  tls?: {
    cert: string;
    key: string;
    /** CA of client certificates; with `verify`, a client must present one it signed. */
    ca?: string;
    /** Refuse clients without a certificate of `ca`. @default false */
    verify?: boolean;
  };
}

/** The nats-server `tls` block of those options. */
function tlsBlock(tls: NonNullable<NatsServerOptions["tls"]>): string {
  return [
    "tls {",
    `  cert_file: ${JSON.stringify(tls.cert)}`,
    `  key_file: ${JSON.stringify(tls.key)}`,
    ...(tls.ca ? [`  ca_file: ${JSON.stringify(tls.ca)}`] : []),
    `  verify: ${tls.verify ?? false}`,
    "}",
  ].join("\n");
}

export async function startNatsServer(options: NatsServerOptions = {}): Promise<TestNatsServer> {
  const port = await freePort();
  const storage = mkdtempSync(join(tmpdir(), "tandem-nats-"));
  const configArgs: string[] = [];
  const config = [options.config, options.tls && tlsBlock(options.tls)].filter(Boolean).join("\n");
  if (config) {
    const file = join(storage, "nats.conf");
    writeFileSync(file, config + "\n");
    configArgs.push("-c", file);
  }
  let child: ChildProcess | undefined;
  const launch = async () => {
    child = spawn(
      "nats-server",
      [...configArgs, "-a", "127.0.0.1", "-p", String(port), "-js", "-sd", storage],
      {
        stdio: "ignore",
      },
    );
    await waitForPort(port, "nats-server");
  };
  const stop = async () => {
    if (!child || child.exitCode !== null) return;
    const exited = new Promise<void>((r) => child!.once("exit", () => r()));
    child.kill("SIGTERM");
    await exited;
  };
  try {
    await launch();
  } catch (error) {
    // The caller gets no handle to stop a server that failed to start: stop it here.
    await stop();
    rmSync(storage, { recursive: true, force: true });
    throw error;
  }
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    stop: async () => {
      await stop();
      rmSync(storage, { recursive: true, force: true });
    },
    restart: async (restartOptions = {}) => {
      await stop();
      if (restartOptions.emptyStore) rmSync(join(storage, "jetstream"), { recursive: true, force: true });
      await restartOptions.whileStopped?.();
      await launch();
    },
  };
}

export interface TestNatsCluster {
  /** Every server's client URL, comma-separated: what a program's natsUrl takes. */
  url: string;
  servers: { port: number; stop(): Promise<void> }[];
  stop(): Promise<void>;
}

/** `size` nats-servers with JetStream, routed into one cluster on loopback. */
export async function startNatsCluster(size: number): Promise<TestNatsCluster> {
  const ports = await Promise.all(Array.from({ length: size }, () => freePort()));
  const routePorts = await Promise.all(Array.from({ length: size }, () => freePort()));
  const monitorPorts = await Promise.all(Array.from({ length: size }, () => freePort()));
  const routes = routePorts.map((p) => `nats://127.0.0.1:${p}`).join(",");
  const base = mkdtempSync(join(tmpdir(), "tandem-nats-cluster-"));
  const children = ports.map((port, i) =>
    spawn(
      "nats-server",
      [
        ...["-a", "127.0.0.1", "-p", String(port), "-js", "-sd", join(base, `n${i}`)],
        ...["--server_name", `n${i}`, "--cluster_name", "tandem-test"],
        ...["-cluster", `nats://127.0.0.1:${routePorts[i]}`, "-routes", routes],
        ...["-m", String(monitorPorts[i])],
      ],
      { stdio: "ignore" },
    ),
  );
  const stopOne = async (child: ChildProcess) => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((r) => child.once("exit", () => r()));
    child.kill("SIGKILL");
    await exited;
  };
  const stop = async () => {
    await Promise.all(children.map(stopOne));
    rmSync(base, { recursive: true, force: true });
  };
  try {
    await Promise.all(ports.map((port) => waitForPort(port, "nats-server")));
    // JetStream answers once the servers have elected its meta leader: each reports healthy.
    const deadline = Date.now() + 30_000;
    for (const port of monitorPorts) {
      for (;;) {
        const healthy = await fetch(`http://127.0.0.1:${port}/healthz`)
          .then((r) => r.ok)
          .catch(() => false);
        if (healthy) break;
        if (Date.now() > deadline) throw new Error("the NATS cluster's JetStream did not become healthy");
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  } catch (error) {
    // The caller gets no handle to stop a cluster that failed to start: stop it here.
    await stop();
    throw error;
  }
  return {
    url: ports.map((p) => `nats://127.0.0.1:${p}`).join(","),
    servers: ports.map((port, i) => ({ port, stop: () => stopOne(children[i]) })),
    stop,
  };
}
