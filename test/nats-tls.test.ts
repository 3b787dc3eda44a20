/**
 * NATS over TLS, against real nats-servers serving certificates of the deployment's CA
 * (`tandem certs`, SAN 127.0.0.1): with natsTlsCa a program connects over TLS and verifies
 * the server; a server another CA signed, or one without TLS, is refused in one line naming
 * it; a server that verifies clients takes only those with a certificate of its CA
 * (natsTlsCert, natsTlsKey). Every program gets the settings with the NATS credentials.
 */
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { clusterStatus, connectNats, type NatsCredentials } from "@tandem/cluster";
import { FailedPreconditionError, UnavailableError } from "@tandem/common";
import {
  caPaths,
  devicePaths,
  initCertificateAuthority,
  issueDeviceCertificate,
  issueServerCertificate,
  serverPaths,
} from "@tandem/proto/certificates";
import {
  runCli,
  runProgram,
  startNatsServer,
  startProgram,
  type TestNatsServer,
  until,
} from "@tandem/testkit";

let dir: string;
let certs: string;
let otherCa: string;
/** TLS, any client. */
let tlsServer: TestNatsServer;
/** TLS, clients must present a certificate of the CA. */
let verifyingServer: TestNatsServer;
let plainServer: TestNatsServer;
const connections: NatsConnection[] = [];

const ca = () => caPaths(certs).cert;
const client = () => devicePaths(certs, "nats-client");
/** A connection that gives up at once: a refusal is the test's answer, not something to retry. */
const connectOnce = async (url: string, credentials: NatsCredentials) => {
  const nc = await connectNats(url, { reconnect: false, timeoutMs: 2000, credentials });
  connections.push(nc);
  return nc;
};

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "tandem-nats-tls-"));
  certs = join(dir, "certs");
  otherCa = join(dir, "other-ca");
  await initCertificateAuthority(certs);
  await initCertificateAuthority(otherCa);
  await issueServerCertificate(certs, "nats", ["127.0.0.1"]);
  await issueDeviceCertificate(certs, "nats-client");
  await issueDeviceCertificate(otherCa, "nats-client");
  const served = serverPaths(certs, "nats");
  tlsServer = await startNatsServer({ tls: served });
  verifyingServer = await startNatsServer({ tls: { ...served, ca: ca(), verify: true } });
  plainServer = await startNatsServer();
});

afterAll(async () => {
  for (const nc of connections) await nc.close().catch(() => undefined);
  await Promise.all([tlsServer?.stop(), verifyingServer?.stop(), plainServer?.stop()]);
  rmSync(dir, { recursive: true, force: true });
});

describe("NATS over TLS", () => {
  it("connects a program over TLS when natsTlsCa names the CA that signed the server's certificate", async () => {
    const cluster = `tls${Date.now()}`;
    const control = await startProgram("tandem-control-plane", {
      natsUrl: tlsServer.url,
      natsTlsCa: ca(),
      cluster,
      replicaId: "cp-tls",
      tickMs: 100,
      leaseTtlMs: 1000,
    });
    try {
      // It leads: it read and wrote the lease through the TLS connection.
      await until(
        "the control plane to take the lease over TLS",
        async () =>
          (await clusterStatus(tlsServer.url, cluster, 1000, { tls: { caFile: ca() } })).leader?.holder ===
          "cp-tls",
        20_000,
        100,
      );
      // `tandem status` reads it the same way, with the same settings.
      const status = await runCli([
        "status",
        "--nats",
        tlsServer.url,
        "--cluster",
        cluster,
        "--nats-tls-ca",
        ca(),
      ]);
      expect(status.stderr).toBe("");
      expect(status.stdout).toMatch(/^leader: cp-tls /m);
    } finally {
      await control.kill();
    }
  });

  it("refuses a server whose certificate another CA signed, in one line naming the address and the setting", async () => {
    const refused = connectOnce(tlsServer.url, { tls: { caFile: caPaths(otherCa).cert } });
    await expect(refused).rejects.toThrow(FailedPreconditionError);
    await expect(refused).rejects.toThrow(
      `natsTlsCa: NATS at ${tlsServer.url} presented a certificate this CA does not verify`,
    );
    // A program says it once and exits 2, without a stack trace.
    const run = await runProgram("tandem-control-plane", [
      ...["--natsUrl", tlsServer.url, "--natsTlsCa", caPaths(otherCa).cert],
    ]);
    expect(run.code).toBe(2);
    expect(run.stderr.trim().split("\n")).toEqual([
      expect.stringMatching(
        new RegExp(
          `^tandem-control-plane: natsTlsCa: NATS at ${tlsServer.url.replace(/[.]/g, "\\.")} presented a certificate this CA does not verify \\(.+\\)$`,
        ),
      ),
    ]);
  });

  it("without natsTlsCa, refuses a server asking for TLS with a certificate the system's CAs do not verify", async () => {
    await expect(connectOnce(tlsServer.url, {})).rejects.toThrow(
      new RegExp(`^natsTlsCa: NATS at ${tlsServer.url} asks for TLS, .*: set natsTlsCa$`),
    );
  });

  it("with natsTlsCa, refuses a server that does not offer TLS rather than talk in plaintext", async () => {
    const refused = connectOnce(plainServer.url, { tls: { caFile: ca() } });
    await expect(refused).rejects.toThrow(UnavailableError);
    await expect(refused).rejects.toThrow(
      new RegExp(`^NATS at ${plainServer.url} cannot be reached \\(.*tls`),
    );
  });

  it("names a TLS setting that is missing, unreadable or unusable, before connecting", async () => {
    const notPem = join(dir, "not.pem");
    writeFileSync(notPem, "not a certificate\n");
    const refusals: [NatsCredentials["tls"], RegExp][] = [
      [{ caFile: ca(), certFile: client().cert }, /^natsTlsKey: required with natsTlsCert$/],
      [{ caFile: ca(), keyFile: client().key }, /^natsTlsCert: required with natsTlsKey$/],
      [{ certFile: client().cert, keyFile: client().key }, /^natsTlsCa: required with natsTlsCert$/],
      [{ caFile: join(dir, "missing.pem") }, /^natsTlsCa: cannot read .*missing\.pem/],
      [{ caFile: notPem }, /^natsTlsCa: .*not\.pem cannot be used for TLS/],
      [
        { caFile: ca(), certFile: notPem, keyFile: client().key },
        /^natsTlsCert: .*not\.pem cannot be used for TLS/,
      ],
      [
        // The key of another certificate.
        { caFile: ca(), certFile: client().cert, keyFile: devicePaths(otherCa, "nats-client").key },
        /^natsTlsKey: .* cannot be used for TLS/,
      ],
    ];
    for (const [tls, message] of refusals) {
      const refused = connectOnce(tlsServer.url, { tls });
      await expect(refused, JSON.stringify(tls)).rejects.toThrow(FailedPreconditionError);
      await expect(refused, JSON.stringify(tls)).rejects.toThrow(message);
    }
  });
});

describe("certificates replaced on disk", () => {
  it("are read again when the client reconnects: a new CA and server certificate need no restart", async () => {
    const rotating = join(dir, "rotating");
    mkdirSync(rotating);
    const files = {
      cert: join(rotating, "server.pem"),
      key: join(rotating, "server.key"),
      ca: join(rotating, "ca.pem"),
    };
    const install = (from: string) => {
      copyFileSync(serverPaths(from, "nats").cert, files.cert);
      copyFileSync(serverPaths(from, "nats").key, files.key);
      copyFileSync(caPaths(from).cert, files.ca);
    };
    install(certs);
    await issueServerCertificate(otherCa, "nats", ["127.0.0.1"]);
    const server = await startNatsServer({ tls: { cert: files.cert, key: files.key } });
    try {
      const nc = await connectNats(server.url, { credentials: { tls: { caFile: files.ca } } });
      connections.push(nc);
      let reconnected = false;
      void (async () => {
        for await (const status of nc.status()) if (status.type === "reconnect") reconnected = true;
      })();
      // Both ends move to the other CA while the server is down: only re-read files let the client back in.
      await server.restart({ whileStopped: async () => install(otherCa) });
      await until("the client to reconnect", () => reconnected, 15_000);
      await nc.flush();
    } finally {
      await server.stop();
    }
  });
});

describe("a NATS that verifies clients", () => {
  it("refuses a client without a certificate, saying what it needs", async () => {
    const refused = connectOnce(verifyingServer.url, { tls: { caFile: ca() } });
    await expect(refused).rejects.toThrow(UnavailableError);
    await expect(refused).rejects.toThrow(
      new RegExp(
        `^NATS at ${verifyingServer.url} cannot be reached \\(.*needs natsTlsCert and natsTlsKey\\)$`,
      ),
    );
  });

  it("refuses a client whose certificate another CA signed", async () => {
    const other = devicePaths(otherCa, "nats-client");
    await expect(
      connectOnce(verifyingServer.url, { tls: { caFile: ca(), certFile: other.cert, keyFile: other.key } }),
    ).rejects.toThrow(UnavailableError);
  });

  it("accepts a client with a certificate of its CA, and carries messages both ways", async () => {
    const tls = { caFile: ca(), certFile: client().cert, keyFile: client().key };
    const [a, b] = [
      await connectOnce(verifyingServer.url, { tls }),
      await connectOnce(verifyingServer.url, { tls }),
    ];
    const received = new Promise<string>((resolve) =>
      a.subscribe("tls.test", { max: 1, callback: (_, message) => resolve(message.string()) }),
    );
    await a.flush();
    b.publish("tls.test", "over TLS");
    expect(await received).toBe("over TLS");
  });

  it("serves a program that presents its certificate (natsTlsCert, natsTlsKey)", async () => {
    const cluster = `mtls${Date.now()}`;
    const control = await startProgram("tandem-control-plane", {
      natsUrl: verifyingServer.url,
      natsTlsCa: ca(),
      natsTlsCert: client().cert,
      natsTlsKey: client().key,
      cluster,
      replicaId: "cp-mtls",
      tickMs: 100,
      leaseTtlMs: 1000,
    });
    try {
      const tls = { caFile: ca(), certFile: client().cert, keyFile: client().key };
      await until(
        "the control plane to take the lease over mutual TLS",
        async () =>
          (await clusterStatus(verifyingServer.url, cluster, 1000, { tls })).leader?.holder === "cp-mtls",
        20_000,
        100,
      );
    } finally {
      await control.kill();
    }
  });
});
