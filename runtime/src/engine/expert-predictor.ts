/**
 * Guesses which experts a layer will choose before it runs, so they can load meanwhile
 * (pre-gating, as EdgeMoE, Pre-gated MoE and ExpertFlow do): the next layer's router
 * applied, through that layer's post-attention norm, to the hidden state the current layer
 * hands on. Only the next layer's attention is skipped, and a residual stream changes little
 * in one attention block, so the guess is usually right; a wrong one costs a load, never a
 * different answer (the model still runs the experts its router chose).
 */
import type { Checkpoint } from "../checkpoint/model-weights.ts";
import { InternalError } from "@tandem/common";

interface LayerRouter {
  /** [numExperts, hidden], the post-attention RMSNorm's weight folded into its columns. */
  router: Float32Array;
}

export class RouterPredictor {
  private readonly routers = new Map<number, LayerRouter>();
  private readonly hidden: number;
  private readonly numExperts: number;
  private readonly k: number;
  private readonly eps: number;

  /** The routers of `layers`, copied out of the checkpoint (numExperts × hidden each). */
  constructor(checkpoint: Checkpoint, layers: readonly number[]) {
    const { config } = checkpoint;
    if (!config.numExperts) throw new InternalError("a router predictor needs an MoE model");
    this.hidden = config.hiddenSize;
    this.numExperts = config.numExperts;
    this.k = config.numExpertsPerToken ?? 2;
    this.eps = config.rmsNormEps;
    for (const layer of layers) {
      const weights = checkpoint.weights.layers[layer];
      if (!weights.router) throw new InternalError(`layer ${layer} has no router`);
      const router = Float32Array.from(weights.router.data);
      const norm = weights.postAttentionNorm.data;
      // Fold the norm's weight into the router: logits = router · (x̂ ⊙ w) = (router ⊙ w) · x̂.
      for (let e = 0; e < this.numExperts; e++)
        for (let d = 0; d < this.hidden; d++) router[e * this.hidden + d] *= norm[d];
      this.routers.set(layer, { router });
    }
  }

  /** Whether the predictor knows `layer`'s router. */
  covers(layer: number): boolean {
    return this.routers.has(layer);
  }

  /**
   * The experts `layer` will likely choose for the given rows of `hidden` ([rows, hidden]):
   * each row's top k by its router logits, most voted first (ties: higher summed logit).
   */
  predict(layer: number, hidden: Float32Array, rows: readonly number[]): number[] {
    const entry = this.routers.get(layer);
    if (!entry) return [];
    const { router } = entry;
    const h = this.hidden;
    const votes = new Float64Array(this.numExperts);
    const scores = new Float64Array(this.numExperts);
    const logits = new Float64Array(this.numExperts);
    for (const row of rows) {
      const base = row * h;
      let squares = 0;
      for (let d = 0; d < h; d++) squares += hidden[base + d] * hidden[base + d];
      const scale = 1 / Math.sqrt(squares / h + this.eps);
      for (let e = 0; e < this.numExperts; e++) {
        let sum = 0;
        const r = e * h;
        for (let d = 0; d < h; d++) sum += router[r + d] * hidden[base + d];
        logits[e] = sum * scale;
      }
      const order = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a]);
      for (const e of order.slice(0, this.k)) {
        votes[e]++;
        scores[e] += logits[e];
      }
    }
    return Array.from(votes.keys())
      .filter((e) => votes[e] > 0)
      .sort((a, b) => votes[b] - votes[a] || scores[b] - scores[a]);
  }
}
