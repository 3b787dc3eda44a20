/**
 * The cloud-compute measurement of the collab benchmark: what the cloud spends per
 * generated token under each exit policy, relative to a cloud-only deployment. The cloud's
 * calls are recorded during free generation and replayed back to back, so the figure
 * times the cloud's work alone; the same ratio is also counted in FLOPs from the model's
 * shape, a check that is blind to caches and batching but not to timing noise.
 */
import {
  AlwaysDeferPolicy,
  AlwaysExitPolicy,
  calibratedExitHeads,
  type ExitPolicy,
  loadLocalSplit,
  LocalUpperSegment,
  type SegmentSessions,
  SplitGenerator,
  calibratedExitPolicy,
  type UpperAnswer,
  type UpperFrame,
  type UpperSegment,
  CLOSE_MESSAGE,
  EscalationSession,
  LocalSessionContexts,
  frameMessage,
  getCodec,
  openMessage,
} from "@tandem/runtime";
import { layerFlops } from "../model-arithmetic.ts";
import { median } from "../statistics.ts";
import type { Context } from "./collab-context.ts";

/** A recorded call: the frame, its hidden states copied (the generator reuses its buffer). */
type CloudCall = UpperFrame;

/** Records the cloud's calls during free generation, to replay them as a cloud machine would run them. */
export class RecordingUpper implements UpperSegment {
  readonly calls: CloudCall[] = [];
  constructor(private readonly inner: UpperSegment) {}
  extend(frame: UpperFrame): Promise<UpperAnswer | undefined> {
    this.calls.push({ ...frame, hidden: frame.hidden.slice() });
    return this.inner.extend(frame);
  }
  close() {
    return this.inner.close();
  }
}

/**
 * Runs recorded cloud calls back to back on a fresh session, as a worker handles them
 * (the escalation protocol's upper side: check, decode, apply, answer); returns their
 * wall time. The frames are encoded beforehand: encoding is the edge's work.
 */
export async function replay(upper: SegmentSessions, calls: CloudCall[], sessionId: string): Promise<number> {
  const { config, spec, weightsHash } = upper.model;
  const identity = {
    weightsHash,
    split: spec.fromLayer,
    hiddenSize: config.hiddenSize,
    vocabSize: config.vocabSize,
    maxPositions: config.maxPositions,
  };
  const session = new EscalationSession({ ...identity, workerId: "replay" }, new LocalSessionContexts(upper));
  const codec = getCodec("fp32");
  const messages = [
    openMessage(sessionId, identity, codec.name),
    ...calls.map((call, i) => frameMessage(codec, config.hiddenSize, { ...call, requestId: i })),
  ];
  const start = performance.now();
  for (const message of messages) await session.handle(message);
  const ms = performance.now() - start;
  await session.handle(CLOSE_MESSAGE);
  return ms;
}

/** Cloud compute per generated token for each policy of `ctx`'s calibration, against cloud-only. */
export async function cloudCompute(ctx: Context, maxTokens: number) {
  const { checkpoint, calibration, split } = ctx;
  const layers = checkpoint.config.numLayers;
  // The whole model (cloud-only), and the split as edge and cloud run it.
  const whole = await loadLocalSplit(checkpoint);
  const edgeAndCloud = await loadLocalSplit(checkpoint, { split, exits: calibratedExitHeads(calibration) });
  const lower = edgeAndCloud.lower;
  const upper = edgeAndCloud.upper!;
  // Warm the whole model's path once (recording below warms the split).
  for await (const _ of new SplitGenerator(whole.lower, undefined, new AlwaysExitPolicy()).tokens(
    ctx.prompts[0],
    { maxTokens: 4 },
  ))
    void _;

  // What the cloud runs for each policy is recorded during free generation (the edge's
  // layers run in this process too, and would evict the cloud's weights from the caches a
  // cloud machine keeps to itself), then replayed back to back. Timed figures drift on a
  // shared machine, so the cloud-only baseline and the replays run interleaved, prompt by
  // prompt, in several rounds; each figure is the median over rounds of its ratio to the
  // baseline of the same round.
  const policies: { policy: string; target: number; make: () => ExitPolicy }[] = [
    ...ctx.calibration.summary.policies.map((p) => ({
      policy: `calibrated ${p.targetAgreement}`,
      target: p.targetAgreement,
      make: () => calibratedExitPolicy(ctx.calibration, p),
    })),
    {
      policy: "cloud-only through the edge (every token escalated)",
      target: 1,
      make: () => new AlwaysDeferPolicy(),
    },
  ];
  const recorded: { calls: CloudCall[]; tokens: number; escalations: number; positionsSent: number }[][] = [];
  for (const [i, prompt] of ctx.prompts.entries()) {
    const perPolicy = [];
    for (const [j, policy] of policies.entries()) {
      const recording = new RecordingUpper(new LocalUpperSegment(upper, `r${i}.${j}`));
      const collaborative = new SplitGenerator(lower, recording, policy.make());
      let tokens = 0;
      for await (const _ of collaborative.tokens(prompt, { maxTokens })) tokens++;
      await recording.close();
      perPolicy.push({
        calls: recording.calls,
        tokens,
        escalations: collaborative.stats.escalations,
        positionsSent: collaborative.stats.positionsSent,
      });
    }
    recorded.push(perPolicy);
  }
  const rounds = ctx.smoke ? 1 : 3;
  const perRound = Array.from({ length: rounds }, () => ({
    wholeMs: 0,
    wholeTokens: 0,
    policies: policies.map(() => ({ ms: 0, tokens: 0, escalations: 0, positionsSent: 0 })),
  }));
  for (let round = 0; round < rounds; round++) {
    process.stderr.write(`collab bench: split ${split}: cloud compute, round ${round + 1} of ${rounds}\n`);
    const totals = perRound[round];
    for (const [i, prompt] of ctx.prompts.entries()) {
      // Cloud-only: the cloud runs every layer for every token.
      const generator = new SplitGenerator(whole.lower, undefined, new AlwaysExitPolicy());
      for await (const _ of generator.tokens(prompt, { maxTokens })) totals.wholeTokens++;
      totals.wholeMs += generator.stats.lowerMs;
      for (const [j, run] of recorded[i].entries()) {
        const t = totals.policies[j];
        t.ms += await replay(upper, run.calls, `p${round}.${i}.${j}`);
        t.tokens += run.tokens;
        t.escalations += run.escalations;
        t.positionsSent += run.positionsSent;
      }
    }
  }
  const promptTokens = ctx.prompts.reduce((a, p) => a + p.length, 0);
  // FLOPs of a position through a layer and through the LM head, from the model's shape.
  const c = checkpoint.config;
  const flopsPerLayer = layerFlops(c);
  const headFlops = 2 * c.hiddenSize * c.vocabSize;
  const rows = policies.map((policy, j) => {
    const last = perRound[rounds - 1].policies[j];
    const wholeTokens = perRound[rounds - 1].wholeTokens;
    return {
      policy: policy.policy,
      target: policy.target,
      cloud_ms_per_token: median(perRound.map((r) => r.policies[j].ms / r.policies[j].tokens)),
      cloud_compute_relative: median(
        perRound.map((r) => r.policies[j].ms / r.policies[j].tokens / (r.wholeMs / r.wholeTokens)),
      ),
      cloud_compute_relative_per_round: perRound.map(
        (r) => r.policies[j].ms / r.policies[j].tokens / (r.wholeMs / r.wholeTokens),
      ),
      escalated_share: last.escalations / last.tokens,
      // The same by arithmetic: FLOPs of the cloud's calls over those of the whole model
      // prefilling each prompt and decoding every token (blind to caches and batching).
      cloud_flops_relative:
        recorded
          .map((perPolicy) =>
            perPolicy[j].calls.reduce(
              (sum, call) =>
                sum + call.count * (layers - split) * flopsPerLayer + (call.wantToken ? headFlops : 0),
              0,
            ),
          )
          .reduce((a, b) => a + b, 0) /
        ((promptTokens + wholeTokens) * layers * flopsPerLayer + wholeTokens * headFlops),
    };
  });
  await whole.release();
  await edgeAndCloud.release();
  return {
    cloud_only_ms_per_token: median(perRound.map((r) => r.wholeMs / r.wholeTokens)),
    rounds,
    rows,
  };
}
