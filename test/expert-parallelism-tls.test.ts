/**
 * Expert parallelism over mutual TLS: workers call each other's Experts with their own
 * certificates (`tandem certs issue-server` makes them fit for client authentication), the
 * output still equals the single graph's, and a device's certificate, or none, is refused.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { connect } from "@nats-io/transport-node";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { controlPlaneNames, openExpertMap } from "@tandem/cluster";
import { startCloudWorker, type CloudWorker } from "@tandem/cloud-worker";
import { channelCredentials, loadTandemProtos } from "@tandem/proto";
import {
  caPaths,
  devicePaths,
  initCertificateAuthority,
  issueDeviceCertificate,
  issueServerCertificate,
  serverPaths,
} from "@tandem/proto/certificates";
import {
  cloudSegmentSpec,
  loadCheckpoint,
  SegmentModel,
  SegmentSessions,
  segmentSpec,
  type Checkpoint,
} from "@tandem/runtime";
import { writeRandomCheckpoint } from "@tandem/runtime/testing";
import { startNatsServer, type TestNatsServer, until } from "@tandem/testkit";

const SPLIT = 1;
const LAYERS = 3;
const EXPERTS = 4;
const cluster = `eptls${Date.now()}`;

let dir: string;
let certs: string;
let checkpoint: Checkpoint;
let nats: TestNatsServer;
const workers = new Map<string, CloudWorker>();

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "tandem-ep-tls-"));
  certs = join(dir, "certs");
  await initCertificateAuthority(certs);
  await issueServerCertificate(certs, "worker", ["127.0.0.1"]);
  await issueDeviceCertificate(certs, "device-a");
  await writeRandomCheckpoint(join(dir, "model"), {
    architecture: "mixtral",
    vocabSize: 300,
    hiddenSize: 64,
    intermediateSize: 128,
    numLayers: LAYERS,
    numHeads: 4,
    numKvHeads: 2,
    numExperts: EXPERTS,
    numExpertsPerToken: 2,
    tieWordEmbeddings: true,
    seed: 41,
    dtype: "F32",
    initScale: 2,
    maxPositions: 128,
  });
  checkpoint = await loadCheckpoint(join(dir, "model"));
  nats = await startNatsServer();
  const worker = serverPaths(certs, "worker");
  const ca = caPaths(certs);
  for (const id of ["w1", "w2"])
    workers.set(
      id,
      await startCloudWorker(
        {
          modelDir: join(dir, "model"),
          split: SPLIT,
          workerId: id,
          port: 0,
          cacheDir: join(dir, "graphs"),
          tls: { cert: worker.cert, key: worker.key, ca: ca.cert, crl: ca.crl },
          expertParallel: { port: 0, handoverMs: 0 },
          cluster: { natsUrl: nats.url, name: cluster, heartbeatMs: 200, drainTimeoutMs: 100 },
        },
        pino({ level: "silent" }),
      ),
    );
  // Every expert on w2: w1 runs attention and routers and calls w2 for all of them.
  const nc = await connect({ servers: nats.url });
  const ids = (LAYERS - SPLIT) * EXPERTS;
  await (
    await openExpertMap(nc, controlPlaneNames(cluster))
  ).write(
    {
      version: 1,
      fencingToken: 0,
      epoch: "",
      experts: Object.fromEntries(Array.from({ length: ids }, (_, id) => [String(id), ["w2"]])),
      endpoints: {
        w1: workers.get("w1")!.experts!.server.address,
        w2: workers.get("w2")!.experts!.server.address,
      },
      loads: new Array<number>(ids).fill(1),
      maxMeanLoad: 1,
      writtenAt: Date.now(),
    },
    undefined,
  );
  await nc.close();
  await until("the workers to take up the map", () =>
    [...workers.values()].every((w) => w.membership?.expertAssignment()?.version === 1) ? true : undefined,
  );
}, 120_000);

afterAll(async () => {
  for (const worker of workers.values()) await worker.close(0);
  await nats?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe("expert parallelism over mutual TLS", () => {
  it("runs every expert on the other worker, with its certificate, and answers what the single graph answers", async () => {
    const lower = new SegmentSessions(
      await SegmentModel.load(checkpoint, segmentSpec({ fromLayer: 0, toLayer: SPLIT, outputHidden: true }), {
        cacheDir: join(dir, "graphs"),
      }),
    );
    const reference = new SegmentSessions(
      await SegmentModel.load(checkpoint, cloudSegmentSpec(SPLIT, LAYERS, "fp32"), {
        cacheDir: join(dir, "graphs"),
      }),
    );
    const w1 = workers.get("w1")!;
    for (const s of [lower, reference]) s.open("s");
    const hidden = (await lower.forward("s", { ids: [5, 17, 42, 99, 3] })).hidden!;
    const expected = (await reference.forward("s", { hidden, count: 5 })).exits[0].logits!;
    const actual = (await w1.contexts.append("s", { start: 0, hidden, count: 5 })).exits[0].logits!;
    expect(Array.from(actual)).toEqual(Array.from(expected));
    expect(w1.experts!.parallelism.counters.remoteCalls).toBeGreaterThan(0);
    expect(w1.experts!.parallelism.counters.fallbacks).toBe(0);
    expect(workers.get("w2")!.experts!.served.calls).toBeGreaterThan(0);
    await lower.model.release();
    await reference.model.release();
  });

  it("refuses a device's certificate with UNAUTHENTICATED, and a caller without one at the handshake", async () => {
    const Experts = loadTandemProtos().tandem.v1.Experts;
    const address = workers.get("w2")!.experts!.server.address;
    const request = {
      weightsHash: checkpoint.weightsHash,
      layer: SPLIT,
      expert: 0,
      rows: 1,
      hiddenSize: 64,
      codec: "HIDDEN_STATE_CODEC_FP32" as const,
      payload: Buffer.alloc(64 * 4),
    };
    const call = (credentials: grpc.ChannelCredentials) =>
      new Promise<grpc.ServiceError | undefined>((resolve) => {
        const client = new Experts(address, credentials);
        client.Run(request, { deadline: Date.now() + 5000 }, (error) => {
          client.close();
          resolve(error ?? undefined);
        });
      });
    const device = devicePaths(certs, "device-a");
    const asDevice = await call(
      channelCredentials({ ca: caPaths(certs).cert, cert: device.cert, key: device.key }),
    );
    expect(asDevice?.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(asDevice?.details).toMatch(/"device-a" is not a worker's/);
    const anonymous = await call(channelCredentials({ ca: caPaths(certs).cert }));
    expect(anonymous?.code).toBe(grpc.status.UNAVAILABLE);
    // A worker's certificate passes.
    const worker = serverPaths(certs, "worker");
    expect(
      await call(channelCredentials({ ca: caPaths(certs).cert, cert: worker.cert, key: worker.key })),
    ).toBeUndefined();
  });
});
