import { describe, expect, it } from "vitest";
import type { ModelConfig } from "../checkpoint/model-config.ts";
import type { LayerWeights, ModelWeights, WeightTensor } from "../checkpoint/model-weights.ts";
import { InvalidArgumentError } from "@tandem/common";
import { ReferenceKvCache } from "./reference-kv-cache.ts";
import { ReferenceModel } from "./reference-model.ts";
import { randomWeights, tinyConfig } from "./random-weights.ts";

// ---------------------------------------------------------------------------------------------
// A second, deliberately naive implementation written straight from transformers' modeling
// code (one token at a time, plain number arrays, doubles, repeat_kv-style head expansion).
// ---------------------------------------------------------------------------------------------

type Vec = number[];

function matVec(w: WeightTensor, x: Vec, bias?: WeightTensor): Vec {
  const [rows, cols] = w.shape;
  return Array.from({ length: rows }, (_, r) => {
    let sum = bias ? bias.data[r] : 0;
    for (let c = 0; c < cols; c++) sum += w.data[r * cols + c] * x[c];
    return sum;
  });
}

function rmsNorm(x: Vec, w: WeightTensor, eps: number): Vec {
  const meanSquare = x.reduce((s, v) => s + v * v, 0) / x.length;
  return x.map((v, i) => (v / Math.sqrt(meanSquare + eps)) * w.data[i]);
}

const silu = (v: number) => v / (1 + Math.exp(-v));

function mlp(gate: WeightTensor, up: WeightTensor, down: WeightTensor, x: Vec): Vec {
  const u = matVec(up, x);
  return matVec(
    down,
    matVec(gate, x).map((g, i) => silu(g) * u[i]),
  );
}

/** rotate_half: first half x·cos − x2·sin, second half x2·cos + x1·sin. */
function rope(x: Vec, headDim: number, position: number, theta: number): Vec {
  const half = headDim / 2;
  const out = x.slice();
  for (let h = 0; h < x.length / headDim; h++)
    for (let i = 0; i < half; i++) {
      const angle = position / Math.pow(theta, (2 * i) / headDim);
      const a = x[h * headDim + i];
      const b = x[h * headDim + i + half];
      out[h * headDim + i] = a * Math.cos(angle) - b * Math.sin(angle);
      out[h * headDim + i + half] = b * Math.cos(angle) + a * Math.sin(angle);
    }
  return out;
}

function naiveSparseMlp(c: ModelConfig, w: LayerWeights, x: Vec): Vec {
  const logits = matVec(w.router!, x);
  const max = Math.max(...logits);
  const exp = logits.map((l) => Math.exp(l - max));
  const total = exp.reduce((a, b) => a + b, 0);
  const probs = exp.map((e) => e / total);
  const top = probs
    .map((p, e) => ({ p, e }))
    .sort((a, b) => b.p - a.p || a.e - b.e)
    .slice(0, c.numExpertsPerToken);
  const norm = top.reduce((s, t) => s + t.p, 0);
  const out = new Array<number>(x.length).fill(0);
  for (const { p, e } of top) {
    const ex = w.experts![e];
    mlp(ex.gateProj, ex.upProj, ex.downProj, x).forEach((v, i) => (out[i] += (p / norm) * v));
  }
  return out;
}

/** Logits [ids.length][vocab] of a causal LM, computed the slow way. */
function naiveLogits(c: ModelConfig, w: ModelWeights, ids: number[]): Vec[] {
  const { hiddenSize: h, headDim, numHeads, numKvHeads } = c;
  const repeat = numHeads / numKvHeads;
  const keys: Vec[][] = w.layers.map(() => []);
  const values: Vec[][] = w.layers.map(() => []);
  return ids.map((id, position) => {
    let x = Array.from(w.embedTokens.data.subarray(id * h, (id + 1) * h));
    w.layers.forEach((layer, l) => {
      const n = rmsNorm(x, layer.inputNorm, c.rmsNormEps);
      const q = rope(matVec(layer.qProj, n, layer.qBias), headDim, position, c.ropeTheta);
      keys[l].push(rope(matVec(layer.kProj, n, layer.kBias), headDim, position, c.ropeTheta));
      values[l].push(matVec(layer.vProj, n, layer.vBias));
      const attention: Vec = [];
      for (let head = 0; head < numHeads; head++) {
        const kv = Math.floor(head / repeat);
        const qh = q.slice(head * headDim, (head + 1) * headDim);
        const scores = keys[l].map(
          (k) => qh.reduce((s, v, d) => s + v * k[kv * headDim + d], 0) / Math.sqrt(headDim),
        );
        const max = Math.max(...scores);
        const exp = scores.map((s) => Math.exp(s - max));
        const total = exp.reduce((a, b) => a + b, 0);
        for (let d = 0; d < headDim; d++)
          attention.push(values[l].reduce((s, v, u) => s + (exp[u] / total) * v[kv * headDim + d], 0));
      }
      const o = matVec(layer.oProj, attention);
      const mid = x.map((v, i) => v + o[i]);
      const n2 = rmsNorm(mid, layer.postAttentionNorm, c.rmsNormEps);
      const m = layer.experts
        ? naiveSparseMlp(c, layer, n2)
        : mlp(layer.gateProj!, layer.upProj!, layer.downProj!, n2);
      x = mid.map((v, i) => v + m[i]);
    });
    return matVec(w.lmHead, rmsNorm(x, w.finalNorm, c.rmsNormEps));
  });
}

// ---------------------------------------------------------------------------------------------

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
}

function concat(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}

const tensor = (name: string, shape: number[], data: Float32Array): WeightTensor => ({ name, shape, data });

/** Copies rows [kvHead·headDim, (kvHead+1)·headDim) for each kvHead in `order`. */
function pickHeads(t: WeightTensor, headDim: number, order: number[]): WeightTensor {
  const cols = t.shape.length === 2 ? t.shape[1] : 1;
  const parts = order.map((kv) => t.data.slice(kv * headDim * cols, (kv + 1) * headDim * cols));
  const shape = t.shape.length === 2 ? [order.length * headDim, cols] : [order.length * headDim];
  return tensor(t.name, shape, concat(parts));
}

const IDS = [3, 17, 42, 0, 49, 8, 8, 23];

const MODELS: [string, ModelConfig][] = [
  ["llama (GQA 4:2)", tinyConfig()],
  [
    "mistral (MHA, tied embeddings)",
    tinyConfig({ architecture: "mistral", numKvHeads: 4, tieWordEmbeddings: true }),
  ],
  [
    "qwen2 (q/k/v biases, headDim ≠ hidden/heads, GQA 4:1)",
    tinyConfig({ architecture: "qwen2", attentionBias: true, headDim: 16, numKvHeads: 1, ropeTheta: 1e6 }),
  ],
  ["mixtral (4 experts, top-2)", tinyConfig({ architecture: "mixtral", numLayers: 3 })],
];

describe("ReferenceModel matches a naive transcription of the transformers forward", () => {
  it.each(MODELS)("%s: logits at every position", (_, config) => {
    const weights = randomWeights(config, 11);
    const logits = new ReferenceModel(config, weights).logits(IDS);
    const expected = naiveLogits(config, weights, IDS).flat();
    expect(maxAbsDiff(logits, expected)).toBeLessThan(1e-4);
  });
});

describe("attention", () => {
  it("over a single token is o_proj(v): the softmax has one key, so q and k do not matter", () => {
    const config = tinyConfig({ numLayers: 1, attentionBias: true });
    const weights = randomWeights(config, 5);
    const layer = weights.layers[0];
    // Silence the MLP so the layer's output is the residual plus attention only.
    layer.downProj = tensor(
      layer.downProj!.name,
      layer.downProj!.shape,
      new Float32Array(layer.downProj!.data.length),
    );
    const model = new ReferenceModel(config, weights);
    const id = 9;
    const { hiddenAfterLayer } = model.forward({ ids: [id] }, 0, 1, model.newCache());

    const h = config.hiddenSize;
    const x = Array.from(weights.embedTokens.data.subarray(id * h, (id + 1) * h));
    const v = matVec(layer.vProj, rmsNorm(x, layer.inputNorm, config.rmsNormEps), layer.vBias);
    // Query heads 0,1 read kv head 0; heads 2,3 read kv head 1.
    const d = config.headDim;
    const perQueryHead = [0, 0, 1, 1].flatMap((kv) => v.slice(kv * d, (kv + 1) * d));
    const expected = matVec(layer.oProj, perQueryHead).map((o, i) => x[i] + o);
    expect(maxAbsDiff(hiddenAfterLayer[0], expected)).toBeLessThan(1e-6);

    // Other q and k weights change nothing.
    const other = randomWeights(config, 6).layers[0];
    weights.layers[0] = {
      ...layer,
      qProj: other.qProj,
      kProj: other.kProj,
      qBias: other.qBias,
      kBias: other.kBias,
    };
    const again = new ReferenceModel(config, weights).forward({ ids: [id] }, 0, 1, model.newCache());
    expect(again.hiddenAfterLayer[0]).toEqual(hiddenAfterLayer[0]);
  });

  it("groups query heads over kv heads: a 2:1 GQA model equals the MHA model whose k/v duplicate each kv head", () => {
    const gqa = tinyConfig({ numHeads: 4, numKvHeads: 2, attentionBias: true });
    const mha: ModelConfig = { ...gqa, numKvHeads: 4 };
    const weights = randomWeights(gqa, 21);
    const expand = (order: number[]): ModelWeights => ({
      ...weights,
      layers: weights.layers.map((l) => ({
        ...l,
        kProj: pickHeads(l.kProj, gqa.headDim, order),
        vProj: pickHeads(l.vProj, gqa.headDim, order),
        kBias: pickHeads(l.kBias!, gqa.headDim, order),
        vBias: pickHeads(l.vBias!, gqa.headDim, order),
      })),
    });
    const grouped = new ReferenceModel(gqa, weights).logits(IDS);
    // repeat_kv: query head h uses kv head floor(h / 2) → MHA kv heads [0, 0, 1, 1].
    expect(maxAbsDiff(grouped, new ReferenceModel(mha, expand([0, 0, 1, 1])).logits(IDS))).toBeLessThan(1e-6);
    // The check has teeth: interleaving (h mod 2) is a different model.
    expect(maxAbsDiff(grouped, new ReferenceModel(mha, expand([0, 1, 0, 1])).logits(IDS))).toBeGreaterThan(
      1e-2,
    );
  });

  it("is causal: logits at a position do not depend on later tokens", () => {
    const config = tinyConfig();
    const model = new ReferenceModel(config, randomWeights(config, 2));
    const vocab = config.vocabSize;
    const a = model.logits([1, 2, 3, 4, 5]);
    const b = model.logits([1, 2, 3, 40, 41]);
    expect(a.subarray(0, 3 * vocab)).toEqual(b.subarray(0, 3 * vocab));
    expect(maxAbsDiff(a.subarray(3 * vocab), b.subarray(3 * vocab))).toBeGreaterThan(1e-3);
  });
});

describe("KV cache", () => {
  it.each(MODELS)("%s: prefill of 5 then 3 single steps equals one forward of all 8 tokens", (_, config) => {
    const model = new ReferenceModel(config, randomWeights(config, 3));
    const L = config.numLayers;
    const whole = model.forward({ ids: IDS }, 0, L, model.newCache()).hiddenAfterLayer;

    const cache = model.newCache();
    const steps = [model.forward({ ids: IDS.slice(0, 5) }, 0, L, cache).hiddenAfterLayer];
    for (let t = 5; t < 8; t++) steps.push(model.forward({ ids: [IDS[t]] }, 0, L, cache).hiddenAfterLayer);
    for (let l = 0; l < L; l++) {
      expect(cache.length(l)).toBe(8);
      expect(maxAbsDiff(concat(steps.map((s) => s[l])), whole[l])).toBeLessThanOrEqual(1e-5);
    }
    const last = steps[3][L - 1];
    const expected = model.head(whole[L - 1], 8).subarray(7 * config.vocabSize);
    expect(maxAbsDiff(model.head(last, 1), expected)).toBeLessThanOrEqual(1e-5);
  });

  it.each(MODELS)(
    "%s: layers [0, s) then [s, L) on separate caches equal [0, L), for every s",
    (_, config) => {
      const model = new ReferenceModel(config, randomWeights(config, 4));
      const L = config.numLayers;
      const whole = model.forward({ ids: IDS }, 0, L, model.newCache()).hiddenAfterLayer;
      for (let s = 1; s < L; s++) {
        const edge = model.newCache();
        const cloud = model.newCache();
        const parts: Float32Array[][] = [];
        for (const chunk of [IDS.slice(0, 6), IDS.slice(6, 7), IDS.slice(7)]) {
          const lower = model.forward({ ids: chunk }, 0, s, edge).hiddenAfterLayer;
          const upper = model.forward(
            { hidden: lower[s - 1], count: chunk.length },
            s,
            L,
            cloud,
          ).hiddenAfterLayer;
          parts.push([...lower, ...upper]);
        }
        for (let l = 0; l < L; l++)
          expect(maxAbsDiff(concat(parts.map((p) => p[l])), whole[l])).toBeLessThanOrEqual(1e-5);
        // Each cache holds only its own segment's layers.
        for (let l = 0; l < L; l++) {
          expect(edge.length(l)).toBe(l < s ? 8 : 0);
          expect(cloud.length(l)).toBe(l < s ? 0 : 8);
        }
      }
    },
  );

  it("holds each position's rotated keys and values, [position, kvHeads, headDim]", () => {
    const config = tinyConfig({ numLayers: 1 });
    const weights = randomWeights(config, 8);
    const model = new ReferenceModel(config, weights);
    const cache = model.newCache();
    model.forward({ ids: [5, 6] }, 0, 1, cache);
    const layer = weights.layers[0];
    const kvDim = config.numKvHeads * config.headDim;
    expect(cache.keys(0)).toHaveLength(2 * kvDim);
    const h = config.hiddenSize;
    [5, 6].forEach((id, position) => {
      const n = rmsNorm(
        Array.from(weights.embedTokens.data.subarray(id * h, (id + 1) * h)),
        layer.inputNorm,
        1e-6,
      );
      const k = rope(matVec(layer.kProj, n), config.headDim, position, config.ropeTheta);
      const v = matVec(layer.vProj, n);
      expect(maxAbsDiff(cache.keys(0).subarray(position * kvDim, (position + 1) * kvDim), k)).toBeLessThan(
        1e-5,
      );
      expect(maxAbsDiff(cache.values(0).subarray(position * kvDim, (position + 1) * kvDim), v)).toBeLessThan(
        1e-5,
      );
    });
  });

  it("grows past its initial capacity and can be truncated to replay a suffix", () => {
    const config = tinyConfig();
    const model = new ReferenceModel(config, randomWeights(config, 9));
    const ids = Array.from({ length: 150 }, (_, i) => (i * 7) % config.vocabSize);
    const whole = model.logits(ids);
    const cache = model.newCache();
    model.forward({ ids: ids.slice(0, 100) }, 0, 2, cache);
    model.forward({ ids: [1, 2, 3] }, 0, 2, cache); // a wrong continuation, rolled back
    cache.truncate(100);
    expect(cache.length(0)).toBe(100);
    const rest = model.forward({ ids: ids.slice(100) }, 0, 2, cache).hiddenAfterLayer[1];
    const vocab = config.vocabSize;
    expect(maxAbsDiff(model.head(rest, 50), whole.subarray(100 * vocab))).toBeLessThanOrEqual(1e-5);
  });
});

describe("Mixtral sparse MLP", () => {
  it("with one expert and top-1 equals the dense model with that expert's weights", () => {
    const moe = tinyConfig({ architecture: "mixtral", numExperts: 1, numExpertsPerToken: 1 });
    const moeWeights = randomWeights(moe, 13);
    const dense: ModelConfig = {
      ...moe,
      architecture: "llama",
      numExperts: undefined,
      numExpertsPerToken: undefined,
    };
    const denseWeights: ModelWeights = {
      ...moeWeights,
      layers: moeWeights.layers.map(({ router: _router, experts, ...rest }) => ({
        ...rest,
        gateProj: experts![0].gateProj,
        upProj: experts![0].upProj,
        downProj: experts![0].downProj,
      })),
    };
    expect(new ReferenceModel(moe, moeWeights).logits(IDS)).toEqual(
      new ReferenceModel(dense, denseWeights).logits(IDS),
    );
  });

  /**
   * One layer on hidden [1, 1, 1, 1]: unit norms and eps 0 keep it [1, 1, 1, 1], a zero o_proj
   * silences attention, and router row e is [logit_e, 0, 0, 0], so the router logits are
   * `routerLogits`. Experts in `poisoned` get NaN weights: any output they touch turns NaN.
   */
  function routedLayer(routerLogits: number[], poisoned: number[]) {
    const h = 4;
    const inter = 3;
    const config = tinyConfig({
      architecture: "mixtral",
      vocabSize: 4,
      hiddenSize: h,
      intermediateSize: inter,
      numLayers: 1,
      numHeads: 1,
      numKvHeads: 1,
      headDim: 4,
      numExperts: routerLogits.length,
      numExpertsPerToken: 2,
      rmsNormEps: 0,
    });
    const weights = randomWeights(config, 17);
    const layer = weights.layers[0];
    layer.inputNorm = tensor("in", [h], new Float32Array(h).fill(1));
    layer.postAttentionNorm = tensor("post", [h], new Float32Array(h).fill(1));
    layer.oProj = tensor("o", [h, h], new Float32Array(h * h));
    const router = new Float32Array(routerLogits.length * h);
    routerLogits.forEach((logit, e) => (router[e * h] = logit));
    layer.router = tensor("router", [routerLogits.length, h], router);
    for (const e of poisoned) {
      const ex = layer.experts![e];
      ex.gateProj = tensor("w1", [inter, h], new Float32Array(inter * h).fill(NaN));
      ex.upProj = tensor("w3", [inter, h], new Float32Array(inter * h).fill(NaN));
      ex.downProj = tensor("w2", [h, inter], new Float32Array(h * inter).fill(NaN));
    }
    const model = new ReferenceModel(config, weights);
    const x = [1, 1, 1, 1];
    const out = model.forward({ hidden: Float32Array.from(x), count: 1 }, 0, 1, model.newCache())
      .hiddenAfterLayer[0];
    const expert = (e: number) => {
      const ex = layer.experts![e];
      return mlp(ex.gateProj, ex.upProj, ex.downProj, x);
    };
    return { x, out, expert };
  }

  it("routes to the top-k experts by router probability, renormalised, and never runs the others", () => {
    const { x, out, expert } = routedLayer([1, 3, 0, 2], [0, 2]);
    // softmax([1, 3, 0, 2]) keeps e³ and e², renormalised: e/(e+1) and 1/(e+1).
    const [p1, p3] = [Math.E / (Math.E + 1), 1 / (Math.E + 1)];
    const [y1, y3] = [expert(1), expert(3)];
    expect(out.every(Number.isFinite)).toBe(true);
    expect(
      maxAbsDiff(
        out,
        x.map((v, i) => v + p1 * y1[i] + p3 * y3[i]),
      ),
    ).toBeLessThan(1e-6);
  });

  it("breaks ties between equally probable experts towards the lower index", () => {
    const { x, out, expert } = routedLayer([2, 0, 2, 2], [1, 3]);
    const [y0, y2] = [expert(0), expert(2)];
    expect(out.every(Number.isFinite)).toBe(true);
    expect(
      maxAbsDiff(
        out,
        x.map((v, i) => v + 0.5 * y0[i] + 0.5 * y2[i]),
      ),
    ).toBeLessThan(1e-6);
  });

  it("routes each token of a chunk on its own, as if decoded one at a time", () => {
    const config = tinyConfig({ architecture: "mixtral", numExperts: 8, numExpertsPerToken: 3 });
    const model = new ReferenceModel(config, randomWeights(config, 19));
    const whole = model.logits(IDS);
    const cache = model.newCache();
    const vocab = config.vocabSize;
    IDS.forEach((id, t) => {
      const last = model.forward({ ids: [id] }, 0, 2, cache).hiddenAfterLayer[1];
      expect(maxAbsDiff(model.head(last, 1), whole.subarray(t * vocab, (t + 1) * vocab))).toBeLessThanOrEqual(
        1e-5,
      );
    });
  });
});

describe("input validation", () => {
  const config = tinyConfig({ numLayers: 3 });
  const model = new ReferenceModel(config, randomWeights(config, 1));
  const field = (f: () => unknown): string => {
    try {
      f();
    } catch (error) {
      expect(error).toBeInstanceOf(InvalidArgumentError);
      return (error as InvalidArgumentError).field;
    }
    throw new Error("did not throw");
  };

  it("rejects token ids outside the vocabulary", () => {
    for (const id of [-1, config.vocabSize, 1.5, NaN])
      expect(field(() => model.forward({ ids: [1, id] }, 0, 1, model.newCache()))).toBe("ids[1]");
  });

  it("takes token ids into layer 0 only", () => {
    expect(field(() => model.forward({ ids: [1] }, 1, 3, model.newCache()))).toBe("ids");
  });

  it("rejects hidden states whose length is not count · hidden", () => {
    const h = config.hiddenSize;
    expect(
      field(() => model.forward({ hidden: new Float32Array(2 * h + 1), count: 2 }, 1, 3, model.newCache())),
    ).toBe("hidden");
    expect(
      field(() => model.forward({ hidden: new Float32Array(h), count: -1 }, 1, 3, model.newCache())),
    ).toBe("count");
    expect(field(() => model.head(new Float32Array(h), 2))).toBe("hidden");
  });

  it("rejects layer ranges that are empty or outside the model", () => {
    for (const [from, to] of [
      [-1, 2],
      [0, 4],
      [2, 2],
      [2, 1],
      [0.5, 2],
    ])
      expect(
        field(() => model.forward({ hidden: new Float32Array(0), count: 0 }, from, to, model.newCache())),
      ).toBe("layers");
  });

  it("rejects a cache whose layers in the range hold different numbers of positions, or of another shape", () => {
    const cache = model.newCache();
    model.forward({ ids: [1, 2] }, 0, 1, cache);
    const hidden = new Float32Array(config.hiddenSize);
    expect(field(() => model.forward({ hidden, count: 1 }, 0, 2, cache))).toBe("cache");
    expect(field(() => model.forward({ hidden, count: 1 }, 0, 3, new ReferenceKvCache(2, 16)))).toBe("cache");
    expect(field(() => cache.length(3))).toBe("layer");
  });

  it("rejects weights that do not fit the config", () => {
    const weights = randomWeights(config, 1);
    weights.layers[1].kProj = tensor("k", [8, 32], new Float32Array(8 * 32));
    expect(field(() => new ReferenceModel(config, weights))).toBe("weights.layers[1].kProj");
    expect(field(() => new ReferenceModel({ ...config, numKvHeads: 3 }, randomWeights(config, 1)))).toBe(
      "config.numKvHeads",
    );
  });
});
