/**
 * The escalation protocol has one home (@tandem/runtime's protocol module), and both of
 * its paths follow it alike: the same messages sent in-process (LocalUpperSegment's
 * EscalationSession) and over gRPC to a real cloud worker get identical replies —
 * tokens, probabilities, lost context — and identical refusals (status and message),
 * for every codec.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLOUD_LINK_BACKOFF } from "@tandem/common";
import { startCloudWorker, type CloudWorker } from "@tandem/cloud-worker";
import { CloudLinks, DEFAULT_CLOUD_LINK_OPTIONS, StaticCloudRoute } from "@tandem/edge-agent";
import {
  loadTandemProtos,
  statusOf,
  type CloudMessage__Output,
  type EdgeMessage,
  type EdgeMessage__Output,
} from "@tandem/proto";
import {
  CODEC_NAMES,
  EscalationSession,
  GREEDY,
  LocalSessionContexts,
  LocalUpperSegment,
  frameMessage,
  getCodec,
  loadCheckpoint,
  loadLocalSplit,
  openMessage,
  type Checkpoint,
  type CodecName,
  type LocalSplit,
  type SamplingOptions,
  type SplitIdentity,
  splitIdentityOf,
} from "@tandem/runtime";
import { TINY_LLAMA, writeRandomCheckpoint } from "@tandem/runtime/testing";

const SPLIT = 2;
let dir: string;
let checkpoint: Checkpoint;
let local: LocalSplit;
let worker: CloudWorker;
let identity: SplitIdentity;
let hidden: Float32Array; // split-layer hidden states of 12 positions
const PROMPT = [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "tandem-protocol-"));
  await writeRandomCheckpoint(join(dir, "model"), {
    ...TINY_LLAMA,
    tieWordEmbeddings: true,
    seed: 77,
    initScale: 2,
  });
  checkpoint = await loadCheckpoint(join(dir, "model"));
  local = await loadLocalSplit(checkpoint, { split: SPLIT, cacheDir: join(dir, "graphs") });
  local.lower.open("h");
  hidden = (await local.lower.forward("h", { ids: PROMPT })).hidden!;
  local.lower.release("h");
  identity = splitIdentityOf(checkpoint, SPLIT);
  worker = await startCloudWorker(
    { modelDir: join(dir, "model"), split: SPLIT, workerId: "same", cacheDir: join(dir, "graphs") },
    pino({ level: "silent" }),
  );
});

afterAll(async () => {
  await worker?.close(100);
  await local?.release();
  rmSync(dir, { recursive: true, force: true });
});

/** What a path answered: each reply, then how the stream ended. */
type Outcome = { replies: CloudMessage__Output[]; end: { code: number; details: string } | "ok" };

/** In-process: the messages through the upper side's EscalationSession, as LocalUpperSegment runs it. */
async function inProcess(messages: EdgeMessage__Output[]): Promise<Outcome> {
  const session = new EscalationSession(
    { ...identity, workerId: "same" },
    new LocalSessionContexts(local.upper!),
  );
  const replies: CloudMessage__Output[] = [];
  for (const message of messages) {
    try {
      const reply = await session.handle(message);
      if (reply) replies.push(reply);
    } catch (error) {
      // What the caller is told (the log's text is not on the wire).
      const { code, details } = statusOf(error);
      return { replies, end: { code, details } };
    }
  }
  return { replies, end: "ok" };
}

/** Over gRPC to the worker: the same messages on one Escalate stream. */
async function overGrpc(messages: EdgeMessage__Output[]): Promise<Outcome> {
  const { tandem } = loadTandemProtos();
  const client = new tandem.v1.CloudWorker(worker.server.address, grpc.credentials.createInsecure());
  const stream = client.Escalate();
  const replies: CloudMessage__Output[] = [];
  const ended = new Promise<Outcome["end"]>((resolve) => {
    stream.on("error", (e: grpc.ServiceError) => resolve({ code: e.code, details: e.details }));
    stream.on("status", (s: grpc.StatusObject) => resolve(s.code === grpc.status.OK ? "ok" : s));
  });
  stream.on("data", (m: CloudMessage__Output) => replies.push(m));
  for (const message of messages) stream.write(message as EdgeMessage);
  stream.end();
  const end = await ended;
  client.close();
  // The gRPC message carries only the oneof it holds; the in-process one names it too.
  return { replies: replies.map((r) => ({ ...r, message: r.message })), end };
}

const frame = (
  codec: CodecName,
  start: number,
  count: number,
  sampling: SamplingOptions = GREEDY,
  wantToken = true,
) =>
  frameMessage(getCodec(codec), identity.hiddenSize, {
    start,
    hidden: hidden.subarray(start * identity.hiddenSize, (start + count) * identity.hiddenSize),
    count,
    wantToken,
    sampling,
    requestId: BigInt(start * 100 + count),
  });

const SAMPLED: SamplingOptions = { temperature: 0.8, topP: 0.9, seed: 42n };

describe("the escalation protocol, in-process and over gRPC", () => {
  it.each(CODEC_NAMES)("gives identical replies to the same session through %s", async (codec) => {
    const id = `same-${codec}`;
    const messages = [
      openMessage(id, identity, codec),
      frame(codec, 0, 6), // the prompt's context and a token
      frame(codec, 6, 1), // a decode step
      frame(codec, 7, 2, SAMPLED), // sampled, seeded
      frame(codec, 9, 1, GREEDY, false), // context sync without a token
      frame(codec, 5, 5), // resent from position 5: truncate and recompute
      frame(codec, 11, 1), // past the context's end: ContextLost from 10
      frame(codec, 10, 2), // the replay
    ];
    const [a, b] = [await inProcess(messages), await overGrpc(messages)];
    expect(b).toEqual(a);
    expect(a.end).toBe("ok");
    expect(a.replies.map((r) => r.message)).toEqual([
      "opened",
      "token",
      "token",
      "token",
      "token",
      "contextLost",
      "token",
    ]);
    expect(a.replies[5].contextLost).toMatchObject({ resumeFrom: 10 });
  });

  const refusals: [string, (id: string) => EdgeMessage__Output[]][] = [
    ["a frame before open", () => [frame("fp32", 0, 1)]],
    ["a second open", (id) => [openMessage(id, identity, "fp32"), openMessage(id, identity, "fp32")]],
    ["an empty session id", () => [openMessage("", identity, "fp32")]],
    ["other weights", (id) => [openMessage(id, { ...identity, weightsHash: "0".repeat(64) }, "fp32")]],
    ["another split", (id) => [openMessage(id, { ...identity, split: SPLIT + 1 }, "fp32")]],
    [
      "an unknown codec",
      (id) => {
        const open = openMessage(id, identity, "fp32");
        return [{ ...open, open: { ...open.open!, codec: "HIDDEN_STATE_CODEC_UNSPECIFIED" } }];
      },
    ],
    [
      "a payload of the wrong size",
      (id) => {
        const bad = frame("fp32", 0, 2);
        return [openMessage(id, identity, "fp32"), { ...bad, frame: { ...bad.frame!, count: 3 } }];
      },
    ],
    [
      "a temperature over the limit",
      (id) => [openMessage(id, identity, "fp32"), frame("fp32", 0, 2, { ...SAMPLED, temperature: 101 })],
    ],
    ["an empty message", (id) => [openMessage(id, identity, "fp32"), {}]],
    [
      "token ids that are not one per position",
      (id) => {
        const bad = frame("fp32", 0, 2);
        return [openMessage(id, identity, "fp32"), { ...bad, frame: { ...bad.frame!, tokenIds: [5] } }];
      },
    ],
    [
      "a token id outside the vocabulary",
      (id) => {
        const bad = frame("fp32", 0, 2);
        return [
          openMessage(id, identity, "fp32"),
          { ...bad, frame: { ...bad.frame!, tokenIds: [5, identity.vocabSize] } },
        ];
      },
    ],
    [
      "more alternatives than logprobs allow",
      (id) => {
        const bad = frame("fp32", 0, 2);
        return [
          openMessage(id, identity, "fp32"),
          { ...bad, frame: { ...bad.frame!, logprobs: true, topLogprobs: 21 } },
        ];
      },
    ],
    [
      "a penalty that is not a number",
      (id) => {
        const bad = frame("fp32", 0, 2);
        return [
          openMessage(id, identity, "fp32"),
          { ...bad, frame: { ...bad.frame!, presencePenalty: NaN } },
        ];
      },
    ],
    [
      "a check starting at the frame's first position (its predecessor is not in the frame)",
      (id) => {
        const bad = frame("fp32", 2, 4);
        return [
          openMessage(id, identity, "fp32"),
          { ...bad, frame: { ...bad.frame!, tokenIds: PROMPT.slice(2, 6), verifyFrom: 2 } },
        ];
      },
    ],
    [
      "a check past the frame's end",
      (id) => {
        const bad = frame("fp32", 0, 4);
        return [
          openMessage(id, identity, "fp32"),
          { ...bad, frame: { ...bad.frame!, tokenIds: PROMPT.slice(0, 4), verifyFrom: 5 } },
        ];
      },
    ],
    [
      "a check of more than 64 tokens (each a row of the worker's head)",
      (id) => {
        const long = frameMessage(getCodec("fp32"), identity.hiddenSize, {
          start: 0,
          hidden: new Float32Array(70 * identity.hiddenSize),
          count: 70,
          wantToken: true,
          sampling: GREEDY,
          requestId: 1n,
          tokenIds: Array.from({ length: 70 }, (_, i) => i),
          verifyFrom: 5,
        });
        return [openMessage(id, identity, "fp32"), long];
      },
    ],
    [
      "a check without the token ids it checks",
      (id) => {
        const bad = frame("fp32", 0, 4);
        return [openMessage(id, identity, "fp32"), { ...bad, frame: { ...bad.frame!, verifyFrom: 2 } }];
      },
    ],
    [
      "a check that asks for no token",
      (id) => {
        const bad = frame("fp32", 0, 4, GREEDY, false);
        return [
          openMessage(id, identity, "fp32"),
          { ...bad, frame: { ...bad.frame!, tokenIds: PROMPT.slice(0, 4), verifyFrom: 2 } },
        ];
      },
    ],
    [
      "penalties on a context whose token ids were never sent",
      (id) => [openMessage(id, identity, "fp32"), frame("fp32", 0, 2, { ...GREEDY, presencePenalty: 1 })],
    ],
  ];

  it.each(refusals)("refuses %s alike: the same status and message", async (_name, build) => {
    const messages = build(`refused-${_name.replace(/\W+/g, "-")}`);
    const [a, b] = [await inProcess(messages), await overGrpc(messages)];
    expect(a.end).not.toBe("ok");
    expect(b).toEqual(a);
    const { code, details } = a.end as { code: number; details: string };
    expect([grpc.status.INVALID_ARGUMENT, grpc.status.FAILED_PRECONDITION]).toContain(code);
    // A check is refused for what is wrong with the check, not for something else of the frame.
    if (_name.includes("check")) expect(details).toMatch(/^frame\.verify_from: /);
  });

  it("checks the edge's tokens alike: answers at the first one the head answers differently, and the context ends there", async () => {
    // The head's own answers at positions 3..12, one frame each (a session of its own).
    const answers = new Map<number, number>();
    const probe = [openMessage("probe", identity, "fp32")];
    for (let end = 3; end <= 12; end++) probe.push(frame("fp32", 0, end));
    (await inProcess(probe)).replies.slice(1).forEach((r, i) => answers.set(3 + i, r.token!.token));
    // Token ids the head agrees with at 3..7 and not at 8.
    const tokenIds = PROMPT.map((id, p) =>
      p < 3 ? id : p === 8 ? (answers.get(8)! + 1) % identity.vocabSize : answers.get(p)!,
    );
    const check = (id: string, verifyFrom: number, ids = tokenIds) => {
      const message = frame("fp32", 0, 12);
      return [
        openMessage(id, identity, "fp32"),
        { ...message, frame: { ...message.frame!, tokenIds: ids, verifyFrom } },
      ];
    };
    for (const path of [inProcess, overGrpc]) {
      const disagreed = await path(check(`check-${path.name}`, 3));
      expect(disagreed.end).toBe("ok");
      expect(disagreed.replies[1].token).toMatchObject({ position: 8, token: answers.get(8) });
      // Every token agreed with: the answer after the frame, as without a check.
      const agreed = await path(
        check(
          `agreed-${path.name}`,
          3,
          tokenIds.map((id, p) => (p === 8 ? answers.get(8)! : id)),
        ),
      );
      expect(agreed.replies[1].token).toMatchObject({ position: 12, token: answers.get(12) });
    }
    // The worker's context of the session that disagreed ends before the refused token:
    // an edge reopening it resends from there.
    const reopened = await overGrpc([openMessage("check-overGrpc", identity, "fp32")]);
    expect(reopened.replies[0].opened).toMatchObject({ contextLength: 8 });
  });

  it("answers the edge's upper-segment calls alike: LocalUpperSegment and a CloudSession", async () => {
    const links = new CloudLinks(
      { ...DEFAULT_CLOUD_LINK_OPTIONS, codec: "fp16", backoff: { ...CLOUD_LINK_BACKOFF, initialDelayMs: 1 } },
      { ...identity, modelId: "m" },
      new StaticCloudRoute(worker.server.address),
    );
    const remote = links.session("upper-remote");
    const inProc = new LocalUpperSegment(local.upper!, "upper-local", { codec: "fp16" });
    const h = identity.hiddenSize;
    const calls: [number, number, SamplingOptions][] = [
      [0, 6, GREEDY],
      [6, 1, SAMPLED],
      [7, 3, GREEDY],
      [4, 2, SAMPLED],
    ];
    try {
      for (const [start, count, sampling] of calls) {
        const slice = hidden.subarray(start * h, (start + count) * h);
        const [x, y] = [
          await inProc.extend({ start, hidden: slice, count, wantToken: true, sampling }),
          await remote.extend({ start, hidden: slice, count, wantToken: true, sampling }),
        ];
        expect(y).toEqual(x);
      }
      // Past the end of what either holds: both say where to replay from.
      const past = hidden.subarray(10 * h, 11 * h);
      const frame = { start: 10, hidden: past, count: 1, wantToken: true, sampling: GREEDY };
      await expect(inProc.extend(frame)).rejects.toMatchObject({ resumeFrom: 6 });
      await expect(remote.extend(frame)).rejects.toMatchObject({ resumeFrom: 6 });
    } finally {
      await inProc.close();
      await remote.close();
      await links.close();
    }
  });
});
