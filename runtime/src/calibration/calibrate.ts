/**
 * Calibration of early exits on a user's text, run once per checkpoint and split:
 *   1. run the full model over windows of the text, recording every exit's signals, the
 *      full model's greedy token, and the hidden states at the exits and the last layer;
 *   2. per exit, fit a ridge map from its hidden state to the last layer's (fit split);
 *   3. keep the map where it agrees with the full model more often than the plain exit
 *      (tuning split);
 *   4. per exit, fit a confidence model (logistic regression on the exits' signals) to
 *      whether the chosen head's token is the full model's (fit split);
 *   5. per target agreement, choose the metric (a signal's own, or the learned confidence)
 *      and thresholds that answer the most tokens at the exits (tuning split), and measure
 *      them on text neither step saw (test split).
 * Windows are assigned round-robin: 3 of every 5 to fit, 1 to tune, 1 to test.
 */
import type { Checkpoint } from "../checkpoint/model-weights.ts";
import { SegmentModel } from "../engine/segment-model.ts";
import { exitSignalAt, SegmentSessions, type SegmentStep } from "../engine/segment-sessions.ts";
import { InvalidArgumentError, type ProgressListener } from "@tandem/common";
import { CONFIDENCE_METRICS, EXIT_METRICS, type ExitMetric } from "../exits/exit-policy.ts";
import { previousExitLayer, withLearnedConfidence } from "../exits/confidence-model.ts";
import { type ExitHeadSpec, segmentSpec } from "../graph/segment-spec.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";
import {
  CALIBRATION_VERSION,
  type CalibratedPolicy,
  type Calibration,
  type CurvePoint,
  type ExitHeadChoice,
} from "./calibration-file.ts";
import { fitConfidenceModel } from "./fit-confidence-model.ts";
import { RidgeAccumulator } from "./ridge-regression.ts";
import { evaluatePolicy, searchThresholds, type PositionRecord } from "./threshold-search.ts";

export interface CalibrateOptions {
  /** Layers on the edge; exits must lie in [1, split]. */
  split: number;
  exitLayers: number[];
  text: string;
  /** Target agreements to choose thresholds for. @default [0.99, 0.97, 0.95] */
  targets?: number[];
  /** Tokens per window of text (one forward pass each). @default 128 */
  windowTokens?: number;
  /** Use at most this many tokens of the text. @default 32768 */
  maxTokens?: number;
  /** Relative ridge strength. @default 1e-3 */
  ridge?: number;
  threads?: number;
  cacheDir?: string;
  /** Called as the work advances: phase, units done, note. */
  onProgress?: ProgressListener;
}

export const DEFAULT_TARGETS = [0.99, 0.97, 0.95];
const CURVE_TARGETS = [0.9, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.985, 0.99, 0.995, 0.999];
const MIN_WINDOWS = 5;

type SplitName = "fit" | "tune" | "test";
const splitOf = (window: number): SplitName => (window % 5 < 3 ? "fit" : window % 5 === 3 ? "tune" : "test");

export async function calibrate(
  checkpoint: Checkpoint,
  tokenizer: Tokenizer,
  options: CalibrateOptions,
): Promise<Calibration> {
  const { config } = checkpoint;
  const layers = config.numLayers;
  const progress = options.onProgress ?? (() => undefined);
  const windowTokens = options.windowTokens ?? 128;
  const ridge = options.ridge ?? 1e-3;
  const targets = options.targets ?? DEFAULT_TARGETS;
  if (!Number.isInteger(options.split) || options.split < 1 || options.split >= layers) {
    throw new InvalidArgumentError("split", `must be an integer in [1, ${layers - 1}], got ${options.split}`);
  }
  if (options.exitLayers.length === 0)
    throw new InvalidArgumentError("exitLayers", "name at least one exit layer");
  for (const layer of options.exitLayers) {
    if (!Number.isInteger(layer) || layer < 1 || layer > options.split) {
      throw new InvalidArgumentError(
        "exitLayers",
        `${layer} is outside [1, ${options.split}] (exits sit on the edge, at or before the split)`,
      );
    }
  }
  for (const target of targets) {
    if (!(target > 0 && target <= 1))
      throw new InvalidArgumentError("targets", `agreement targets lie in (0, 1], got ${target}`);
  }
  const exitLayers = [...new Set(options.exitLayers)].sort((a, b) => a - b);

  const ids = tokenizer.encode(options.text).slice(0, options.maxTokens ?? 32768);
  const windowCount = Math.floor(ids.length / windowTokens);
  const needed = Math.max(
    MIN_WINDOWS * windowTokens,
    Math.ceil(((config.hiddenSize + 1) * 5) / 3 / windowTokens) * windowTokens,
  );
  if (ids.length < needed) {
    throw new InvalidArgumentError(
      "text",
      `has ${ids.length} tokens; calibration needs at least ${needed} (${Math.ceil(needed / windowTokens)} windows of ${windowTokens})`,
    );
  }
  progress({
    phase: "full model",
    done: 0,
    total: windowCount,
    note: `${ids.length} tokens in windows of ${windowTokens}; exits after ${exitLayers.join(", ")} of ${layers} layers`,
  });
  const windows = Array.from({ length: windowCount }, (_, w) =>
    ids.slice(w * windowTokens, (w + 1) * windowTokens),
  );

  // Pass 1: the full model with plain exits and hidden taps.
  const full = await SegmentModel.load(
    checkpoint,
    segmentSpec({
      fromLayer: 0,
      toLayer: layers,
      exits: exitLayers.map((afterLayer) => ({ afterLayer })),
      finalHead: true,
      hiddenTaps: [...exitLayers, layers],
      positions: "all",
    }),
    options,
  );
  const accumulators = new Map(exitLayers.map((layer) => [layer, new RidgeAccumulator(config.hiddenSize)]));
  let expertActivations: number[] | undefined;
  const plain: Record<SplitName, PositionRecord[]> = { fit: [], tune: [], test: [] };
  try {
    const sessions = new SegmentSessions(full);
    for (const [w, window] of windows.entries()) {
      sessions.open("calibration");
      const step = await sessions.forward("calibration", { ids: window });
      sessions.release("calibration");
      const finalExit = step.exits[step.exits.length - 1];
      plain[splitOf(w)].push(...records(step, exitLayers, finalExit.token));
      if (splitOf(w) === "fit") {
        // On unit-RMS states (the final norm discards scale), fit the residual
        // last − exit: the ridge then shrinks the map towards the identity, i.e. towards
        // the plain exit, where data is scarce.
        const last = unitRms(step.taps.get(layers)!, config.hiddenSize, config.rmsNormEps);
        for (const layer of exitLayers) {
          const hidden = unitRms(step.taps.get(layer)!, config.hiddenSize, config.rmsNormEps);
          const residual = Float32Array.from(last, (v, i) => v - hidden[i]);
          accumulators.get(layer)!.add(hidden, residual, window.length);
        }
      }
      if ((w + 1) % 50 === 0 || w + 1 === windows.length)
        progress({ phase: "full model", done: w + 1, total: windows.length });
    }
    // MoE: how often the routers chose each expert over the text, for per-expert formats.
    expertActivations = full.takeExpertCounts();
  } finally {
    await full.release();
  }

  const linearMaps = new Map<number, { weight: Float32Array; bias: Float32Array }>();
  for (const [i, layer] of exitLayers.entries()) {
    progress({
      phase: "fit exit maps",
      done: i,
      total: exitLayers.length,
      note: `the map after layer ${layer}, on ${accumulators.get(layer)!.rows} positions`,
    });
    const map = accumulators.get(layer)!.solve(ridge);
    for (let i = 0; i < config.hiddenSize; i++) map.weight[i * config.hiddenSize + i] += 1;
    linearMaps.set(layer, map);
  }

  // Pass 2: the exits with linear maps, on every window: the held-out ones to choose and
  // measure, the fit ones for the confidence models of exits that keep their map.
  const finalOf = (split: SplitName) => plain[split].map((r) => r.finalToken);
  const finals = { fit: finalOf("fit"), tune: finalOf("tune"), test: finalOf("test") };
  const exitRecords = (heads: ExitHeadSpec[], phase: string) =>
    runExits(checkpoint, heads, windows, finals, options, progress, phase);
  const linear = await exitRecords(
    exitLayers.map((afterLayer) => ({ afterLayer, linearMap: linearMaps.get(afterLayer) })),
    "exits with maps",
  );

  // A map "beats" the plain exit when, alone at that exit, it answers more tokens at the
  // strictest target on the tuning split (what the edge is for); a better top-1 agreement
  // with worse confidence estimates would not help.
  const strictest = Math.max(...targets);
  const edgeShareAlone = (records: PositionRecord[], layer: number) =>
    Math.max(
      ...CONFIDENCE_METRICS.map(
        (metric) => searchThresholds(records, [layer], metric, strictest).outcome.edgeShare,
      ),
    );
  const heads: ExitHeadChoice[] = exitLayers.map((layer, i) => {
    const plainShare = edgeShareAlone(plain.tune, layer);
    const linearShare = edgeShareAlone(linear.tune, layer);
    const choice: ExitHeadChoice = {
      afterLayer: layer,
      head: linearShare > plainShare ? "linear" : "plain",
      heldOutAgreement: { plain: agreementAt(plain.test, layer), linear: agreementAt(linear.test, layer) },
      tuneEdgeShare: { plain: plainShare, linear: linearShare },
    };
    progress({
      phase: "choose heads",
      done: i + 1,
      total: exitLayers.length,
      note:
        `exit after ${layer}: top-1 agreement plain ${pct(choice.heldOutAgreement.plain)}, linear ${pct(choice.heldOutAgreement.linear)}; ` +
        `edge share alone at ${pct(strictest)}: plain ${pct(plainShare)}, linear ${pct(linearShare)} → ${choice.head}`,
    });
    return choice;
  });
  for (const head of heads) if (head.head === "plain") linearMaps.delete(head.afterLayer);
  // Each exit's signals from its chosen head. An exit's KL divergence compares it with the
  // exit before it as the graph runs them, so heads that mix plain and linear need a pass
  // of their own (pass 3); otherwise one pass already ran them all.
  const mixed = new Set(heads.map((h) => h.head)).size > 1;
  const chosen = mixed
    ? await exitRecords(
        heads.map((h) => ({ afterLayer: h.afterLayer, linearMap: linearMaps.get(h.afterLayer) })),
        "exits as chosen",
      )
    : heads[0].head === "linear"
      ? linear
      : plain;
  // The maps were fitted on the fit split, so there their exits look a little better than
  // on text they never saw; the thresholds, chosen on the tuning split, absorb that level.
  const fitRecords = chosen.fit;
  const confidence = exitLayers.map((layer, i) => {
    const previousLayer = previousExitLayer(layer, exitLayers);
    const { model, logLoss, iterations } = fitConfidenceModel(fitRecords, layer, previousLayer);
    progress({
      phase: "fit confidence models",
      done: i + 1,
      total: exitLayers.length,
      note: `exit after ${layer}${previousLayer === undefined ? "" : ` (reading the exit after ${previousLayer})`}: log-loss ${logLoss.toFixed(3)} on ${model.fitPositions} positions, ${iterations} Newton steps`,
    });
    return model;
  });
  const scored = (records: PositionRecord[]) =>
    records.map((r) => ({ ...r, exits: withLearnedConfidence(r.exits, confidence) }));
  const calibrated = { tune: scored(chosen.tune), test: scored(chosen.test) };

  const choose = (
    sets: { tune: PositionRecord[]; test: PositionRecord[] },
    target: number,
    metrics: readonly ExitMetric[],
  ): CalibratedPolicy => {
    let best: CalibratedPolicy | undefined;
    for (const metric of metrics) {
      const { rules, outcome } = searchThresholds(sets.tune, exitLayers, metric, target);
      if (!best || outcome.edgeShare > best.tune.edgeShare) {
        const test = evaluatePolicy(sets.test, rules);
        best = {
          targetAgreement: target,
          metric,
          thresholds: rules,
          tune: { edgeShare: outcome.edgeShare, agreement: outcome.agreement },
          test,
        };
      }
    }
    return best!;
  };
  const policies = targets.map((t) => choose(calibrated, t, EXIT_METRICS));
  const plainPolicies = targets.map((t) =>
    choose({ tune: plain.tune, test: plain.test }, t, CONFIDENCE_METRICS),
  );
  for (const [i, p] of policies.entries()) {
    progress({
      phase: "choose thresholds",
      done: i + 1,
      total: policies.length,
      note: `target ${pct(p.targetAgreement)}: ${p.metric} thresholds, edge share ${pct(p.test.edgeShare)} at agreement ${pct(p.test.agreement)} (test split)`,
    });
  }

  // The curve: each exit alone and all exits together, plain and calibrated heads, every
  // metric (the learned one with the calibrated heads, whose signals it was fitted on).
  const exitSets = exitLayers.length > 1 ? [...exitLayers.map((l) => [l]), exitLayers] : [exitLayers];
  const curve: CurvePoint[] = [];
  for (const [heads, sets] of [
    ["plain", { tune: plain.tune, test: plain.test }],
    ["calibrated", calibrated],
  ] as const) {
    for (const exits of exitSets) {
      for (const metric of heads === "plain" ? CONFIDENCE_METRICS : EXIT_METRICS) {
        for (const target of CURVE_TARGETS) {
          const { rules } = searchThresholds(sets.tune, exits, metric, target);
          const outcome = evaluatePolicy(sets.test, rules);
          curve.push({
            heads,
            exits,
            metric,
            targetAgreement: target,
            edgeShare: outcome.edgeShare,
            agreement: outcome.agreement,
          });
        }
      }
    }
  }

  return {
    summary: {
      version: CALIBRATION_VERSION,
      model: {
        weightsHash: checkpoint.weightsHash,
        ...(checkpoint.exitAdaptersHash && { exitAdaptersHash: checkpoint.exitAdaptersHash }),
        numLayers: layers,
        hiddenSize: config.hiddenSize,
      },
      split: options.split,
      exitLayers,
      heads,
      policies,
      plainPolicies,
      confidence,
      curve,
      text: {
        tokens: windowCount * windowTokens,
        windowTokens,
        fitPositions: plain.fit.length,
        tunePositions: plain.tune.length,
        testPositions: plain.test.length,
      },
      ridge,
      ...(expertActivations && { expertActivations }),
    },
    linearMaps,
  };
}

/** Each row divided by its root mean square (RMSNorm without a learned scale). */
function unitRms(rows: Float32Array, width: number, eps: number): Float32Array {
  const out = new Float32Array(rows.length);
  for (let r = 0; r < rows.length / width; r++) {
    let sum = 0;
    for (let i = 0; i < width; i++) sum += rows[r * width + i] ** 2;
    const inverse = 1 / Math.sqrt(sum / width + eps);
    for (let i = 0; i < width; i++) out[r * width + i] = rows[r * width + i] * inverse;
  }
  return out;
}

/**
 * The edge's exits (`heads`) run over every window: each split's records, labelled by the
 * full model's tokens (`finals`, from pass 1, in window order per split).
 */
async function runExits(
  checkpoint: Checkpoint,
  heads: ExitHeadSpec[],
  windows: number[][],
  finals: Record<SplitName, number[]>,
  options: CalibrateOptions,
  progress: ProgressListener,
  phase: string,
): Promise<Record<SplitName, PositionRecord[]>> {
  const exitLayers = heads.map((h) => h.afterLayer);
  const model = await SegmentModel.load(
    checkpoint,
    segmentSpec({ fromLayer: 0, toLayer: exitLayers[exitLayers.length - 1], exits: heads, positions: "all" }),
    options,
  );
  const out: Record<SplitName, PositionRecord[]> = { fit: [], tune: [], test: [] };
  try {
    const sessions = new SegmentSessions(model);
    for (const [w, window] of windows.entries()) {
      const split = splitOf(w);
      sessions.open("calibration");
      const step = await sessions.forward("calibration", { ids: window });
      sessions.release("calibration");
      const offset = out[split].length;
      out[split].push(...records(step, exitLayers, finals[split].slice(offset, offset + window.length)));
      if ((w + 1) % 50 === 0 || w + 1 === windows.length)
        progress({ phase, done: w + 1, total: windows.length });
    }
  } finally {
    await model.release();
  }
  return out;
}

function records(step: SegmentStep, exitLayers: number[], finalTokens: number[]): PositionRecord[] {
  return finalTokens.map((finalToken, p) => ({
    finalToken,
    exits: exitLayers.map((layer) =>
      exitSignalAt(
        step.exits.find((x) => x.afterLayer === layer)!,
        p,
      ),
    ),
  }));
}

function agreementAt(records: PositionRecord[], layer: number): number {
  let agree = 0;
  for (const r of records) if (r.exits.find((e) => e.afterLayer === layer)!.token === r.finalToken) agree++;
  return agree / Math.max(1, records.length);
}

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
