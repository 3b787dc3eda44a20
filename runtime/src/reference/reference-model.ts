/**
 * A plain-TypeScript forward pass of the Llama family (and Mixtral's sparse MLP) with the
 * semantics of Hugging Face transformers, in fp32. It exists to check the ONNX graphs in
 * tests and as the "plain loops" baseline of the runtime benchmark — never to serve.
 */
import type { ModelConfig } from "../checkpoint/model-config.ts";
import type { LayerWeights, ModelWeights, WeightTensor } from "../checkpoint/model-weights.ts";
import { InvalidArgumentError } from "../errors.ts";

/** Keys and values per absolute layer number, [positions][kvHeads * headDim] flattened. */
export interface ReferenceKvCache {
  keys: Float32Array[][];
  values: Float32Array[][];
}

export type ReferenceInput = { ids: number[] } | { hidden: Float32Array; count: number };

export class ReferenceModel {
  private readonly inverseFrequency: Float32Array;

  constructor(
    readonly config: ModelConfig,
    readonly weights: ModelWeights,
  ) {
    const half = config.headDim / 2;
    // float32 like HF's inv_freq buffer.
    this.inverseFrequency = Float32Array.from(
      { length: half },
      (_, i) => 1 / Math.pow(config.ropeTheta, (2 * i) / config.headDim),
    );
  }

  newCache(): ReferenceKvCache {
    const layers = this.config.numLayers;
    return {
      keys: Array.from({ length: layers }, () => []),
      values: Array.from({ length: layers }, () => []),
    };
  }

  /**
   * Runs layers [from, to) on new positions appended after what `cache` holds for those
   * layers; returns the hidden state after each layer, [count, hidden] each.
   */
  forward(
    input: ReferenceInput,
    from: number,
    to: number,
    cache: ReferenceKvCache,
  ): { hiddenAfterLayer: Float32Array[] } {
    const { config } = this;
    const h = config.hiddenSize;
    if (!Number.isInteger(from) || !Number.isInteger(to) || from < 0 || to > config.numLayers || from >= to) {
      throw new InvalidArgumentError(
        "layers",
        `[${from}, ${to}) is not a layer range of a ${config.numLayers}-layer model`,
      );
    }
    let x: Float32Array;
    let count: number;
    if ("ids" in input) {
      if (from !== 0) throw new InvalidArgumentError("ids", "token ids enter at layer 0 only");
      count = input.ids.length;
      x = new Float32Array(count * h);
      input.ids.forEach((id, t) => {
        if (!Number.isInteger(id) || id < 0 || id >= config.vocabSize)
          throw new InvalidArgumentError(`ids[${t}]`, `out of range: ${id}`);
        x.set(this.weights.embedTokens.data.subarray(id * h, (id + 1) * h), t * h);
      });
    } else {
      count = input.count;
      if (input.hidden.length !== count * h)
        throw new InvalidArgumentError("hidden", `has ${input.hidden.length} values, expected ${count * h}`);
      x = input.hidden.slice();
    }
    const hiddenAfterLayer: Float32Array[] = [];
    for (let layer = from; layer < to; layer++) {
      x = this.layer(layer, x, count, cache);
      hiddenAfterLayer.push(x.slice());
    }
    return { hiddenAfterLayer };
  }

  /** Final norm + LM head: [count, hidden] → [count, vocab]. */
  head(hidden: Float32Array, count: number): Float32Array {
    const { hiddenSize: h, vocabSize: v } = this.config;
    const out = new Float32Array(count * v);
    for (let t = 0; t < count; t++) {
      const normed = rmsNorm(
        hidden.subarray(t * h, (t + 1) * h),
        this.weights.finalNorm.data,
        this.config.rmsNormEps,
      );
      out.set(matVec(this.weights.lmHead, normed), t * v);
    }
    return out;
  }

  /** Full-model logits at every position of `ids`, [ids.length, vocab]. */
  logits(ids: number[]): Float32Array {
    const { hiddenAfterLayer } = this.forward({ ids }, 0, this.config.numLayers, this.newCache());
    return this.head(hiddenAfterLayer[hiddenAfterLayer.length - 1], ids.length);
  }

  private layer(index: number, x: Float32Array, count: number, cache: ReferenceKvCache): Float32Array {
    const { config } = this;
    const w = this.weights.layers[index];
    const h = config.hiddenSize;
    const { numHeads, numKvHeads, headDim } = config;
    const group = numHeads / numKvHeads;
    const keys = cache.keys[index];
    const values = cache.values[index];
    const out = new Float32Array(count * h);
    const scale = 1 / Math.sqrt(headDim);

    for (let t = 0; t < count; t++) {
      const position = keys.length;
      const residual = x.subarray(t * h, (t + 1) * h);
      const normed = rmsNorm(residual, w.inputNorm.data, config.rmsNormEps);
      const q = addBias(matVec(w.qProj, normed), w.qBias);
      const k = addBias(matVec(w.kProj, normed), w.kBias);
      const v = addBias(matVec(w.vProj, normed), w.vBias);
      for (let head = 0; head < numHeads; head++) this.rotate(q, head * headDim, position);
      for (let head = 0; head < numKvHeads; head++) this.rotate(k, head * headDim, position);
      keys.push(k);
      values.push(v);

      const attention = new Float32Array(numHeads * headDim);
      const scores = new Float64Array(keys.length);
      for (let head = 0; head < numHeads; head++) {
        const kvOffset = Math.floor(head / group) * headDim;
        let max = -Infinity;
        for (let u = 0; u < keys.length; u++) {
          let dot = 0;
          const key = keys[u];
          for (let d = 0; d < headDim; d++) dot += q[head * headDim + d] * key[kvOffset + d];
          scores[u] = dot * scale;
          if (scores[u] > max) max = scores[u];
        }
        let sum = 0;
        for (let u = 0; u < keys.length; u++) {
          scores[u] = Math.exp(scores[u] - max);
          sum += scores[u];
        }
        for (let u = 0; u < keys.length; u++) {
          const weight = scores[u] / sum;
          const value = values[u];
          for (let d = 0; d < headDim; d++) attention[head * headDim + d] += weight * value[kvOffset + d];
        }
      }
      const afterAttention = matVec(w.oProj, attention);
      for (let i = 0; i < h; i++) afterAttention[i] += residual[i];

      const normed2 = rmsNorm(afterAttention, w.postAttentionNorm.data, config.rmsNormEps);
      const mlp = w.experts
        ? this.sparseMlp(w, normed2)
        : denseMlp(w.gateProj!, w.upProj!, w.downProj!, normed2);
      for (let i = 0; i < h; i++) out[t * h + i] = afterAttention[i] + mlp[i];
    }
    return out;
  }

  /** Mixtral: softmax over all experts, keep the top k, renormalise, mix their outputs. */
  private sparseMlp(w: LayerWeights, x: Float32Array): Float32Array {
    const routerLogits = matVec(w.router!, x);
    const max = Math.max(...routerLogits);
    const probs = Array.from(routerLogits, (l) => Math.exp(l - max));
    const total = probs.reduce((a, b) => a + b, 0);
    const ranked = probs.map((p, e) => ({ p: p / total, e })).sort((a, b) => b.p - a.p || a.e - b.e);
    const chosen = ranked.slice(0, this.config.numExpertsPerToken ?? 2);
    const norm = chosen.reduce((sum, c) => sum + c.p, 0);
    const out = new Float32Array(x.length);
    for (const { p, e } of chosen) {
      const expert = w.experts![e];
      const y = denseMlp(expert.gateProj, expert.upProj, expert.downProj, x);
      for (let i = 0; i < out.length; i++) out[i] += (p / norm) * y[i];
    }
    return out;
  }

  /** HF rotate_half RoPE on one head's slice, in place. */
  private rotate(vector: Float32Array, offset: number, position: number): void {
    const half = this.config.headDim / 2;
    for (let i = 0; i < half; i++) {
      const angle = Math.fround(position * this.inverseFrequency[i]);
      const cos = Math.cos(angle);
      const sin = Math.sin(angle);
      const a = vector[offset + i];
      const b = vector[offset + i + half];
      vector[offset + i] = a * cos - b * sin;
      vector[offset + i + half] = b * cos + a * sin;
    }
  }
}

function rmsNorm(x: Float32Array, weight: Float32Array, eps: number): Float32Array {
  let sumSquares = 0;
  for (let i = 0; i < x.length; i++) sumSquares += x[i] * x[i];
  const inverse = 1 / Math.sqrt(sumSquares / x.length + eps);
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = x[i] * inverse * weight[i];
  return out;
}

/** y = W x for a Hugging Face [out, in] weight: one dot product per output row. */
function matVec(weight: WeightTensor, x: Float32Array): Float32Array {
  const [rows, cols] = weight.shape;
  const data = weight.data;
  const out = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    let sum = 0;
    const offset = r * cols;
    for (let c = 0; c < cols; c++) sum += data[offset + c] * x[c];
    out[r] = sum;
  }
  return out;
}

function addBias(x: Float32Array, bias: WeightTensor | undefined): Float32Array {
  if (bias) for (let i = 0; i < x.length; i++) x[i] += bias.data[i];
  return x;
}

function denseMlp(gate: WeightTensor, up: WeightTensor, down: WeightTensor, x: Float32Array): Float32Array {
  const g = matVec(gate, x);
  const u = matVec(up, x);
  for (let i = 0; i < g.length; i++) g[i] = (g[i] / (1 + Math.exp(-g[i]))) * u[i];
  return matVec(down, g);
}
