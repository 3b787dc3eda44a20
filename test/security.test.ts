/**
 * SECURITY.md's protections, tried from outside against real servers on loopback: a cloud
 * worker serving mutual TLS with certificates from `tandem certs`, an edge agent reaching
 * it as a device, and an edge's public API behind TLS and API keys.
 */
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { request as httpsRequest } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import * as grpc from "@grpc/grpc-js";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FailedPreconditionError } from "@tandem/common";
import { startCloudWorker, WORKER_CONFIG_SCHEMA, type CloudWorker } from "@tandem/cloud-worker";
import { EDGE_CONFIG_SCHEMA, startEdgeAgent, type EdgeAgent } from "@tandem/edge-agent";
import {
  channelCredentials,
  checkPlaintextListen,
  hashApiKey,
  loadTandemProtos,
  type CloudMessage__Output,
  type EdgeMessage,
} from "@tandem/proto";
import {
  caPaths,
  devicePaths,
  initCertificateAuthority,
  issueDeviceCertificate,
  issueServerCertificate,
  revokeDevice,
  serverPaths,
} from "@tandem/proto/certificates";
import { type Checkpoint, getCodec, loadCheckpoint, loadLocalSplit } from "@tandem/runtime";
import { TINY_LLAMA, writeRandomCheckpoint } from "@tandem/runtime/testing";
import { escalateStream, generate, runCli, until } from "@tandem/testkit";

const HIDDEN = 64;
const SPLIT = 2;
const silent = pino({ level: "silent" });

let dir: string;
let certs: string;
let otherCa: string;
let checkpoint: Checkpoint;
let worker: CloudWorker;
let hidden: Float32Array; // split-layer hidden states of 12 positions

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "tandem-security-"));
  certs = join(dir, "certs");
  otherCa = join(dir, "other-ca");
  await writeRandomCheckpoint(join(dir, "model"), { ...TINY_LLAMA, tieWordEmbeddings: true, seed: 41 });
  checkpoint = await loadCheckpoint(join(dir, "model"));
  const local = await loadLocalSplit(checkpoint, { split: SPLIT, cacheDir: join(dir, "graphs") });
  local.lower.open("h");
  hidden = (await local.lower.forward("h", { ids: [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16] })).hidden!;
  await local.release();

  await initCertificateAuthority(certs);
  await issueServerCertificate(certs, "worker", ["127.0.0.1", "localhost"]);
  for (const device of ["device-a", "device-b", "device-c"]) await issueDeviceCertificate(certs, device);
  // A CA the deployment does not trust, with a device of the same name.
  await initCertificateAuthority(otherCa);
  await issueDeviceCertificate(otherCa, "device-a");

  worker = await startCloudWorker(
    {
      modelDir: join(dir, "model"),
      split: SPLIT,
      workerId: "secure",
      cacheDir: join(dir, "graphs"),
      tls: { ...serverPaths(certs, "worker"), ca: caPaths(certs).cert, crl: caPaths(certs).crl },
    },
    silent,
  );
}, 60_000);

afterAll(async () => {
  await worker?.close(100);
  rmSync(dir, { recursive: true, force: true });
});

/** Credentials of a device of `ca` (default: the deployment's CA, trusting the worker's). */
function asDevice(device: string, ca = certs): grpc.ChannelCredentials {
  return channelCredentials({ ca: caPaths(certs).cert, ...devicePaths(ca, device) });
}

/** A raw Escalate stream to the secure worker; next() gives undefined once the stream has ended. */
function rawStream(credentials: grpc.ChannelCredentials) {
  const stream = escalateStream(worker.server.address, credentials);
  return { ...stream, next: (count: number) => stream.next(count).catch(() => undefined) };
}

const open = (sessionId: string): EdgeMessage => ({
  open: {
    sessionId,
    modelId: "m",
    weightsHash: checkpoint.weightsHash,
    splitLayer: SPLIT,
    codec: "HIDDEN_STATE_CODEC_FP32",
    hiddenSize: HIDDEN,
  },
});
/**
 * Holds the secure worker's frames for the context `key` in its context manager until
 * release(), so that a stream is busy applying one for as long as a test needs (the tiny
 * model alone is done before a second stream can arrive). restore() puts it back.
 */
function holdFrames(key: string) {
  const contexts = worker.contexts;
  const append = contexts.append.bind(contexts);
  let entered!: () => void;
  const applying = new Promise<void>((resolve) => (entered = resolve));
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  contexts.append = async (id, ...rest) => {
    if (id === key) {
      entered();
      await held;
    }
    return append(id, ...rest);
  };
  const restore = () => {
    release();
    contexts.append = append;
  };
  return { applying, release, restore };
}

/** Deterministic noise for `count` positions: hidden states no real prefix produces. */
function noiseStates(count: number): Float32Array {
  let seed = 7;
  return Float32Array.from({ length: count * HIDDEN }, () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed / 2 ** 31 - 0.5;
  });
}
const frame = (start: number, count: number, states = hidden, requestId = String(start)): EdgeMessage => ({
  frame: {
    start,
    count,
    payload: getCodec("fp32").encode(
      states.subarray(start * HIDDEN, (start + count) * HIDDEN),
      count,
      HIDDEN,
    ),
    wantToken: true,
    requestId,
  },
});

describe("tandem certs", () => {
  it("writes a CA, server and device certificates with private keys only their owner reads, and refuses to overwrite a CA", async () => {
    const cliDir = join(dir, "cli-certs");
    expect((await runCli(["certs", "init", "--dir", cliDir])).code).toBe(0);
    expect(
      (await runCli(["certs", "issue-server", "w1", "--dir", cliDir, "--san", "127.0.0.1,worker.local"]))
        .code,
    ).toBe(0);
    expect((await runCli(["certs", "issue-device", "phone-7", "--dir", cliDir])).code).toBe(0);
    for (const key of [
      caPaths(cliDir).key,
      serverPaths(cliDir, "w1").key,
      devicePaths(cliDir, "phone-7").key,
    ])
      expect(statSync(key).mode & 0o777).toBe(0o600);
    const revoked = await runCli(["certs", "revoke", "phone-7", "--dir", cliDir]);
    expect(revoked.code).toBe(0);
    expect(JSON.parse(revoked.stdout)).toMatchObject({ revoked: "phone-7" });

    const again = await runCli(["certs", "init", "--dir", cliDir]);
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(/dir: .* already holds a CA/);
    const badName = await runCli(["certs", "issue-device", "../evil", "--dir", cliDir]);
    expect(badName.code).toBe(2);
    expect(badName.stderr).toMatch(/id: "\.\.\/evil" must be/);
  }, 30_000);
});

describe("a worker serving mutual TLS", () => {
  it("serves a device of the deployment's CA", async () => {
    const s = rawStream(asDevice("device-a"));
    s.send(open("s1"));
    expect((await s.next(1))?.opened?.contextLength).toBe(0);
    s.send(frame(0, 5));
    expect((await s.next(2))?.token?.position).toBe(5);
    s.end();
  });

  it("refuses a plaintext client and a device of another CA at the handshake", async () => {
    for (const credentials of [grpc.credentials.createInsecure(), asDevice("device-a", otherCa)]) {
      const s = rawStream(credentials);
      s.send(open("s1"));
      const status = await s.status;
      expect(status.code).toBe(grpc.status.UNAVAILABLE);
      s.end();
    }
  });

  it("keeps each device's sessions apart: another device sees an empty session of the same id, and its writes and close touch nothing of the owner's", async () => {
    const owner = rawStream(asDevice("device-a"));
    owner.send(open("shared-id"));
    await owner.next(1);
    owner.send(frame(0, 8));
    const ownerToken = (await owner.next(2))?.token;
    expect(ownerToken?.position).toBe(8);
    owner.end();

    const intruder = rawStream(asDevice("device-b"));
    intruder.send(open("shared-id"));
    expect((await intruder.next(1))?.opened?.contextLength).toBe(0);
    intruder.send(frame(0, 3, new Float32Array(12 * HIDDEN).fill(0.5)));
    // Its frame was applied (to its own session): otherwise "touch nothing" would prove nothing.
    expect((await intruder.next(2))?.token?.position).toBe(3);
    intruder.send({ close: {} });
    intruder.end();
    await intruder.status;

    const back = rawStream(asDevice("device-a"));
    back.send(open("shared-id"));
    expect((await back.next(1))?.opened?.contextLength).toBe(8);
    // Resending the last position recomputes it from the untouched context: the same token.
    back.send(frame(7, 1));
    expect((await back.next(2))?.token?.token).toBe(ownerToken?.token);
    back.end();
  });

  it("refuses a revoked device on its next stream with UNAUTHENTICATED", async () => {
    const before = rawStream(asDevice("device-c"));
    before.send(open("c1"));
    expect((await before.next(1))?.opened).toBeDefined();
    before.end();

    await revokeDevice(certs, "device-c");
    const after = rawStream(asDevice("device-c"));
    after.send(open("c1"));
    const status = await after.status;
    expect(status.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(status.details).toMatch(/device-c.*revoked/);
    after.end();

    // Others are unaffected.
    const other = rawStream(asDevice("device-b"));
    other.send(open("b1"));
    expect((await other.next(1))?.opened).toBeDefined();
    other.end();
  });

  it("lets one stream write a session at a time: a newer stream supersedes one busy with a 1,000-position frame, and the session's next token is an uninterrupted run's", async () => {
    // The uninterrupted run: 12 positions into a fresh session.
    const reference = rawStream(asDevice("device-a"));
    reference.send(open("uninterrupted"));
    await reference.next(1);
    reference.send(frame(0, 12));
    const expected = (await reference.next(2))?.token?.token;
    expect(expected).toBeDefined();
    reference.end();

    const noise = noiseStates(1000);
    const a = rawStream(asDevice("device-a"));
    a.send(open("contested"));
    await a.next(1);
    a.send(frame(0, 1000, noise, "a"));
    const b = rawStream(asDevice("device-a"));
    b.send(open("contested"));
    const opened = await b.next(1);
    // The older stream ended, its frame applied in full or not at all.
    expect((await a.status).code).toBe(grpc.status.ABORTED);
    expect([0, 1000]).toContain(opened?.opened?.contextLength);
    b.send(frame(0, 12));
    expect((await b.next(2))?.token?.token).toBe(expected);
    b.end();
  }, 30_000);

  it("keeps exactly the newest of three streams opening a session in quick succession as its writer: the two older end ABORTED, and the session's next token is an uninterrupted run's", async () => {
    const reference = rawStream(asDevice("device-a"));
    reference.send(open("uninterrupted-3"));
    await reference.next(1);
    reference.send(frame(0, 12));
    const expected = (await reference.next(2))?.token?.token;
    expect(expected).toBeDefined();
    reference.end();

    // a's frame is held until b and c have opened, so that both find a still applying it.
    const { applying, release, restore } = holdFrames("device-a/contested-3");
    try {
      const a = rawStream(asDevice("device-a"));
      a.send(open("contested-3"));
      await a.next(1);
      a.send(frame(0, 20, noiseStates(20), "a"));
      await applying;
      const b = rawStream(asDevice("device-a"));
      b.send(open("contested-3"));
      // Never applied: b never writes the session.
      b.send(frame(0, 12, noiseStates(12), "b"));
      expect((await a.status).code).toBe(grpc.status.ABORTED);
      const c = rawStream(asDevice("device-a"));
      c.send(open("contested-3"));
      // c takes over from b while b still waits for a. Bounded: a worker letting b through
      // fails the checks below rather than hanging here.
      await Promise.race([b.status, sleep(2000)]);
      release();

      const opened = await c.next(1);
      // a's frame applied in full or not at all, b's not at all.
      expect([0, 20]).toContain(opened?.opened?.contextLength);
      c.send(frame(0, 12));
      expect((await c.next(2))?.token?.token).toBe(expected);
      // A stream still writing would end OK once half-closed; a superseded one has ended already.
      b.end();
      expect((await b.status).code).toBe(grpc.status.ABORTED);
      expect(b.replies).toHaveLength(0);
      c.end();
      expect((await c.status).code).toBe(grpc.status.OK);
      a.end();
    } finally {
      restore();
    }
  }, 30_000);

  it("keeps a stream cancelled while it applies a frame as its session's writer until the frame is done: a newer stream's open waits for it", async () => {
    const { applying, release, restore } = holdFrames("device-a/cancelled-busy");
    try {
      const { tandem } = loadTandemProtos();
      const client = new tandem.v1.CloudWorker(worker.server.address, asDevice("device-a"));
      const a = client.Escalate();
      const aStatus = new Promise<unknown>((resolve) => a.on("error", resolve));
      const aOpened = new Promise<unknown>((resolve) => a.on("data", resolve));
      a.write(open("cancelled-busy"));
      await aOpened;
      a.write(frame(0, 20, noiseStates(20), "a"));
      await applying;
      a.cancel();
      await aStatus;

      const b = rawStream(asDevice("device-a"));
      b.send(open("cancelled-busy"));
      // Bounded: a worker that opens at once fails the check below rather than waiting here.
      await Promise.race([b.next(1), sleep(300)]);
      expect(b.replies).toHaveLength(0);
      release();
      // a's frame was applied in full before b's open.
      expect((await b.next(1))?.opened?.contextLength).toBe(20);
      b.send(frame(20, 1, noiseStates(21)));
      expect((await b.next(2))?.token?.position).toBe(21);
      b.end();
      client.close();
    } finally {
      restore();
    }
  }, 30_000);

  it("takes a session from its stream only for a valid open: a bad weights hash, or a second open on an open stream, is refused and the session's stream goes on", async () => {
    const healthy = rawStream(asDevice("device-a"));
    healthy.send(open("healthy"));
    await healthy.next(1);
    healthy.send(frame(0, 4));
    expect((await healthy.next(2))?.token?.position).toBe(4);

    const wrongHash = rawStream(asDevice("device-a"));
    wrongHash.send({ open: { ...open("healthy").open, weightsHash: "0".repeat(64) } });
    const refused = await wrongHash.status;
    expect(refused.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(refused.details).toMatch(/open\.weights_hash/);
    wrongHash.end();

    const reopening = rawStream(asDevice("device-a"));
    reopening.send(open("elsewhere"));
    expect((await reopening.next(1))?.opened).toBeDefined();
    reopening.send(open("healthy"));
    const again = await reopening.status;
    expect(again.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(again.details).toMatch(/open: the stream already has a session/);
    reopening.end();

    healthy.send(frame(4, 1));
    expect((await healthy.next(3))?.token?.position).toBe(5);
    healthy.end();
    expect((await healthy.status).code).toBe(grpc.status.OK);
  }, 30_000);

  it("refuses a certificate of the CA that is a server's, not a device's (the worker's own): UNAUTHENTICATED", async () => {
    const s = rawStream(channelCredentials({ ca: caPaths(certs).cert, ...serverPaths(certs, "worker") }));
    s.send(open("x"));
    const status = await s.status;
    expect(status.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(status.details).toMatch(/the certificate of "worker" is a server's, not a device's/);
    s.end();
  });
});

describe("an edge agent", () => {
  let edge: EdgeAgent;
  const apiKey = "test-key-0123456789";
  const edgeConfig = (overrides: Record<string, unknown>) =>
    EDGE_CONFIG_SCHEMA.parse({
      model: join(dir, "model"),
      split: SPLIT,
      port: 0,
      httpAddress: "127.0.0.1:0",
      ...overrides,
    });

  beforeAll(async () => {
    await issueServerCertificate(certs, "edge-api", ["127.0.0.1"]);
    edge = await startEdgeAgent(
      edgeConfig({
        cloudAddress: worker.server.address,
        cloudTlsCa: caPaths(certs).cert,
        cloudTlsCert: devicePaths(certs, "device-a").cert,
        cloudTlsKey: devicePaths(certs, "device-a").key,
        codec: "fp32",
        tlsCert: serverPaths(certs, "edge-api").cert,
        tlsKey: serverPaths(certs, "edge-api").key,
        apiKeys: [hashApiKey(apiKey)],
      }),
      silent,
      { cacheDir: join(dir, "graphs") },
    );
  }, 60_000);
  afterAll(async () => edge?.close(100));

  const tls = () => channelCredentials({ ca: caPaths(certs).cert });
  const withKey = (key: string) => {
    const metadata = new grpc.Metadata();
    metadata.set("authorization", `Bearer ${key}`);
    return metadata;
  };
  const request = { tokenIds: { ids: [5, 6, 7, 8] }, maxTokens: 4, mode: "MODE_CLOUD_ONLY" as const };

  it("answers a client with TLS and an API key, from the cloud over mutual TLS as its device", async () => {
    const result = await generate(edge.server.address, request, undefined, {
      credentials: tls(),
      metadata: withKey(apiKey),
    });
    expect(result.error).toBeUndefined();
    expect(result.tokens).toHaveLength(4);
    expect(result.tokens.every((t) => t.source === "TOKEN_SOURCE_CLOUD")).toBe(true);
  });

  it("serves the OpenAI-compatible HTTP API over the same TLS, with the same API keys", async () => {
    const ca = readFileSync(caPaths(certs).cert);
    const post = (authorization?: string) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const [host, port] = [edge.http!.address.split(":")[0], Number(edge.http!.address.split(":")[1])];
        const call = httpsRequest(
          {
            host,
            port,
            path: "/v1/completions",
            method: "POST",
            ca,
            headers: { "content-type": "application/json", ...(authorization ? { authorization } : {}) },
          },
          (response) => {
            let body = "";
            response.on("data", (d: Buffer) => (body += d.toString()));
            response.on("end", () => resolve({ status: response.statusCode!, body }));
          },
        );
        call.on("error", reject);
        call.end(
          JSON.stringify({
            model: "model",
            prompt: [5, 6, 7, 8],
            max_tokens: 4,
            tandem: { mode: "cloud_only" },
          }),
        );
      });
    const answered = await post(`Bearer ${apiKey}`);
    expect(answered.status).toBe(200);
    expect(JSON.parse(answered.body).usage.completion_tokens).toBe(4);
    for (const authorization of [undefined, "Bearer not-the-key"]) {
      const refused = await post(authorization);
      expect(refused.status).toBe(401);
      expect(JSON.parse(refused.body).error.type).toBe("authentication_error");
    }
    // Plaintext HTTP to the TLS port gets no answer of the API.
    await expect(fetch(`http://${edge.http!.address}/v1/models`)).rejects.toThrow();
  });

  it("refuses a call without an API key, or with an unknown one, with UNAUTHENTICATED", async () => {
    for (const metadata of [new grpc.Metadata(), withKey("not-the-key")]) {
      const result = await generate(edge.server.address, request, undefined, {
        credentials: tls(),
        metadata,
      });
      expect(result.error?.code).toBe(grpc.status.UNAUTHENTICATED);
      expect(result.tokens).toHaveLength(0);
    }
  });

  it("refuses an exit-policy metric outside the schema by name", async () => {
    const result = await generate(
      edge.server.address,
      { ...request, mode: "MODE_AUTO", exitPolicy: { metric: 99 as never, threshold: 0.5 } },
      undefined,
      { credentials: tls(), metadata: withKey(apiKey) },
    );
    expect(result.error?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(result.error?.details).toMatch(/exit_policy\.metric: unknown value 99/);
  });

  it("refuses to start in plaintext on an address other machines reach, unless told insecure", async () => {
    await expect(startEdgeAgent(edgeConfig({ host: "0.0.0.0" }), silent)).rejects.toThrow(
      FailedPreconditionError,
    );
    await expect(startEdgeAgent(edgeConfig({ host: "0.0.0.0" }), silent)).rejects.toThrow(
      /host: 0\.0\.0\.0 is reachable from other machines: configure tlsCert, tlsKey and apiKeys/,
    );
    expect(() => checkPlaintextListen("10.1.2.3", false, true, "tls")).not.toThrow();
    expect(() => checkPlaintextListen("::1", false, false, "tls")).not.toThrow();
    expect(() => checkPlaintextListen("worker.example", false, false, "tls")).toThrow(/worker\.example/);
  });
});

describe("a worker's certificate", () => {
  it("rotates without a restart: new connections get the files written last", async () => {
    // First a certificate for another name: clients dialling 127.0.0.1 refuse it.
    await issueServerCertificate(certs, "rotating", ["worker.elsewhere"]);
    const paths = serverPaths(certs, "rotating");
    const second = await startCloudWorker(
      {
        modelDir: join(dir, "model"),
        split: SPLIT,
        workerId: "rotating",
        cacheDir: join(dir, "graphs"),
        tls: { ...paths, ca: caPaths(certs).cert },
      },
      silent,
    );
    try {
      const tryOpen = async () => {
        const { tandem } = loadTandemProtos();
        const client = new tandem.v1.CloudWorker(second.server.address, asDevice("device-a"));
        const stream = client.Escalate();
        const outcome = new Promise<string>((resolve) => {
          stream.on("data", (m: CloudMessage__Output) => resolve(m.opened ? "opened" : "other"));
          stream.on("error", (e: grpc.ServiceError) => resolve(grpc.status[e.code]));
        });
        stream.write(open("r1"));
        const result = await outcome;
        stream.cancel();
        client.close();
        return result;
      };
      expect(await tryOpen()).toBe("UNAVAILABLE");
      await issueServerCertificate(certs, "rotating", ["127.0.0.1"]);
      await until(
        "the worker to serve its new certificate",
        async () => (await tryOpen()) === "opened",
        15_000,
        500,
      );
    } finally {
      await second.close(100);
    }
  }, 30_000);

  it("must be readable when the worker starts, or it does not start, naming tlsCert", async () => {
    await expect(
      startCloudWorker(
        {
          modelDir: join(dir, "model"),
          split: SPLIT,
          workerId: "no-cert",
          cacheDir: join(dir, "graphs"),
          tls: { cert: join(dir, "missing.pem"), key: join(dir, "missing.key"), ca: caPaths(certs).cert },
        },
        silent,
      ),
    ).rejects.toThrow(/^tlsCert: cannot read .*missing\.pem/);
  });

  it("comes with a revocation list the worker can read, or the worker does not start, naming tlsCrl", async () => {
    await expect(
      startCloudWorker(
        {
          modelDir: join(dir, "model"),
          split: SPLIT,
          workerId: "no-crl",
          tls: { ...serverPaths(certs, "worker"), ca: caPaths(certs).cert, crl: join(dir, "missing.crl") },
        },
        silent,
      ),
    ).rejects.toThrow(/^tlsCrl: the revocation list .*missing\.crl cannot be read/);
  });

  it("is required to listen beyond loopback, unless told insecure", async () => {
    await expect(
      startCloudWorker(
        { modelDir: join(dir, "model"), split: SPLIT, workerId: "open", host: "0.0.0.0" },
        silent,
      ),
    ).rejects.toThrow(
      /host: 0\.0\.0\.0 is reachable from other machines: configure tlsCert, tlsKey and tlsCa/,
    );
  });
});

describe("limits", () => {
  /** A worker with its own session limits, beside the shared one. */
  const cappedWorker = (
    workerId: string,
    sessionLimits: { maxSessions: number; maxSessionsPerDevice: number },
  ) =>
    startCloudWorker(
      {
        modelDir: join(dir, "model"),
        split: SPLIT,
        workerId,
        cacheDir: join(dir, "graphs"),
        tls: { ...serverPaths(certs, "worker"), ca: caPaths(certs).cert },
        sessionLimits,
      },
      silent,
    );
  /** Opens `sessionId` as `device` and sends a frame; the error ending the stream, if it ends before the token. */
  const openAndFrame = async (address: string, device: string, sessionId: string) => {
    const { tandem } = loadTandemProtos();
    const call = new tandem.v1.CloudWorker(address, asDevice(device)).Escalate();
    const replies: CloudMessage__Output[] = [];
    const end = new Promise<grpc.ServiceError | undefined>((resolve) => {
      call.on("data", (m: CloudMessage__Output) => {
        replies.push(m);
        if (m.token) resolve(undefined);
      });
      call.on("error", (e: grpc.ServiceError) => resolve(e));
    });
    call.write(open(sessionId));
    call.write(frame(0, 2));
    const error = await end;
    call.cancel();
    return { error, replies };
  };

  it("a worker holds at most maxSessionsPerDevice sessions of one device, then answers RESOURCE_EXHAUSTED; resuming a held one still works", async () => {
    const capped = await cappedWorker("capped", { maxSessions: 10, maxSessionsPerDevice: 1 });
    try {
      const address = capped.server.address;
      expect((await openAndFrame(address, "device-a", "first")).error).toBeUndefined();
      const second = await openAndFrame(address, "device-a", "second");
      expect(second.error?.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
      expect(second.error?.details).toMatch(/sessions: device "device-a" holds 1/);
      expect((await openAndFrame(address, "device-a", "first")).error).toBeUndefined();
      expect((await openAndFrame(address, "device-b", "first")).error).toBeUndefined();
    } finally {
      await capped.close(100);
    }
  }, 30_000);

  it("hold under concurrent opens: of maxSessionsPerDevice + 1 streams a device opens at once, exactly one is refused, and so is one beyond maxSessions", async () => {
    const capped = await cappedWorker("capped-concurrent", { maxSessions: 3, maxSessionsPerDevice: 2 });
    try {
      /**
       * Opens the sessions on streams of their own at once, then, once every open is
       * answered, sends a frame on each stream still open: a session reaches the context
       * manager only with its first frame, so no open here is checked against a held one.
       */
      const openAtOnce = async (device: string, sessionIds: string[]) => {
        const streams = sessionIds.map((id) => {
          const s = escalateStream(capped.server.address, asDevice(device));
          s.send(open(id));
          return s;
        });
        const opened = await Promise.all(
          streams.map((s) =>
            s.next(1).then(
              () => true,
              () => false,
            ),
          ),
        );
        const refused = streams.filter((_, i) => !opened[i]);
        const served = streams.filter((_, i) => opened[i]);
        for (const s of served) s.send(frame(0, 2));
        for (const s of served) expect((await s.next(2)).token?.position).toBe(2);
        return { refused: await Promise.all(refused.map((s) => s.status)), served: served.length, streams };
      };

      const mine = await openAtOnce("device-a", ["p0", "p1", "p2"]);
      expect(mine.served).toBe(2);
      expect(mine.refused).toHaveLength(1);
      expect(mine.refused[0].code).toBe(grpc.status.RESOURCE_EXHAUSTED);
      expect(mine.refused[0].details).toMatch(/sessions: device "device-a" holds 2, its limit/);

      // device-a's 2 sessions are held (their streams still open): of device-b's 2, one fits under maxSessions.
      const theirs = await openAtOnce("device-b", ["q0", "q1"]);
      expect(theirs.served).toBe(1);
      expect(theirs.refused).toHaveLength(1);
      expect(theirs.refused[0].code).toBe(grpc.status.RESOURCE_EXHAUSTED);
      expect(theirs.refused[0].details).toMatch(/sessions: this worker holds 3, its limit/);
      for (const s of [...mine.streams, ...theirs.streams]) s.end();
    } finally {
      await capped.close(100);
    }
  }, 30_000);

  it("an edge runs at most maxStreams generations at once, and refuses a request larger than any legal one", async () => {
    const edge = await startEdgeAgent(
      EDGE_CONFIG_SCHEMA.parse({ model: join(dir, "model"), split: SPLIT, port: 0, maxStreams: 1 }),
      silent,
      { cacheDir: join(dir, "graphs") },
    );
    try {
      const long = { tokenIds: { ids: [5, 6, 7] }, maxTokens: 1000, mode: "MODE_EDGE_ONLY" as const };
      const results = await Promise.all([0, 1, 2].map(() => generate(edge.server.address, long)));
      const refused = results.filter((r) => r.error?.code === grpc.status.RESOURCE_EXHAUSTED);
      expect(results.filter((r) => !r.error)).toHaveLength(1);
      expect(refused).toHaveLength(2);
      expect(refused[0].error?.details).toMatch(/streams: 1 generations are running, the limit is 1/);
      // Once it is done, the next one runs.
      expect((await generate(edge.server.address, { ...long, maxTokens: 2 })).error).toBeUndefined();

      const huge = await generate(edge.server.address, { text: "x".repeat(400_000), maxTokens: 1 });
      expect(huge.error?.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
      const large = await generate(edge.server.address, { text: "x".repeat(70_000), maxTokens: 1 });
      expect(large.error?.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(large.error?.details).toMatch(/prompt\.text: 70000 characters exceed the limit 65536/);
    } finally {
      await edge.close(100);
    }
  }, 30_000);
});

// From Node 22 on, HTTP/2 streams buffer 64 KiB on each side (16 KiB before): more than the
// tiny test model's longest output, so a reader that stops cannot hold the agent up there.
const smallStreamBuffers = Number(process.versions.node.split(".")[0]) < 22;

describe("a client that stops reading", () => {
  it.runIf(smallStreamBuffers)(
    "is cut after stallTimeoutMs (CANCELLED), and its device session released while it still is not reading",
    async () => {
      const edge = await startEdgeAgent(
        EDGE_CONFIG_SCHEMA.parse({
          model: join(dir, "model"),
          split: SPLIT,
          port: 0,
          stallTimeoutMs: 300,
          maxTokensLimit: 2040,
        }),
        silent,
        { cacheDir: join(dir, "graphs") },
      );
      try {
        let sessionsWhilePaused = -1;
        const result = await generate(
          edge.server.address,
          // More output than the server's stream buffers take (64 KiB from Node 22 on) and the
          // client's 1 KB window: the agent must wait for the reader.
          { tokenIds: { ids: [5, 6, 7] }, maxTokens: 2040, mode: "MODE_EDGE_ONLY" },
          async (index, control) => {
            if (index !== 0) return;
            control.pause();
            // A small window fills at once; the agent waits stallTimeoutMs, then gives up.
            await until(
              "the stalled generation to end",
              () => (edge.openSessions() === 0 ? true : undefined),
              5000,
            );
            sessionsWhilePaused = edge.openSessions();
            control.resume();
          },
          { channelOptions: { "grpc-node.flow_control_window": 1024 } },
        );
        expect(sessionsWhilePaused).toBe(0);
        expect(result.error?.code).toBe(grpc.status.CANCELLED);
        expect(result.error?.details).toMatch(/read nothing for 300 ms/);
        expect(result.tokens.length).toBeLessThan(2040);
      } finally {
        await edge.close(100);
      }
    },
    30_000,
  );
});

describe("TLS settings", () => {
  it("come in complete sets, each missing one named", () => {
    const worker = WORKER_CONFIG_SCHEMA.safeParse({ model: "m", split: 1, tlsCert: "c.pem" });
    expect(worker.success).toBe(false);
    expect(worker.error!.issues.map((i) => i.path[0]).sort()).toEqual(["tlsCa", "tlsKey"]);
    const edge = EDGE_CONFIG_SCHEMA.safeParse({ model: "m", cloudTlsCert: "c.pem", cloudTlsKey: "k.pem" });
    expect(edge.success).toBe(false);
    expect(edge.error!.issues.map((i) => i.path[0])).toEqual(["cloudTlsCa"]);
    const key = EDGE_CONFIG_SCHEMA.safeParse({ model: "m", apiKeys: ["secret"] });
    expect(key.error!.issues[0].message).toMatch(/SHA-256/);
  });
});
