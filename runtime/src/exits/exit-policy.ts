/**
 * Exit policies: given what an early exit reports for a position, answer here or defer
 * to the rest of the model. Pure functions of the exit statistics (no I/O), so they can
 * be chosen by calibration and tested by tables of cases.
 */
import { InvalidArgumentError } from "../errors.ts";

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
}

export type ConfidenceMetric = "prob" | "margin" | "entropy";

export interface ExitThreshold {
  afterLayer: number;
  metric: ConfidenceMetric;
  /** prob/margin: confident when ≥ threshold; entropy: confident when ≤ threshold. */
  threshold: number;
}

export interface ExitDecision {
  /** The exit that answers, or undefined to defer to the deeper layers. */
  exit?: ExitSignal;
}

export interface ExitPolicy {
  decide(signals: ExitSignal[]): ExitDecision;
}

export function isConfident(signal: ExitSignal, rule: ExitThreshold): boolean {
  switch (rule.metric) {
    case "prob":
      return signal.prob >= rule.threshold;
    case "margin":
      return signal.margin >= rule.threshold;
    case "entropy":
      return signal.entropy <= rule.threshold;
  }
}

/** Answers at the earliest exit whose rule is met; exits without a rule never answer. */
export class ThresholdExitPolicy implements ExitPolicy {
  constructor(private readonly rules: ExitThreshold[]) {
    for (const rule of rules) {
      if (!Number.isFinite(rule.threshold))
        throw new InvalidArgumentError("threshold", `must be finite, got ${rule.threshold}`);
    }
  }

  decide(signals: ExitSignal[]): ExitDecision {
    const ordered = [...signals].sort((a, b) => a.afterLayer - b.afterLayer);
    for (const signal of ordered) {
      const rule = this.rules.find((r) => r.afterLayer === signal.afterLayer);
      if (rule && isConfident(signal, rule)) return { exit: signal };
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
    const deepest = signals.reduce<ExitSignal | undefined>(
      (best, s) => (!best || s.afterLayer > best.afterLayer ? s : best),
      undefined,
    );
    return { exit: deepest };
  }
}
