/**
 * Collaborative generation end to end: a gRPC client → an edge agent process → a cloud
 * worker process, over loopback. Covers the three modes, equality with the whole model,
 * a cloud worker killed and restarted mid-generation, and bad requests.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLOUD_LINK_BACKOFF } from "@tandem/common";
import { Tokenizer } from "@tandem/runtime";
import { wholeModelTokens, writeRandomCheckpoint } from "@tandem/runtime/testing";
import {
  freePort,
  generate,
  healthStatus,
  metricsAddressOf,
  type RunningProcess,
  scrapeMetrics,
  startProgram,
} from "@tandem/testkit";

let dir: string;
let model: string;
let workerPort: number;
let worker: RunningProcess;
let edge: RunningProcess;
const env = () => ({ TANDEM_CACHE_DIR: join(dir, "cache") });
const PROMPT = "The edge answers what it is sure of.";

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "tandem-collab-"));
  model = join(dir, "model");
  await writeRandomCheckpoint(model, {
    architecture: "llama",
    vocabSize: 300,
    hiddenSize: 128,
    intermediateSize: 256,
    numLayers: 6,
    numHeads: 8,
    numKvHeads: 4,
    tieWordEmbeddings: true,
    seed: 21,
    dtype: "F32",
    initScale: 2,
    maxPositions: 16384,
  });
  workerPort = await freePort();
  worker = await startProgram(
    "tandem-cloud-worker",
    { model, split: 3, port: workerPort, workerId: "w1" },
    env(),
  );
  edge = await startProgram(
    "tandem-edge",
    {
      model,
      split: 3,
      exitLayers: "2,3",
      threshold: 0.6,
      cloudAddress: worker.address,
      codec: "fp32",
      port: 0,
      cloudDeadlineMs: 3000,
      maxTokensLimit: 10000,
    },
    env(),
  );
});

afterAll(async () => {
  await edge?.kill();
  await worker?.kill();
  rmSync(dir, { recursive: true, force: true });
});

function expectContiguous(positions: number[], first: number): void {
  expect(positions).toEqual(Array.from({ length: positions.length }, (_, i) => first + i));
}

describe("Generate over gRPC, edge agent → cloud worker", () => {
  it("CLOUD_ONLY with the fp32 codec gives, token for token, the whole model's greedy output", async () => {
    const tokenizer = await Tokenizer.fromFile(join(model, "tokenizer.json"));
    const ids = tokenizer.encode(PROMPT);
    const result = await generate(edge.address, { text: PROMPT, maxTokens: 40, mode: "MODE_CLOUD_ONLY" });
    expect(result.error).toBeUndefined();
    expect(result.tokens.every((t) => t.source === "TOKEN_SOURCE_CLOUD" && t.exitLayer === 6)).toBe(true);
    expect(result.tokens.map((t) => t.id)).toEqual(
      await wholeModelTokens(model, ids, 40, { cacheDir: join(dir, "cache", "graphs") }),
    );
    expectContiguous(
      result.tokens.map((t) => t.position),
      ids.length,
    );
    expect(result.summary?.cloudTokens).toBe(40);
    expect(Number(result.summary?.bytesSent)).toBeGreaterThan(ids.length * 128 * 4);
  });

  it("EDGE_ONLY never contacts the cloud", async () => {
    const before = await generate(edge.address, { text: PROMPT, maxTokens: 20, mode: "MODE_EDGE_ONLY" });
    expect(before.tokens.every((t) => t.source === "TOKEN_SOURCE_EDGE" && t.exitLayer === 3)).toBe(true);
    expect(before.summary?.bytesSent).toBe("0");
    expect(before.summary?.edgeTokens).toBe(20);
  });

  it("AUTO answers confident tokens at the exits and escalates the rest, sending each position once", async () => {
    const result = await generate(edge.address, { text: PROMPT, maxTokens: 60 });
    const sources = new Set(result.tokens.map((t) => t.source));
    expect(sources).toEqual(new Set(["TOKEN_SOURCE_EDGE", "TOKEN_SOURCE_CLOUD"]));
    const summary = result.summary!;
    expect(summary.edgeTokens + summary.cloudTokens).toBe(60);
    expect(summary.escalations).toBe(summary.cloudTokens);
    expect(summary.finishReason).toBe("FINISH_REASON_LENGTH");
    for (const t of result.tokens)
      if (t.source === "TOKEN_SOURCE_EDGE") expect([2, 3]).toContain(t.exitLayer);
    // Bytes: each escalated position's 128 fp32 values once, plus framing.
    const lastCloud = result.tokens.filter((t) => t.source === "TOKEN_SOURCE_CLOUD").pop()!;
    expect(Number(summary.bytesSent)).toBeGreaterThanOrEqual(lastCloud.position * 128 * 4);
    expect(Number(summary.bytesSent)).toBeLessThan(
      lastCloud.position * 128 * 4 + 200 * summary.escalations + 400,
    );
  });

  it("stops at a stop sequence without emitting it, and honours max_tokens", async () => {
    const free = await generate(edge.address, { text: PROMPT, maxTokens: 30, mode: "MODE_EDGE_ONLY" });
    const stop = free.text.slice(10, 12);
    const stopped = await generate(edge.address, {
      text: PROMPT,
      maxTokens: 30,
      mode: "MODE_EDGE_ONLY",
      stop: [stop],
    });
    expect(stopped.summary?.finishReason).toBe("FINISH_REASON_STOP");
    expect(stopped.text).toBe(free.text.slice(0, free.text.indexOf(stop)));
  });

  it("samples reproducibly from a seed", async () => {
    const request = { text: PROMPT, maxTokens: 30, sampling: { temperature: 1.2, topP: 0.9, seed: "42" } };
    const a = await generate(edge.address, request);
    const b = await generate(edge.address, request);
    const c = await generate(edge.address, { ...request, sampling: { ...request.sampling, seed: "43" } });
    expect(a.tokens.map((t) => t.id)).toEqual(b.tokens.map((t) => t.id));
    expect(a.tokens.map((t) => t.id)).not.toEqual(c.tokens.map((t) => t.id));
  });

  it("reports SERVING on standard gRPC health checks of both servers", async () => {
    for (const [address, service] of [
      [edge.address, "tandem.v1.Inference"],
      [worker.address, "tandem.v1.CloudWorker"],
    ])
      expect(await healthStatus(address, service)).toBe("SERVING");
  });
});

describe("other AUTO-mode policies from the agent's configuration", () => {
  for (const [policy, flags] of [
    ["rolling-entropy", { threshold: 0.8, rollingWindow: 4 }],
    ["budget", { escalationRate: 0.5 }],
  ] as const) {
    it(`${policy}: answers some tokens at the edge and escalates others`, async () => {
      const agent = await startProgram(
        "tandem-edge",
        {
          model,
          split: 3,
          exitLayers: "2,3",
          cloudAddress: worker.address,
          codec: "fp16",
          port: 0,
          policy,
          ...flags,
        },
        env(),
      );
      try {
        const result = await generate(agent.address, { text: PROMPT, maxTokens: 60 });
        expect(result.error).toBeUndefined();
        expect(result.summary!.edgeTokens).toBeGreaterThan(0);
        expect(result.summary!.cloudTokens).toBeGreaterThan(0);
        if (policy === "budget") expect(result.summary!.cloudTokens / 60).toBeGreaterThan(0.25);
      } finally {
        await agent.kill();
      }
    });
  }
});

describe("verified edge tokens (verify EXACT and ROLLBACK)", () => {
  const PROMPTS = [PROMPT, "Tokens the cloud checks.", "a b c d e f", "Rollback"];

  it("EXACT streams, token for token, what CLOUD_ONLY streams, for every prompt, in fewer round trips", async () => {
    let accepted = 0;
    for (const text of PROMPTS) {
      const cloud = await generate(edge.address, { text, maxTokens: 48, mode: "MODE_CLOUD_ONLY" });
      const exact = await generate(edge.address, { text, maxTokens: 48, verify: "VERIFY_EXACT" });
      expect(exact.error).toBeUndefined();
      expect(exact.rollbacks).toEqual([]);
      expect(exact.tokens.map((t) => t.id)).toEqual(cloud.tokens.map((t) => t.id));
      expect(exact.text).toBe(cloud.text);
      const summary = exact.summary!;
      expect(summary.acceptedTokens).toBeLessThanOrEqual(summary.draftedTokens);
      expect(summary.edgeTokens + summary.cloudTokens).toBe(exact.tokens.length);
      // Each accepted draft saved the round trip CLOUD_ONLY spends on its token.
      expect(summary.escalations).toBeLessThanOrEqual(
        cloud.summary!.escalations - summary.acceptedTokens + 1,
      );
      accepted += summary.acceptedTokens;
    }
    expect(accepted).toBeGreaterThan(0);
  });

  it("ROLLBACK streams at once, and with its rollbacks applied shows what CLOUD_ONLY shows", async () => {
    let rollbacks = 0;
    for (const text of PROMPTS) {
      const cloud = await generate(edge.address, { text, maxTokens: 48, mode: "MODE_CLOUD_ONLY" });
      const rolled = await generate(edge.address, {
        text,
        maxTokens: 48,
        verify: "VERIFY_ROLLBACK",
        maxDraftTokens: 4,
        exitPolicy: { metric: "CONFIDENCE_METRIC_PROB", threshold: 0.2 },
      });
      expect(rolled.error).toBeUndefined();
      expect(rolled.standing.map((t) => t.id)).toEqual(cloud.tokens.map((t) => t.id));
      expect(rolled.text).toBe(cloud.text);
      expectContiguous(
        rolled.standing.map((t) => t.position),
        cloud.tokens[0].position,
      );
      expect(rolled.summary!.rolledBackTokens).toBe(rolled.tokens.length - rolled.standing.length);
      rollbacks += rolled.rollbacks.length;
    }
    expect(rollbacks).toBeGreaterThan(0);
  });

  it("refuses verify with EDGE_ONLY, and a draft limit out of range, naming the field", async () => {
    const edgeOnly = await generate(edge.address, {
      text: "hi",
      mode: "MODE_EDGE_ONLY",
      verify: "VERIFY_EXACT",
    });
    expect(edgeOnly.error?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(edgeOnly.error?.details).toMatch(/^verify: /);
    const tooMany = await generate(edge.address, { text: "hi", verify: "VERIFY_EXACT", maxDraftTokens: 65 });
    expect(tooMany.error?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(tooMany.error?.details).toMatch(/^max_draft_tokens: /);
  });
});

describe("a learned-confidence override", () => {
  it("is FAILED_PRECONDITION naming exit_policy.metric on an agent without a calibration, and the agent goes on", async () => {
    const refused = await generate(edge.address, {
      text: "hi",
      exitPolicy: { metric: "CONFIDENCE_METRIC_LEARNED", threshold: 0.9 },
    });
    expect(refused.error?.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(refused.error?.details).toMatch(/^exit_policy\.metric: .*calibration/);
    const served = await generate(edge.address, { text: "hi", maxTokens: 3 });
    expect(served.error).toBeUndefined();
    expect(served.tokens).toHaveLength(3);
  });
});

describe("bad requests get INVALID_ARGUMENT naming the field, and the agent goes on", () => {
  const cases: [string, object, RegExp][] = [
    ["max_tokens over the limit", { text: "hi", maxTokens: 100000 }, /max_tokens/],
    ["a token id outside the vocabulary", { tokenIds: { ids: [1, 2, 9999] } }, /prompt\.token_ids\[2\]/],
    ["no prompt", { maxTokens: 5 }, /prompt/],
    ["a negative temperature", { text: "hi", sampling: { temperature: -1 } }, /sampling\.temperature/],
    ["a stop sequence too long", { text: "hi", stop: ["x".repeat(100)] }, /stop\[0\]/],
    [
      "an escalation rate outside (0, 1)",
      { text: "hi", exitPolicy: { targetEscalationRate: 2 } },
      /exit_policy\.target_escalation_rate/,
    ],
  ];
  for (const [name, request, field] of cases) {
    it(name, async () => {
      const result = await generate(edge.address, request);
      expect(result.error?.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(result.error?.details).toMatch(field);
    });
  }

  it("bytes that are no GenerateRequest, naming the message", async () => {
    // As a client that does not speak protobuf sends them: raw bytes, no serializer of ours.
    const raw = (bytes: Buffer) => bytes;
    const client = new grpc.Client(edge.address, grpc.credentials.createInsecure());
    try {
      const status = await new Promise<grpc.StatusObject>((resolve) => {
        // A varint cut short: no protobuf message at all.
        const call = client.makeServerStreamRequest(
          "/tandem.v1.Inference/Generate",
          raw,
          raw,
          Buffer.from([0xff, 0xff, 0xff]),
        );
        call.on("data", () => undefined);
        call.on("error", () => undefined);
        call.on("status", resolve);
      });
      expect(status.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(status.details).toMatch(/^request: is not a valid tandem\.v1\.GenerateRequest \(.+\)$/);
    } finally {
      client.close();
    }
  });

  it("still serves after all of them", async () => {
    const result = await generate(edge.address, { text: "ok", maxTokens: 3 });
    expect(result.error).toBeUndefined();
    expect(result.tokens).toHaveLength(3);
  });
});

describe("a cloud worker killed mid-generation", () => {
  // Once more on failure: twice in about ten runs (once on a quiet machine) the edge finished
  // its 8000 tokens alone before the restarted worker took over; the race is not understood
  // yet (see the issue notes). A second failure still fails the suite.
  it(
    "the stream goes on at the edge, marked EDGE_FALLBACK, with no token lost or repeated; a restarted worker takes over again",
    { retry: 1 },
    async () => {
      // Kill the worker after 20 tokens. The edge waits one deadline for it, then answers
      // on the device. Once fallback tokens flow, freeze the edge agent (SIGSTOP) while a
      // new worker starts on the same port, then let it go on: the generation must switch
      // back to the cloud.
      const tokens = 8000;
      let restarted = false;
      const result = await generate(
        edge.address,
        { text: PROMPT, maxTokens: tokens, mode: "MODE_CLOUD_ONLY" },
        async (index, _control, token) => {
          if (index === 20) await worker.kill("SIGKILL");
          if (token.source === "TOKEN_SOURCE_EDGE_FALLBACK" && !restarted) {
            restarted = true;
            edge.child.kill("SIGSTOP");
            const stoppedAt = Date.now();
            try {
              worker = await startProgram(
                "tandem-cloud-worker",
                { model, split: 3, port: workerPort, workerId: "w2" },
                env(),
              );
              // Frozen for longer than the link's longest backoff (CLOUD_LINK_BACKOFF): its
              // circuit lets the session's probe through as soon as the edge goes on, before
              // the device, far faster than the cloud, has finished the generation alone.
              const backoff = CLOUD_LINK_BACKOFF.maxDelayMs + 200;
              await new Promise((resolve) =>
                setTimeout(resolve, Math.max(0, stoppedAt + backoff - Date.now())),
              );
            } finally {
              edge.child.kill("SIGCONT");
            }
          }
        },
      );
      expect(result.error).toBeUndefined();
      const sources = result.tokens.map((t) => t.source);
      expect(sources.slice(0, 20).every((s) => s === "TOKEN_SOURCE_CLOUD")).toBe(true);
      const firstFallback = sources.indexOf("TOKEN_SOURCE_EDGE_FALLBACK");
      expect(firstFallback).toBeGreaterThanOrEqual(20);
      // The restarted worker answers again: it was resynced from the edge's kept context.
      expect(sources.lastIndexOf("TOKEN_SOURCE_CLOUD")).toBeGreaterThan(firstFallback);
      expectContiguous(
        result.tokens.map((t) => t.position),
        result.tokens[0].position,
      );
      // The random model may emit its EOS token before max_tokens.
      const finish = result.summary!.finishReason;
      expect(["FINISH_REASON_LENGTH", "FINISH_REASON_EOS"]).toContain(finish);
      if (finish === "FINISH_REASON_LENGTH") expect(result.tokens).toHaveLength(tokens);
      expect(result.summary!.fallbackTokens).toBeGreaterThan(0);
      expect(result.summary!.cloudTokens + result.summary!.fallbackTokens).toBe(result.tokens.length);
    },
  );
});

describe("a cloud worker killed mid-generation under verify EXACT", () => {
  it("the generation waits for the restarted worker, replays its context there, and streams what CLOUD_ONLY streams", async () => {
    // Long enough that the edge is still generating when the new worker is up: the
    // tokens after the kill can only come from it (EXACT streams no unchecked token).
    const tokens = 3000;
    const cloud = await generate(edge.address, { text: PROMPT, maxTokens: tokens, mode: "MODE_CLOUD_ONLY" });
    let killed = false;
    const exact = await generate(
      edge.address,
      { text: PROMPT, maxTokens: tokens, verify: "VERIFY_EXACT" },
      async (index) => {
        if (index !== 10 || killed) return;
        killed = true;
        await worker.kill("SIGKILL");
        worker = await startProgram(
          "tandem-cloud-worker",
          { model, split: 3, port: workerPort, workerId: "w3", metricsAddress: "127.0.0.1:0" },
          { ...env(), TANDEM_LOG_LEVEL: "info" },
        );
      },
    );
    expect(killed).toBe(true);
    expect(exact.error).toBeUndefined();
    expect(exact.tokens.map((t) => t.id)).toEqual(cloud.tokens.map((t) => t.id));
    expect(exact.tokens.some((t) => t.source === "TOKEN_SOURCE_EDGE_FALLBACK")).toBe(false);
    // The restarted worker got every position from the first (the context generated before
    // it started, replayed), and checked the edge's drafts from there.
    const metrics = await scrapeMetrics(await metricsAddressOf(worker));
    const positions = exact.summary!.promptTokens + exact.tokens.length - 1;
    expect(
      metrics.value("tandem_worker_hidden_state_bytes_received_total", { codec: "fp32" }),
    ).toBeGreaterThanOrEqual(positions * 128 * 4);
    expect(metrics.value("tandem_worker_checked_tokens_total", { outcome: "accepted" })).toBeGreaterThan(0);
  });
});

describe("a client in another language", () => {
  it("a Python grpcio client generated from proto/ calls Generate and gets named errors", async () => {
    const script = join(import.meta.dirname, "python", "generate_client.py");
    const { stdout } = await promisify(execFile)("/usr/bin/python3", [script, edge.address, PROMPT, "12"], {
      timeout: 60_000,
    });
    const result = JSON.parse(stdout) as {
      tokens: { id: number; source: string }[];
      summary: { edge_tokens: number; cloud_tokens: number; finish_reason: string };
      invalid: { code: string; details: string };
    };
    const node = await generate(edge.address, { text: PROMPT, maxTokens: 12 });
    expect(result.tokens.map((t) => t.id)).toEqual(node.tokens.map((t) => t.id));
    expect(result.summary.edge_tokens + result.summary.cloud_tokens).toBe(12);
    expect(result.invalid.code).toBe("INVALID_ARGUMENT");
    expect(result.invalid.details).toMatch(/max_tokens/);
  });
});
