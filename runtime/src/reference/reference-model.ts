/**
 * A plain-TypeScript forward pass of the Llama family (llama, mistral, qwen2, qwen3) and Mixtral
 * with the semantics of Hugging Face transformers, in fp32. It checks the ONNX graphs in
 * tests and is the "plain loops" baseline of the runtime benchmark — it never serves.
 *
 * A forward runs a range of layers [from, to) over a chunk of new positions, so it can play
 * an edge segment (embedding + lower layers) or a cloud segment (upper layers, fed hidden
 * states) with a KV cache that holds only the layers the segment runs.
 */
import type { ModelConfig } from "../checkpoint/model-config.ts";
import type { LayerWeights, ModelWeights, WeightTensor } from "../checkpoint/model-weights.ts";
import { InvalidArgumentError } from "@tandem/common";
import { linear, rmsNormRows, RotaryEmbedding, siluMultiply } from "./kernels.ts";
import { ReferenceKvCache } from "./reference-kv-cache.ts";

/** Token ids (only into layer 0: embedding lookup) or hidden states [count, hidden] row-major. */
export type ReferenceInput = { ids: readonly number[] } | { hidden: Float32Array; count: number };

export interface ReferenceForwardResult {
  /** `hiddenAfterLayer[l - from]`: the residual stream after layer l, [count, hidden]. */
  hiddenAfterLayer: Float32Array[];
}

/** The weights of an attention half: a decoder layer's, or an attending exit adapter's. */
type AttentionHalfWeights = Pick<LayerWeights, "inputNorm" | "qProj" | "kProj" | "vProj" | "oProj"> &
  Partial<Pick<LayerWeights, "qBias" | "kBias" | "vBias" | "qNorm" | "kNorm">>;

/** Buffers reused across forwards; grown (never shrunk) to the largest chunk seen. */
interface Scratch {
  tokens: number;
  embedded: Float32Array; // [n, hidden]
  normed: Float32Array; // [n, hidden]
  q: Float32Array; // [n, heads·headDim]
  attention: Float32Array; // [n, heads·headDim]
  projected: Float32Array; // [n, hidden]: o_proj, then the MLP's output
  gate: Float32Array; // [n, intermediate]
  up: Float32Array; // [n, intermediate]
  // Mixtral only.
  routerLogits: Float32Array; // [n, experts]
  chosenExperts: Int32Array; // [n, k]
  chosenWeights: Float64Array; // [n, k]
  expertRows: Int32Array; // [n]: the tokens routed to the expert being run
  expertWeights: Float64Array; // [n]
  expertInput: Float32Array; // [n, hidden]
  expertOutput: Float32Array; // [n, hidden]
  // Attention.
  scores: Float64Array; // [positions]
  accumulator: Float64Array; // [headDim]
}

export class ReferenceModel {
  readonly config: ModelConfig;
  readonly weights: ModelWeights;
  private readonly rotary: RotaryEmbedding;
  private readonly qDim: number;
  private readonly kvDim: number;
  private readonly expertsPerToken: number;
  private scratch: Scratch;

  /** Throws InvalidArgumentError when the config is inconsistent or a weight's size does not fit it. */
  constructor(config: ModelConfig, weights: ModelWeights) {
    checkConfig(config);
    checkWeights(config, weights);
    this.config = config;
    this.weights = weights;
    this.qDim = config.numHeads * config.headDim;
    this.kvDim = config.numKvHeads * config.headDim;
    this.expertsPerToken = config.numExpertsPerToken ?? 0;
    this.rotary = new RotaryEmbedding(config.headDim, config.ropeTheta, config.ropeScaling);
    this.scratch = this.allocateScratch(0, 0);
  }

  /** An empty cache for every layer. */
  newCache(): ReferenceKvCache {
    return new ReferenceKvCache(this.config.numLayers, this.kvDim);
  }

  /**
   * Runs layers [from, to) on `count` new positions, `cache.length(from)` onwards, appending
   * their keys and values to `cache` for those layers. Every layer in the range must hold the
   * same number of positions; the cache's other layers are neither read nor written.
   * `input.hidden` is not modified.
   */
  forward(input: ReferenceInput, from: number, to: number, cache: ReferenceKvCache): ReferenceForwardResult {
    const { config } = this;
    const h = config.hiddenSize;
    if (!Number.isInteger(from) || !Number.isInteger(to) || from < 0 || to > config.numLayers || from >= to)
      throw new InvalidArgumentError(
        "layers",
        `[${from}, ${to}) is not a non-empty layer range of a ${config.numLayers}-layer model`,
      );
    if (
      !(cache instanceof ReferenceKvCache) ||
      cache.numLayers !== config.numLayers ||
      cache.kvDim !== this.kvDim
    )
      throw new InvalidArgumentError("cache", "was not made by newCache() of a model of this shape");
    const base = cache.length(from);
    for (let l = from + 1; l < to; l++)
      if (cache.length(l) !== base)
        throw new InvalidArgumentError(
          "cache",
          `layer ${from} holds ${base} positions but layer ${l} holds ${cache.length(l)}`,
        );

    let count: number;
    let x: Float32Array;
    if ("ids" in input) {
      if (from !== 0)
        throw new InvalidArgumentError("ids", `token ids enter at layer 0, not ${from}; pass hidden states`);
      const ids = input.ids;
      count = ids.length;
      for (let t = 0; t < count; t++) {
        const id = ids[t];
        if (!Number.isInteger(id) || id < 0 || id >= config.vocabSize)
          throw new InvalidArgumentError(`ids[${t}]`, `${id} is not a token id below ${config.vocabSize}`);
      }
      this.reserve(count, base + count);
      x = this.scratch.embedded;
      const table = this.weights.embedTokens.data;
      for (let t = 0; t < count; t++) x.set(table.subarray(ids[t] * h, (ids[t] + 1) * h), t * h);
    } else {
      count = input.count;
      if (!Number.isInteger(count) || count < 0)
        throw new InvalidArgumentError("count", `must be a non-negative integer, got ${count}`);
      if (!(input.hidden instanceof Float32Array) || input.hidden.length !== count * h)
        throw new InvalidArgumentError(
          "hidden",
          `must be a Float32Array of count·hidden = ${count}·${h} values, got ${input.hidden?.length}`,
        );
      this.reserve(count, base + count);
      x = input.hidden;
    }

    const hiddenAfterLayer: Float32Array[] = [];
    for (let layer = from; layer < to; layer++) {
      x = this.layer(layer, x, count, base, cache);
      hiddenAfterLayer.push(x);
    }
    return { hiddenAfterLayer };
  }

  /** Final norm and LM head: hidden states [count, hidden] → logits [count, vocab]. */
  head(hidden: Float32Array, count: number): Float32Array {
    const { hiddenSize: h, vocabSize: vocab, rmsNormEps } = this.config;
    if (!Number.isInteger(count) || count < 0)
      throw new InvalidArgumentError("count", `must be a non-negative integer, got ${count}`);
    if (!(hidden instanceof Float32Array) || hidden.length !== count * h)
      throw new InvalidArgumentError(
        "hidden",
        `must be a Float32Array of count·hidden = ${count}·${h} values, got ${hidden?.length}`,
      );
    this.reserve(count, 0);
    const { normed } = this.scratch;
    rmsNormRows(hidden, count, h, this.weights.finalNorm.data, rmsNormEps, normed);
    const logits = new Float32Array(count * vocab);
    linear(normed, count, this.weights.lmHead.data, h, vocab, logits);
    return logits;
  }

  /**
   * The exit after `afterLayer` layers: its adapter where the model has one
   * (h + down(silu(gate(n)) · up(n)), n = RMSNorm(h)), then the final norm and LM head.
   * hidden [count, hidden] → logits [count, vocab].
   *
   * An adapter that attends runs its attention half first, over the positions it has seen:
   * `exitCache` (from newCache()) holds them under the exit's layer number, and the
   * `count` positions given are appended there, `exitCache.length(afterLayer)` onwards.
   */
  exitHead(
    hidden: Float32Array,
    count: number,
    afterLayer: number,
    exitCache?: ReferenceKvCache,
  ): Float32Array {
    const adapter = this.weights.exitAdapters?.get(afterLayer);
    if (!adapter) return this.head(hidden, count);
    const { hiddenSize: h, rmsNormEps } = this.config;
    if (!(hidden instanceof Float32Array) || hidden.length !== count * h)
      throw new InvalidArgumentError(
        "hidden",
        `must be a Float32Array of count·hidden = ${count}·${h} values, got ${hidden?.length}`,
      );
    let x = hidden;
    if (adapter.attention) {
      if (!(exitCache instanceof ReferenceKvCache) || exitCache.numLayers !== this.config.numLayers)
        throw new InvalidArgumentError(
          "exitCache",
          `the adapter of exit ${afterLayer} attends: pass a cache made by newCache()`,
        );
      const base = exitCache.length(afterLayer);
      this.reserve(count, base + count);
      x = this.attentionHalf(adapter.attention, x, count, base, exitCache, afterLayer);
    }
    const width = adapter.gateProj.shape[0];
    const normed = new Float32Array(count * h);
    rmsNormRows(x, count, h, adapter.norm.data, rmsNormEps, normed);
    const gate = new Float32Array(count * width);
    const up = new Float32Array(count * width);
    linear(normed, count, adapter.gateProj.data, h, width, gate);
    linear(normed, count, adapter.upProj.data, h, width, up);
    siluMultiply(gate, up, count * width);
    const adapted = new Float32Array(count * h);
    linear(gate, count, adapter.downProj.data, width, h, adapted);
    for (let i = 0; i < adapted.length; i++) adapted[i] += x[i];
    return this.head(adapted, count);
  }

  /** Full-model logits at every position of `ids`, [ids.length, vocab], from an empty cache. */
  logits(ids: readonly number[]): Float32Array {
    const { hiddenAfterLayer } = this.forward({ ids }, 0, this.config.numLayers, this.newCache());
    return this.head(hiddenAfterLayer[hiddenAfterLayer.length - 1], ids.length);
  }

  /** One decoder layer on positions base .. base+n-1; returns a new [n, hidden] array. */
  private layer(
    index: number,
    x: Float32Array,
    n: number,
    base: number,
    cache: ReferenceKvCache,
  ): Float32Array {
    const { hiddenSize: h, rmsNormEps } = this.config;
    const w = this.weights.layers[index];
    const { normed, projected } = this.scratch;
    const out = this.attentionHalf(w, x, n, base, cache, index);
    rmsNormRows(out, n, h, w.postAttentionNorm.data, rmsNormEps, normed);
    if (w.experts) this.sparseMlp(w, normed, n, projected);
    else this.denseMlp(w.gateProj!.data, w.upProj!.data, w.downProj!.data, normed, n, projected);
    for (let i = 0; i < n * h; i++) out[i] += projected[i];
    return out;
  }

  /**
   * x + o_proj(attention(RMSNorm(x))) on positions base .. base+n-1, their keys and values
   * appended to `cache` under `cacheLayer` (a layer's number, or an attending exit's).
   * Returns a new [n, hidden] array.
   */
  private attentionHalf(
    w: AttentionHalfWeights,
    x: Float32Array,
    n: number,
    base: number,
    cache: ReferenceKvCache,
    cacheLayer: number,
  ): Float32Array {
    const { hiddenSize: h, numHeads, numKvHeads, rmsNormEps } = this.config;
    const { qDim, kvDim, scratch } = this;
    const { normed, q, attention, projected } = scratch;

    rmsNormRows(x, n, h, w.inputNorm.data, rmsNormEps, normed);
    linear(normed, n, w.qProj.data, h, qDim, q, w.qBias?.data);
    const { keys, values } = cache.extend(cacheLayer, base + n);
    const newKeys = keys.subarray(base * kvDim, (base + n) * kvDim);
    const newValues = values.subarray(base * kvDim, (base + n) * kvDim);
    linear(normed, n, w.kProj.data, h, kvDim, newKeys, w.kBias?.data);
    linear(normed, n, w.vProj.data, h, kvDim, newValues, w.vBias?.data);
    if (w.qNorm && w.kNorm) {
      // Qwen3: every head's query and key normalised over head_dim, before rotary.
      const { headDim } = this.config;
      rmsNormRows(q, n * numHeads, headDim, w.qNorm.data, rmsNormEps, q);
      rmsNormRows(newKeys, n * numKvHeads, headDim, w.kNorm.data, rmsNormEps, newKeys);
    }
    for (let t = 0; t < n; t++) {
      this.rotary.apply(q, t * qDim, numHeads, base + t);
      this.rotary.apply(keys, (base + t) * kvDim, numKvHeads, base + t);
    }
    this.attend(q, keys, values, n, base, attention);
    linear(attention, n, w.oProj.data, qDim, h, projected);

    const out = new Float32Array(n * h);
    for (let i = 0; i < n * h; i++) out[i] = x[i] + projected[i];
    return out;
  }

  /**
   * Causal grouped-query attention of n queries at positions base.. over the cached keys
   * 0..position: query head hd reads kv head floor(hd / (numHeads / numKvHeads)).
   */
  private attend(
    q: Float32Array,
    keys: Float32Array,
    values: Float32Array,
    n: number,
    base: number,
    out: Float32Array,
  ): void {
    const { numHeads, numKvHeads, headDim } = this.config;
    const { qDim, kvDim } = this;
    const { scores, accumulator } = this.scratch;
    const group = numHeads / numKvHeads;
    const scale = 1 / Math.sqrt(headDim);
    const even = headDim & ~1;
    for (let t = 0; t < n; t++) {
      const last = base + t; // attends to positions 0..last
      for (let head = 0; head < numHeads; head++) {
        const qo = t * qDim + head * headDim;
        const kvo = Math.floor(head / group) * headDim;
        let max = -Infinity;
        for (let u = 0; u <= last; u++) {
          const ko = u * kvDim + kvo;
          let s0 = 0,
            s1 = 0;
          for (let d = 0; d < even; d += 2) {
            s0 += q[qo + d] * keys[ko + d];
            s1 += q[qo + d + 1] * keys[ko + d + 1];
          }
          if (even < headDim) s0 += q[qo + even] * keys[ko + even];
          const score = (s0 + s1) * scale;
          scores[u] = score;
          if (score > max) max = score;
        }
        let sum = 0;
        for (let u = 0; u <= last; u++) {
          const e = Math.exp(scores[u] - max);
          scores[u] = e;
          sum += e;
        }
        accumulator.fill(0);
        for (let u = 0; u <= last; u++) {
          const p = scores[u] / sum;
          const vo = u * kvDim + kvo;
          for (let d = 0; d < headDim; d++) accumulator[d] += p * values[vo + d];
        }
        for (let d = 0; d < headDim; d++) out[qo + d] = accumulator[d];
      }
    }
  }

  /** down(silu(gate(x)) · up(x)) for n rows of x into out [n, hidden]. */
  private denseMlp(
    gate: Float32Array,
    up: Float32Array,
    down: Float32Array,
    x: Float32Array,
    n: number,
    out: Float32Array,
  ): void {
    const { hiddenSize: h, intermediateSize: inter } = this.config;
    const scratch = this.scratch;
    linear(x, n, gate, h, inter, scratch.gate);
    linear(x, n, up, h, inter, scratch.up);
    siluMultiply(scratch.gate, scratch.up, n * inter);
    linear(scratch.gate, n, down, inter, h, out);
  }

  /**
   * Router softmax over all experts, the top k kept (ties to the lower index) and, for
   * Mixtral or Qwen3-MoE with norm_topk_prob, renormalised to sum 1; their outputs mixed. As in transformers, each expert runs on the
   * tokens routed to it, and outputs are added in ascending expert order.
   */
  private sparseMlp(w: LayerWeights, x: Float32Array, n: number, out: Float32Array): void {
    const h = this.config.hiddenSize;
    const experts = w.experts!;
    const numExperts = experts.length;
    const k = this.expertsPerToken;
    const s = this.scratch;
    linear(x, n, w.router!.data, h, numExperts, s.routerLogits);

    for (let t = 0; t < n; t++) {
      const logits = t * numExperts;
      let max = -Infinity;
      for (let e = 0; e < numExperts; e++) max = Math.max(max, s.routerLogits[logits + e]);
      // Unnormalised probabilities: the softmax's denominator is divided out below.
      let allSum = 0;
      for (let e = 0; e < numExperts; e++) allSum += Math.exp(s.routerLogits[logits + e] - max);
      let chosenSum = 0;
      for (let j = 0; j < k; j++) {
        let best = -1;
        let bestLogit = -Infinity;
        for (let e = 0; e < numExperts; e++) {
          const logit = s.routerLogits[logits + e];
          if ((best < 0 || logit > bestLogit) && !isChosen(s.chosenExperts, t * k, j, e)) {
            best = e;
            bestLogit = logit;
          }
        }
        const p = Math.exp(bestLogit - max);
        s.chosenExperts[t * k + j] = best;
        s.chosenWeights[t * k + j] = p;
        chosenSum += p;
      }
      const denominator = this.config.normalizeTopK === false ? allSum : chosenSum;
      for (let j = 0; j < k; j++) s.chosenWeights[t * k + j] /= denominator;
    }

    out.fill(0, 0, n * h);
    for (let e = 0; e < numExperts; e++) {
      let m = 0;
      for (let t = 0; t < n; t++)
        for (let j = 0; j < k; j++)
          if (s.chosenExperts[t * k + j] === e) {
            s.expertRows[m] = t;
            s.expertWeights[m] = s.chosenWeights[t * k + j];
            s.expertInput.set(x.subarray(t * h, (t + 1) * h), m * h);
            m++;
          }
      if (m === 0) continue;
      const expert = experts[e];
      this.denseMlp(
        expert.gateProj.data,
        expert.upProj.data,
        expert.downProj.data,
        s.expertInput,
        m,
        s.expertOutput,
      );
      for (let r = 0; r < m; r++) {
        const p = s.expertWeights[r];
        const o = s.expertRows[r] * h;
        for (let i = 0; i < h; i++) out[o + i] += Math.fround(p * s.expertOutput[r * h + i]);
      }
    }
  }

  /** Grows the scratch buffers to hold `tokens` new positions attending over `positions`. */
  private reserve(tokens: number, positions: number): void {
    const s = this.scratch;
    if (tokens > s.tokens) this.scratch = this.allocateScratch(tokens, Math.max(positions, s.scores.length));
    else if (positions > s.scores.length)
      s.scores = new Float64Array(Math.max(positions, 2 * s.scores.length));
  }

  private allocateScratch(tokens: number, positions: number): Scratch {
    const { hiddenSize: h, intermediateSize: inter, headDim } = this.config;
    const experts = this.config.numExperts ?? 0;
    const k = this.expertsPerToken;
    return {
      tokens,
      embedded: new Float32Array(tokens * h),
      normed: new Float32Array(tokens * h),
      q: new Float32Array(tokens * this.qDim),
      attention: new Float32Array(tokens * this.qDim),
      projected: new Float32Array(tokens * h),
      gate: new Float32Array(tokens * inter),
      up: new Float32Array(tokens * inter),
      routerLogits: new Float32Array(tokens * experts),
      chosenExperts: new Int32Array(tokens * k),
      chosenWeights: new Float64Array(tokens * k),
      expertRows: new Int32Array(experts > 0 ? tokens : 0),
      expertWeights: new Float64Array(experts > 0 ? tokens : 0),
      expertInput: new Float32Array(experts > 0 ? tokens * h : 0),
      expertOutput: new Float32Array(experts > 0 ? tokens * h : 0),
      scores: new Float64Array(positions),
      accumulator: new Float64Array(headDim),
    };
  }
}

/** Whether `expert` is among the first `count` choices stored at chosen[offset..]. */
function isChosen(chosen: Int32Array, offset: number, count: number, expert: number): boolean {
  for (let j = 0; j < count; j++) if (chosen[offset + j] === expert) return true;
  return false;
}

function checkConfig(c: ModelConfig): void {
  const positive = (key: keyof ModelConfig) => {
    const value = c[key];
    if (typeof value !== "number" || !Number.isInteger(value) || value < 1)
      throw new InvalidArgumentError(`config.${key}`, `must be a positive integer, got ${String(value)}`);
  };
  for (const key of [
    "vocabSize",
    "hiddenSize",
    "intermediateSize",
    "numLayers",
    "numHeads",
    "numKvHeads",
    "headDim",
  ] as const)
    positive(key);
  if (c.headDim % 2 !== 0)
    throw new InvalidArgumentError("config.headDim", `must be even for RoPE, got ${c.headDim}`);
  if (c.numHeads % c.numKvHeads !== 0)
    throw new InvalidArgumentError(
      "config.numKvHeads",
      `${c.numKvHeads} does not divide numHeads ${c.numHeads}`,
    );
  if (!(c.rmsNormEps >= 0))
    throw new InvalidArgumentError("config.rmsNormEps", `must be ≥ 0, got ${c.rmsNormEps}`);
  if (!(c.ropeTheta > 0))
    throw new InvalidArgumentError("config.ropeTheta", `must be > 0, got ${c.ropeTheta}`);
  if (c.architecture === "mixtral" || c.architecture === "qwen3_moe") {
    positive("numExperts");
    positive("numExpertsPerToken");
    if (c.numExpertsPerToken! > c.numExperts!)
      throw new InvalidArgumentError(
        "config.numExpertsPerToken",
        `${c.numExpertsPerToken} exceeds numExperts ${c.numExperts}`,
      );
  }
}

/** Every tensor the forward reads must exist with exactly as many values as the config implies. */
function checkWeights(c: ModelConfig, w: ModelWeights): void {
  const check = (field: string, tensor: WeightTensor | undefined, size: number) => {
    if (!tensor || !(tensor.data instanceof Float32Array))
      throw new InvalidArgumentError(field, "is missing (expected a Float32Array weight)");
    if (tensor.data.length !== size)
      throw new InvalidArgumentError(field, `has ${tensor.data.length} values, expected ${size}`);
  };
  const h = c.hiddenSize;
  const inter = c.intermediateSize;
  const qDim = c.numHeads * c.headDim;
  const kvDim = c.numKvHeads * c.headDim;
  check("weights.embedTokens", w.embedTokens, c.vocabSize * h);
  check("weights.finalNorm", w.finalNorm, h);
  check("weights.lmHead", w.lmHead, c.vocabSize * h);
  if (!Array.isArray(w.layers) || w.layers.length !== c.numLayers)
    throw new InvalidArgumentError(
      "weights.layers",
      `has ${w.layers?.length} layers, expected ${c.numLayers}`,
    );
  w.layers.forEach((layer, l) => {
    const p = `weights.layers[${l}]`;
    check(`${p}.inputNorm`, layer.inputNorm, h);
    check(`${p}.qProj`, layer.qProj, qDim * h);
    check(`${p}.kProj`, layer.kProj, kvDim * h);
    check(`${p}.vProj`, layer.vProj, kvDim * h);
    check(`${p}.oProj`, layer.oProj, h * qDim);
    if (layer.qBias) check(`${p}.qBias`, layer.qBias, qDim);
    if (layer.kBias) check(`${p}.kBias`, layer.kBias, kvDim);
    if (layer.vBias) check(`${p}.vBias`, layer.vBias, kvDim);
    if (c.queryKeyNorm) {
      check(`${p}.qNorm`, layer.qNorm, c.headDim);
      check(`${p}.kNorm`, layer.kNorm, c.headDim);
    }
    check(`${p}.postAttentionNorm`, layer.postAttentionNorm, h);
    if (c.numExperts !== undefined) {
      const experts = c.numExperts;
      check(`${p}.router`, layer.router, experts * h);
      if (!layer.experts || layer.experts.length !== experts)
        throw new InvalidArgumentError(
          `${p}.experts`,
          `has ${layer.experts?.length ?? 0} experts, expected ${experts}`,
        );
      layer.experts.forEach((expert, e) => {
        check(`${p}.experts[${e}].gateProj`, expert.gateProj, inter * h);
        check(`${p}.experts[${e}].upProj`, expert.upProj, inter * h);
        check(`${p}.experts[${e}].downProj`, expert.downProj, h * inter);
      });
    } else {
      if (layer.experts)
        throw new InvalidArgumentError(`${p}.experts`, `a ${c.architecture} model has no experts`);
      check(`${p}.gateProj`, layer.gateProj, inter * h);
      check(`${p}.upProj`, layer.upProj, inter * h);
      check(`${p}.downProj`, layer.downProj, h * inter);
    }
  });
}
