/**
 * A learned confidence for an early exit: logistic regression of "this exit's token is the
 * full model's" on what the exits already report (probability, margin, entropy), its own
 * and the nearest earlier exit's, including whether the two agree, standardised, with
 * every pairwise product beside them. One signal thresholded alone (exit-policy.ts) throws
 * away what the others know: on the demo model the linear terms alone answered 4.3 points
 * more tokens at 99% agreement than the best single metric, the products another 1.5
 * (CALM, Schuster et al. 2022, trains such a classifier on the exit's state; the state
 * itself added nothing here beyond these features). Where the graph reports it, the KL
 * divergence of the exit's distribution from the earlier exit's joins them: a distribution
 * that stopped moving between two exits has settled (the feature CALM calls state
 * propagation, measured on distributions rather than states).
 * Fitted by calibration (calibration/logistic-regression.ts), applied by the policy.
 */
import type { ExitSignal } from "./exit-policy.ts";

/**
 * One exit's fitted model. The features (named in `features`, computed by
 * confidenceFeatures) are standardised, z = (x − mean) / scale, and expanded by
 * quadraticTerms; `weights` apply to that expansion in order.
 */
export interface ConfidenceModel {
  afterLayer: number;
  /** The earlier exit whose signals it reads too (absent: its own only). */
  previousLayer?: number;
  features: string[];
  mean: number[];
  scale: number[];
  weights: number[];
  bias: number;
}

const OWN_FEATURES = ["prob", "margin", "entropy", "log_margin", "log_one_minus_prob"];
const PREVIOUS_FEATURES = [
  "previous.prob",
  "previous.margin",
  "previous.entropy",
  "same_token",
  "same_token*margin",
  "same_token*previous.prob",
];

/** How far the distribution moved since the earlier exit (ExitSignal.klPrevious). */
const KL_FEATURES = ["kl_previous", "log_kl_previous"];

/**
 * The feature names of an exit's model: its own; with an earlier exit, that exit's too;
 * with the KL divergence between them (when the graphs report it), that as well.
 */
export function confidenceFeatureNames(withPrevious: boolean, withKl = false): string[] {
  if (!withPrevious) return [...OWN_FEATURES];
  return withKl
    ? [...OWN_FEATURES, ...PREVIOUS_FEATURES, ...KL_FEATURES]
    : [...OWN_FEATURES, ...PREVIOUS_FEATURES];
}

/** Whether `model` reads the KL divergence from its earlier exit (models fitted before it existed do not). */
export function readsKlPrevious(model: Pick<ConfidenceModel, "features">): boolean {
  return model.features.includes(KL_FEATURES[0]);
}

// Probabilities near 1 and margins near 0 carry most of the ranking; logs spread them.
const FLOOR = 1e-6;

/**
 * The features of `signal` (and of `previous`, the earlier exit, when the model reads one;
 * and `signal.klPrevious` with `withKl`, which must then be present).
 */
export function confidenceFeatures(signal: ExitSignal, previous?: ExitSignal, withKl = false): number[] {
  // One array, pushed to: this runs for every token the edge decides.
  const features = [
    signal.prob,
    signal.margin,
    signal.entropy,
    Math.log(Math.max(signal.margin, 0) + FLOOR),
    Math.log(Math.max(1 - signal.prob, 0) + FLOOR),
  ];
  if (!previous) return features;
  const same = signal.token === previous.token ? 1 : 0;
  features.push(
    previous.prob,
    previous.margin,
    previous.entropy,
    same,
    same * signal.margin,
    same * previous.prob,
  );
  if (!withKl) return features;
  const kl = Math.max(signal.klPrevious ?? NaN, 0);
  features.push(kl, Math.log(kl + FLOOR));
  return features;
}

/** Length of quadraticTerms' output for `count` features. */
export function quadraticTermCount(count: number): number {
  return count + (count * (count + 1)) / 2;
}

/** z itself, then z[i]·z[j] for every i ≤ j, row by row. */
export function quadraticTerms(z: number[]): number[] {
  const terms = [...z];
  for (let i = 0; i < z.length; i++) for (let j = i; j < z.length; j++) terms.push(z[i] * z[j]);
  return terms;
}

/** (x − mean) / scale, feature by feature. */
export function standardized(features: number[], mean: number[], scale: number[]): number[] {
  return features.map((x, i) => (x - mean[i]) / scale[i]);
}

/**
 * The model's log-odds that the exit's token is the full model's; −Infinity when the
 * earlier exit it reads is missing from `signals` (never confident on half the evidence).
 */
export function learnedConfidence(model: ConfidenceModel, signals: ExitSignal[]): number {
  const signal = signals.find((s) => s.afterLayer === model.afterLayer);
  if (!signal) return -Infinity;
  let previous: ExitSignal | undefined;
  if (model.previousLayer !== undefined) {
    previous = signals.find((s) => s.afterLayer === model.previousLayer);
    if (!previous) return -Infinity;
  }
  const withKl = readsKlPrevious(model);
  // The graph's KL is from its nearest earlier exit: it must be the one the model reads.
  if (withKl && (signal.klPrevious === undefined || signals.some((s) => between(s, previous, signal))))
    return -Infinity;
  // The weights over quadraticTerms(z), summed as the terms are formed: this runs for every
  // token the edge decides, and the expansion's array would be its main cost.
  const z = standardized(confidenceFeatures(signal, previous, withKl), model.mean, model.scale);
  const { weights } = model;
  let logit = model.bias;
  for (let i = 0; i < z.length; i++) logit += weights[i] * z[i];
  let term = z.length;
  for (let i = 0; i < z.length; i++)
    for (let j = i; j < z.length; j++) logit += weights[term++] * z[i] * z[j];
  return Number.isNaN(logit) ? -Infinity : logit;
}

const between = (s: ExitSignal, lower: ExitSignal | undefined, upper: ExitSignal) =>
  lower !== undefined && s.afterLayer > lower.afterLayer && s.afterLayer < upper.afterLayer;

/** `signals` with `learned` set at every exit that has a model (copies; the input is left as it is). */
export function withLearnedConfidence(signals: ExitSignal[], models: ConfidenceModel[]): ExitSignal[] {
  return signals.map((signal) => {
    const model = models.find((m) => m.afterLayer === signal.afterLayer);
    return model ? { ...signal, learned: learnedConfidence(model, signals) } : signal;
  });
}

/** The exit a model for `afterLayer` reads beside its own: the nearest earlier one of `exitLayers`. */
export function previousExitLayer(afterLayer: number, exitLayers: number[]): number | undefined {
  const earlier = exitLayers.filter((l) => l < afterLayer);
  return earlier.length > 0 ? Math.max(...earlier) : undefined;
}
