/**
 * Exit policies: given what an early exit reports for a position, answer here or defer
 * to the rest of the model. Pure functions of the exit statistics (no I/O), so they can
 * be chosen by calibration and tested by tables of cases.
 */
import { InvalidArgumentError } from "@tandem/common";
import { learnedConfidence, type ConfidenceModel } from "./confidence-model.ts";

/** What an exit head reports for one position (computed inside the graph). */
export interface ExitSignal {
  afterLayer: number;
  token: number;
  /** Probability of the top-1 token. */
  prob: number;
  /** Top-1 minus top-2 probability. */
  margin: number;
  /** Entropy of the exit's distribution, in nats. */
  entropy: number;
  /**
   * KL divergence, in nats, of this exit's distribution from the nearest earlier exit's
   * (computed in the graph; absent at a graph's first exit).
   */
  klPrevious?: number;
  /**
   * A calibrated confidence model's log-odds that `token` is the full model's: set by the
   * policy from its models (confidence-model.ts), never by the graph.
   */
  learned?: number;
}

/** The metrics a signal carries itself: what a configured (uncalibrated) threshold may use. */
export const CONFIDENCE_METRICS = ["prob", "margin", "entropy"] as const;
export type ConfidenceMetric = (typeof CONFIDENCE_METRICS)[number];
/** Those and the calibrated confidence model's, which only a calibration's thresholds use. */
export const EXIT_METRICS = [...CONFIDENCE_METRICS, "learned"] as const;
export type ExitMetric = (typeof EXIT_METRICS)[number];

export interface ExitThreshold {
  afterLayer: number;
  metric: ExitMetric;
  /** prob/margin/learned: confident when ≥ threshold; entropy: confident when ≤ threshold. */
  threshold: number;
}

export interface ExitDecision {
  /** The exit that answers, or undefined to defer to the deeper layers. */
  exit?: ExitSignal;
}

export interface ExitPolicy {
  decide(signals: ExitSignal[]): ExitDecision;
}

/** The exit with the most layers behind it (the best an edge can answer with), if any. */
export function deepestExit(signals: ExitSignal[]): ExitSignal | undefined {
  return signals.reduce<ExitSignal | undefined>(
    (best, s) => (!best || s.afterLayer > best.afterLayer ? s : best),
    undefined,
  );
}

export function isConfident(signal: ExitSignal, rule: ExitThreshold): boolean {
  switch (rule.metric) {
    case "prob":
      return signal.prob >= rule.threshold;
    case "margin":
      return signal.margin >= rule.threshold;
    case "entropy":
      return signal.entropy <= rule.threshold;
    case "learned":
      return (signal.learned ?? -Infinity) >= rule.threshold;
  }
}

/**
 * Answers at the earliest exit whose rule is met; exits without a rule never answer. A
 * `learned` rule reads the confidence model of its exit (from the same calibration).
 */
export class ThresholdExitPolicy implements ExitPolicy {
  constructor(
    private readonly rules: ExitThreshold[],
    private readonly confidence: ConfidenceModel[] = [],
  ) {
    for (const rule of rules) {
      if (!Number.isFinite(rule.threshold))
        throw new InvalidArgumentError("threshold", `must be finite, got ${rule.threshold}`);
      if (rule.metric === "learned" && !confidence.some((m) => m.afterLayer === rule.afterLayer))
        throw new InvalidArgumentError(
          "confidence",
          `the rule after layer ${rule.afterLayer} uses the learned metric, but no confidence model is given for that exit`,
        );
    }
  }

  /** The same metric and threshold at every exit (`learned` reads `confidence`'s models). */
  static uniform(
    exitLayers: number[],
    metric: ExitMetric,
    threshold: number,
    confidence: ConfidenceModel[] = [],
  ): ThresholdExitPolicy {
    return new ThresholdExitPolicy(
      exitLayers.map((afterLayer) => ({ afterLayer, metric, threshold })),
      confidence,
    );
  }

  decide(signals: ExitSignal[]): ExitDecision {
    const ordered = [...signals].sort((a, b) => a.afterLayer - b.afterLayer);
    for (const signal of ordered) {
      const rule = this.rules.find((r) => r.afterLayer === signal.afterLayer);
      if (!rule) continue;
      if (rule.metric !== "learned") {
        if (isConfident(signal, rule)) return { exit: signal };
        continue;
      }
      // Scored only where a learned rule is reached (the constructor checked its model exists).
      const model = this.confidence.find((m) => m.afterLayer === signal.afterLayer)!;
      const learned = learnedConfidence(model, signals);
      if (learned >= rule.threshold) return { exit: { ...signal, learned } };
    }
    return {};
  }
}

/** Never answers early: every token goes to the deeper layers (cloud-only quality). */
export class AlwaysDeferPolicy implements ExitPolicy {
  decide(): ExitDecision {
    return {};
  }
}

/** Always answers at the deepest available exit (edge-only mode). */
export class AlwaysExitPolicy implements ExitPolicy {
  decide(signals: ExitSignal[]): ExitDecision {
    return { exit: deepestExit(signals) };
  }
}

/**
 * Entropy Adaptive Decoding: the edge answers while the rolling mean entropy of its
 * deepest exit over the last `window` tokens stays at or below `threshold`, and defers
 * while the text is in a hard stretch. Stateful: one instance per session.
 */
export class RollingEntropyPolicy implements ExitPolicy {
  private readonly recent: number[] = [];

  constructor(
    private readonly threshold: number,
    private readonly window = 8,
  ) {
    if (!Number.isFinite(threshold) || threshold < 0)
      throw new InvalidArgumentError("threshold", `must be a finite entropy ≥ 0, got ${threshold}`);
    if (!Number.isInteger(window) || window < 1)
      throw new InvalidArgumentError("window", `must be a positive integer, got ${window}`);
  }

  decide(signals: ExitSignal[]): ExitDecision {
    const deepest = deepestExit(signals);
    if (!deepest) return {};
    this.recent.push(deepest.entropy);
    if (this.recent.length > this.window) this.recent.shift();
    const mean = this.recent.reduce((a, b) => a + b, 0) / this.recent.length;
    return mean <= this.threshold ? { exit: deepest } : {};
  }
}

/**
 * A budget: escalate about `targetRate` of tokens. The threshold on `metric` at the
 * deepest exit follows a feedback rule — loosened while too many tokens escalate,
 * tightened while too few — so the rate converges whatever the text. Stateful.
 */
export class BudgetExitPolicy implements ExitPolicy {
  private threshold: number;
  private escalated = 0;
  private decided = 0;

  constructor(
    private readonly targetRate: number,
    private readonly metric: ConfidenceMetric = "prob",
    initialThreshold?: number,
  ) {
    if (!(targetRate > 0 && targetRate < 1))
      throw new InvalidArgumentError("target_escalation_rate", `must be in (0, 1), got ${targetRate}`);
    this.threshold = initialThreshold ?? (metric === "entropy" ? 1 : 0.8);
  }

  decide(signals: ExitSignal[]): ExitDecision {
    const deepest = deepestExit(signals);
    if (!deepest) return {};
    const rule: ExitThreshold = {
      afterLayer: deepest.afterLayer,
      metric: this.metric,
      threshold: this.threshold,
    };
    const escalate = !isConfident(deepest, rule);
    this.decided++;
    if (escalate) this.escalated++;
    // Step towards the target: a sure token costs nothing, so move the threshold in the
    // direction that brings the observed rate to the target.
    const rate = this.escalated / this.decided;
    const step = 0.05 * Math.sign(rate - this.targetRate);
    this.threshold = this.metric === "entropy" ? this.threshold + step : this.threshold - step;
    return escalate ? {} : { exit: deepest };
  }

  get escalationRate(): number {
    return this.decided === 0 ? 0 : this.escalated / this.decided;
  }
}
