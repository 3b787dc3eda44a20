/**
 * The agreement sweep of the collab benchmark: on held-out text, teacher forced, how often
 * each calibrated exit policy keeps a token on the edge and still matches the full model,
 * and how often the cloud's answer survives each codec's round trip of the hidden states.
 * Teacher forcing compares every position against the same full-model token, so policies
 * and codecs are judged on identical inputs.
 */
import {
  calibratedExitHeads,
  CODEC_NAMES,
  type CodecName,
  exitSignalAt,
  getCodec,
  SegmentModel,
  SegmentSessions,
  segmentSpec,
  calibratedExitPolicy,
} from "@tandem/runtime";
import type { Context } from "./collab-context.ts";

/** Teacher forced on held-out windows: exit decisions per policy, cloud answers per codec. */
export async function agreementSweep(ctx: Context) {
  const { checkpoint, calibration, split } = ctx;
  const layers = checkpoint.config.numLayers;
  const hiddenSize = checkpoint.config.hiddenSize;
  const lower = new SegmentSessions(
    await SegmentModel.load(
      checkpoint,
      segmentSpec({
        fromLayer: 0,
        toLayer: split,
        exits: calibratedExitHeads(calibration),
        outputHidden: true,
        positions: "all",
      }),
    ),
  );
  const upper = new SegmentSessions(
    await SegmentModel.load(
      checkpoint,
      segmentSpec({ fromLayer: split, toLayer: layers, finalHead: true, positions: "all" }),
    ),
  );
  const policies = calibration.summary.policies;
  const perPolicy = policies.map(() => ({ local: 0, agree: 0 }));
  const exitPolicies = policies.map((policy) => calibratedExitPolicy(calibration, policy));
  const codecAgree = Object.fromEntries(CODEC_NAMES.map((codec) => [codec, 0])) as Record<CodecName, number>;
  let positions = 0;
  for (const window of ctx.windows) {
    lower.open("w");
    const step = await lower.forward("w", { ids: window });
    lower.release("w");
    const tokensBy: Partial<Record<CodecName, number[]>> = {};
    for (const codec of CODEC_NAMES) {
      const c = getCodec(codec);
      const hidden = c.decode(c.encode(step.hidden!, window.length, hiddenSize), window.length, hiddenSize);
      upper.open("w");
      tokensBy[codec] = (await upper.forward("w", { hidden, count: window.length })).exits[0].token;
      upper.release("w");
    }
    const full = tokensBy.fp32!;
    for (const codec of CODEC_NAMES)
      codecAgree[codec] += tokensBy[codec]!.filter((t, i) => t === full[i]).length;
    for (let p = 0; p < window.length; p++) {
      const signals = step.exits.map((e) => exitSignalAt(e, p));
      policies.forEach((policy, i) => {
        const exit = exitPolicies[i].decide(signals).exit;
        const token = exit ? exit.token : full[p];
        if (exit) perPolicy[i].local++;
        if (token === full[p]) perPolicy[i].agree++;
      });
    }
    positions += window.length;
  }
  await lower.model.release();
  await upper.model.release();
  return {
    positions,
    codecAgreement: Object.fromEntries(CODEC_NAMES.map((c) => [c, codecAgree[c] / positions])) as Record<
      CodecName,
      number
    >,
    policies: policies.map((p, i) => ({
      target: p.targetAgreement,
      metric: p.metric,
      escalated_share: 1 - perPolicy[i].local / positions,
      agreement: perPolicy[i].agree / positions,
    })),
  };
}
