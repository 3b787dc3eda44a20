/**
 * TLS files a server is started with: ones TLS cannot use stop it at start, naming the
 * setting, instead of a server that reports SERVING and then fails every handshake.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FailedPreconditionError } from "@tandem/common";
import {
  caPaths,
  initCertificateAuthority,
  issueServerCertificate,
  serverPaths,
} from "./certificate-authority.ts";
import { startGrpcServer } from "./grpc-server.ts";
import { checkPlaintextListen, serverCredentials } from "./transport-security.ts";

let dir: string;
let certs: string;
let garbage: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "tandem-tls-"));
  certs = join(dir, "certs");
  await initCertificateAuthority(certs);
  await issueServerCertificate(certs, "server", ["127.0.0.1"]);
  await issueServerCertificate(certs, "other", ["127.0.0.1"]);
  garbage = join(dir, "garbage.pem");
  writeFileSync(garbage, "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n");
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("a server's TLS files", () => {
  it("with a key that is not the certificate's stop the server at start, naming tlsKey", async () => {
    const tls = { cert: serverPaths(certs, "server").cert, key: serverPaths(certs, "other").key };
    const start = startGrpcServer([], { tls: { ...tls, ca: caPaths(certs).cert } });
    await expect(start).rejects.toThrow(FailedPreconditionError);
    await expect(start).rejects.toThrow(/^tlsKey: .*other\.key cannot serve TLS \(.*key values mismatch/);
    await expect(serverCredentials(tls)).rejects.toThrow(/^tlsKey: /);
  });

  it("that are not PEM stop the server at start, naming the one: tlsCert, tlsKey or tlsCa", async () => {
    const good = { ...serverPaths(certs, "server"), ca: caPaths(certs).cert };
    await expect(serverCredentials({ ...good, cert: garbage })).rejects.toThrow(
      /^tlsCert: .*garbage\.pem cannot serve TLS/,
    );
    await expect(serverCredentials({ ...good, key: garbage })).rejects.toThrow(
      /^tlsKey: .*garbage\.pem cannot serve TLS/,
    );
    // Node alone would take this as a list of no CAs, refusing every client.
    await expect(serverCredentials({ ...good, ca: garbage })).rejects.toThrow(
      /^tlsCa: .*garbage\.pem cannot serve TLS/,
    );
    await expect(serverCredentials({ ...good, ca: good.key })).rejects.toThrow(/^tlsCa: /);
  });

  it("that cannot be read stop the server at start, naming tlsCert or tlsCa", async () => {
    const good = { ...serverPaths(certs, "server"), ca: caPaths(certs).cert };
    await expect(serverCredentials({ ...good, key: join(dir, "missing.key") })).rejects.toThrow(
      /^tlsCert: cannot read .* or .*missing\.key/,
    );
    await expect(serverCredentials({ ...good, ca: join(dir, "missing.pem") })).rejects.toThrow(
      /^tlsCa: cannot read .*missing\.pem/,
    );
  });

  it("that match serve", async () => {
    const server = await startGrpcServer([], {
      tls: { ...serverPaths(certs, "server"), ca: caPaths(certs).cert },
    });
    expect(server.port).toBeGreaterThan(0);
    await server.shutdown(100);
  });
});

describe("listening in plaintext", () => {
  it("is allowed on loopback only, unless told insecure", () => {
    for (const host of ["127.0.0.1", "127.8.9.10", "localhost", "::1", "[::1]"])
      expect(() => checkPlaintextListen(host, false, false, "tlsCert")).not.toThrow();
    for (const host of ["0.0.0.0", "10.0.0.5", "::", "[::]", "example.com"]) {
      expect(() => checkPlaintextListen(host, false, false, "tlsCert")).toThrow(
        /^host: .* is reachable from other machines: configure tlsCert/,
      );
      expect(() => checkPlaintextListen(host, true, false, "tlsCert")).not.toThrow();
      expect(() => checkPlaintextListen(host, false, true, "tlsCert")).not.toThrow();
    }
  });
});
