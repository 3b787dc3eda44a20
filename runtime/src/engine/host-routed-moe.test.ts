/**
 * Host-routed MoE: a segment whose experts run outside its graphs, from an expert cache
 * under a memory budget, computes what the single sparse graph computes.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { InternalError, InvalidArgumentError } from "@tandem/common";
import { loadCheckpoint } from "../checkpoint/load-checkpoint.ts";
import type { Checkpoint } from "../checkpoint/model-weights.ts";
import { segmentSpec, type SegmentSpec, type WeightFormat } from "../graph/segment-spec.ts";
import {
  TINY_LLAMA,
  writeRandomCheckpoint,
  type RandomCheckpointSpec,
} from "../testing/random-checkpoint.ts";
import { ExpertCache, type ExpertCacheOptions } from "./expert-cache.ts";
import { ExpertThreads } from "./expert-threads.ts";
import { HostRoutedMoeModel } from "./host-routed-moe-model.ts";
import { SegmentModel, type SegmentRunner } from "./segment-model.ts";
import { SegmentSessions } from "./segment-sessions.ts";

const SHAPES: Record<string, RandomCheckpointSpec> = {
  "mixtral, 4 experts, top-2": {
    ...TINY_LLAMA,
    architecture: "mixtral",
    numExperts: 4,
    numExpertsPerToken: 2,
    seed: 19,
  },
  "qwen3_moe, 8 experts, top-3, norm_topk_prob false": {
    ...TINY_LLAMA,
    architecture: "qwen3_moe",
    headDim: 24,
    numExperts: 8,
    numExpertsPerToken: 3,
    normTopkProb: false,
    seed: 22,
  },
};
const MIXTRAL = "mixtral, 4 experts, top-2";
const PROMPT = [5, 17, 42, 255, 3, 99, 120, 7, 64, 200, 1];

let workDir: string;
let cacheDir: string;
const checkpoints = new Map<string, Checkpoint>();

beforeAll(async () => {
  workDir = mkdtempSync(join(tmpdir(), "tandem-host-moe-"));
  cacheDir = join(workDir, "graphs");
  for (const [name, spec] of Object.entries(SHAPES)) {
    const dir = join(workDir, name.replace(/[^a-z0-9]+/gi, "-"));
    await writeRandomCheckpoint(dir, spec);
    checkpoints.set(name, await loadCheckpoint(dir));
  }
});

afterAll(() => rmSync(workDir, { recursive: true, force: true }));

type Partial_ = Partial<SegmentSpec> & Pick<SegmentSpec, "fromLayer" | "toLayer">;

function hostModel(checkpoint: Checkpoint, partial: Partial_, experts: ExpertCacheOptions = {}) {
  return HostRoutedMoeModel.load(checkpoint, segmentSpec({ ...partial, moeExecution: "host" }), {
    cacheDir,
    experts,
  });
}

function graphModel(checkpoint: Checkpoint, partial: Partial_) {
  return SegmentModel.load(checkpoint, segmentSpec({ ...partial, moeExecution: "sparse" }), { cacheDir });
}

/** The whole model's logits at every position of `ids`. */
async function allLogits(model: SegmentRunner, ids: number[]): Promise<Float32Array> {
  const sessions = new SegmentSessions(model);
  sessions.open("s");
  const step = await sessions.forward("s", { ids });
  sessions.release("s");
  return step.exits.at(-1)!.logits!;
}

/** Greedy decode of `steps` tokens after `prompt`, one position a step: the final head's logits at each. */
async function decodeLogits(model: SegmentRunner, prompt: number[], steps: number): Promise<Float32Array[]> {
  const sessions = new SegmentSessions(model);
  sessions.open("s");
  let step = await sessions.forward("s", { ids: prompt });
  const logits = [step.exits.at(-1)!.logits!];
  for (let i = 0; i < steps; i++) {
    step = await sessions.forward("s", { ids: [step.exits.at(-1)!.token[0]] });
    logits.push(step.exits.at(-1)!.logits!);
  }
  sessions.release("s");
  return logits;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
}

const whole = (checkpoint: Checkpoint): Partial_ => ({
  fromLayer: 0,
  toLayer: checkpoint.config.numLayers,
  finalHead: true,
  positions: "all",
  logits: true,
});

describe("a host-routed MoE segment", () => {
  for (const name of Object.keys(SHAPES)) {
    it(`${name}: logits at every position equal the single sparse graph's within 1e-4`, async () => {
      const checkpoint = checkpoints.get(name)!;
      const host = await hostModel(checkpoint, whole(checkpoint));
      const graph = await graphModel(checkpoint, whole(checkpoint));
      expect(maxAbsDiff(await allLogits(host, PROMPT), await allLogits(graph, PROMPT))).toBeLessThanOrEqual(
        1e-4,
      );
      await Promise.all([host.release(), graph.release()]);
    });
  }

  it("as an edge's segment: its exits (KL from the earlier exit too), the hidden state it hands over and its expert counts equal the graph's", async () => {
    const checkpoint = checkpoints.get(MIXTRAL)!;
    const spec: Partial_ = {
      fromLayer: 0,
      toLayer: 3,
      exits: [{ afterLayer: 1 }, { afterLayer: 3 }],
      outputHidden: true,
      hiddenTaps: [2],
    };
    const outputs = [];
    for (const model of [await hostModel(checkpoint, spec), await graphModel(checkpoint, spec)]) {
      const sessions = new SegmentSessions(model);
      sessions.open("s");
      const prefill = await sessions.forward("s", { ids: PROMPT });
      const decode = await sessions.forward("s", { ids: [prefill.exits[0].token[0]] });
      outputs.push({ prefill, decode, counts: model.takeExpertCounts()! });
      await model.release();
    }
    const [host, graph] = outputs;
    for (const step of ["prefill", "decode"] as const) {
      expect(host[step].exits.map((e) => e.afterLayer)).toEqual([1, 3]);
      host[step].exits.forEach((exit, i) => {
        expect(Array.from(exit.token), step).toEqual(Array.from(graph[step].exits[i].token));
        expect(maxAbsDiff(exit.prob, graph[step].exits[i].prob), step).toBeLessThanOrEqual(1e-5);
        // Computed from the two heads' logits on the host; the logits stay inside.
        expect(exit.logits, step).toBeUndefined();
      });
      expect(host[step].exits[0].klPrevious, step).toBeUndefined();
      const kl = host[step].exits[1].klPrevious!;
      expect(
        kl.every((v) => v > 0),
        step,
      ).toBe(true);
      expect(
        Math.max(...kl.map((v, p) => Math.abs(v - graph[step].exits[1].klPrevious![p]))),
        step,
      ).toBeLessThanOrEqual(1e-4);
      expect(maxAbsDiff(host[step].hidden!, graph[step].hidden!), step).toBeLessThanOrEqual(1e-4);
    }
    expect(host.counts).toEqual(graph.counts);
    expect(host.counts.reduce((a, b) => a + b, 0)).toBe(3 * 2 * (PROMPT.length + 1));
  });

  it("decodes several sessions in one batched step, each routed to its own experts, as each would alone", async () => {
    const checkpoint = checkpoints.get(MIXTRAL)!;
    const model = await hostModel(checkpoint, { ...whole(checkpoint), positions: "last" });
    const prompts = [PROMPT, PROMPT.slice(0, 3).reverse(), [7, 7, 2, 9, 1]];
    const batched = new SegmentSessions(model, { batchRows: 4 });
    prompts.forEach((prompt, i) => batched.open(`s${i}`));
    for (const [i, prompt] of prompts.entries()) await batched.forward(`s${i}`, { ids: prompt.slice(0, -1) });
    const steps = await batched.forwardBatch(
      prompts.map((prompt, i) => ({ id: `s${i}`, input: { ids: [prompt.at(-1)!] } })),
    );
    const alone = await graphModel(checkpoint, { ...whole(checkpoint), positions: "last" });
    for (const [i, prompt] of prompts.entries()) {
      const sessions = new SegmentSessions(alone);
      sessions.open("a");
      const expected = (await sessions.forward("a", { ids: prompt })).exits[0].logits!;
      expect(maxAbsDiff(steps[i].exits[0].logits!, expected), `s${i}`).toBeLessThanOrEqual(1e-4);
    }
    await Promise.all([model.release(), alone.release()]);
  });

  it("under a budget of a quarter of its experts decodes exactly what it decodes with all resident, and never holds more", async () => {
    const checkpoint = checkpoints.get("qwen3_moe, 8 experts, top-3, norm_topk_prob false")!;
    const spec = { ...whole(checkpoint), positions: "last" as const };
    const resident = await hostModel(checkpoint, spec);
    const expected = await decodeLogits(resident, PROMPT, 12);
    const all = resident.experts.stats();
    // Every expert was used at least once, so all of them are loaded now.
    expect(all.residentBytes).toBe(all.allExpertBytes);
    expect(all.evictions).toBe(0);
    await resident.release();

    const budgetBytes = Math.ceil(all.allExpertBytes / 4);
    const budgeted = await hostModel(checkpoint, spec, { budgetBytes });
    const logits = await decodeLogits(budgeted, PROMPT, 12);
    logits.forEach((l, i) => expect(maxAbsDiff(l, expected[i]), `step ${i}`).toBe(0));
    const stats = budgeted.experts.stats();
    expect(stats.residentBytes).toBeLessThanOrEqual(budgetBytes);
    expect(stats.evictions).toBeGreaterThan(0);
    expect(stats.misses).toBeGreaterThan(all.misses);
    await budgeted.release();
  });

  it("keeps each expert in the format asked of it: mixed int8/int4 experts equal the same mix all resident, and int8 equals the int8 graph", async () => {
    const checkpoint = checkpoints.get(MIXTRAL)!;
    const spec = { ...whole(checkpoint), weightFormat: "int8" as WeightFormat };
    const int8Host = await hostModel(checkpoint, spec);
    const int8Graph = await graphModel(checkpoint, spec);
    expect(
      maxAbsDiff(await allLogits(int8Host, PROMPT), await allLogits(int8Graph, PROMPT)),
    ).toBeLessThanOrEqual(1e-4);
    const fp32Bytes = int8Host.experts.stats().allExpertBytes;
    await Promise.all([int8Host.release(), int8Graph.release()]);

    // Even experts in int8, odd ones in int4: e.g. by how often each is chosen.
    const formatOf = (_layer: number, expert: number): WeightFormat => (expert % 2 === 0 ? "int8" : "int4");
    const mixed = await hostModel(checkpoint, spec, { formatOf });
    const expected = await allLogits(mixed, PROMPT);
    const mixedBytes = mixed.experts.stats().allExpertBytes;
    expect(mixedBytes).toBeLessThan(fp32Bytes);
    await mixed.release();
    const budgeted = await hostModel(checkpoint, spec, { formatOf, budgetBytes: Math.ceil(mixedBytes / 2) });
    expect(maxAbsDiff(await allLogits(budgeted, PROMPT), expected)).toBe(0);
    await budgeted.release();
  });

  it("keeps an int4 model's final head in 8 bits as the one-graph segment does: the logits equal the int4 graph's", async () => {
    const checkpoint = checkpoints.get(MIXTRAL)!;
    const spec = { ...whole(checkpoint), weightFormat: "int4" as WeightFormat };
    const host = await hostModel(checkpoint, spec);
    const graph = await graphModel(checkpoint, spec);
    expect(maxAbsDiff(await allLogits(host, PROMPT), await allLogits(graph, PROMPT))).toBeLessThanOrEqual(
      1e-4,
    );
    await Promise.all([host.release(), graph.release()]);
  });

  it("refuses a budget that cannot hold the experts one token needs, naming budgetBytes", async () => {
    const checkpoint = checkpoints.get(MIXTRAL)!;
    const error = await hostModel(checkpoint, whole(checkpoint), { budgetBytes: 1000 }).catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(InvalidArgumentError);
    expect(String(error)).toMatch(/budgetBytes/);
  });

  it("refuses host routing on a dense model, and a one-graph load of a host-routed segment of several layers", async () => {
    const dir = join(workDir, "dense");
    await writeRandomCheckpoint(dir, TINY_LLAMA);
    const dense = await loadCheckpoint(dir);
    await expect(hostModel(dense, whole(dense))).rejects.toThrow(/moeExecution/);
    const checkpoint = checkpoints.get(MIXTRAL)!;
    await expect(
      SegmentModel.load(checkpoint, segmentSpec({ fromLayer: 0, toLayer: 2, moeExecution: "host" }), {
        cacheDir,
      }),
    ).rejects.toThrow(/toLayer/);
  });
});

describe("a host-routed MoE segment with expert threads", () => {
  const QWEN3 = "qwen3_moe, 8 experts, top-3, norm_topk_prob false";

  it("under a budget of a quarter of its experts decodes exactly what one thread decodes, never holds more, and loads predicted experts ahead", async () => {
    const checkpoint = checkpoints.get(QWEN3)!;
    const spec = { ...whole(checkpoint), positions: "last" as const };
    const inProcess = await hostModel(checkpoint, spec);
    const expected = await decodeLogits(inProcess, PROMPT, 12);
    const allExpertBytes = inProcess.experts.stats().allExpertBytes;
    await inProcess.release();

    const budgetBytes = Math.ceil(allExpertBytes / 4);
    const threaded = await hostModel(checkpoint, spec, { budgetBytes, expertThreads: 2 });
    const logits = await decodeLogits(threaded, PROMPT, 12);
    logits.forEach((l, i) => expect(maxAbsDiff(l, expected[i]), `step ${i}`).toBe(0));
    const stats = threaded.experts.stats();
    expect(stats.residentBytes).toBeLessThanOrEqual(budgetBytes);
    expect(stats.evictions).toBeGreaterThan(0);
    expect(stats.prefetches).toBeGreaterThan(0);
    expect(stats.prefetchHits).toBeLessThanOrEqual(stats.prefetches);
    await threaded.release();
  });

  it("takes up and lets go of experts on request, as the in-process cache does", async () => {
    const checkpoint = checkpoints.get(MIXTRAL)!;
    const layers = [0, 1, 2, 3];
    const store = await ExpertThreads.start(
      await ExpertCache.layout(checkpoint, layers, "fp32", undefined, { cacheDir }),
      2,
    );
    await store.hold(1, 2);
    await store.hold(0, 3);
    expect(store.residentExperts()).toEqual([
      [1, 2],
      [0, 3],
    ]);
    expect(store.isResident(1, 2)).toBe(true);
    await store.drop(1, 2);
    expect(store.residentExperts()).toEqual([[0, 3]]);
    const { residentBytes, misses } = store.stats();
    expect(residentBytes).toBeGreaterThan(0);
    expect(misses).toBe(0);
    await store.release();
  });

  it("fails a run whose expert will not load with an InternalError naming it and why, and goes on serving the others", async () => {
    const checkpoint = checkpoints.get(MIXTRAL)!;
    const layout = await ExpertCache.layout(checkpoint, [0], "fp32", undefined, { cacheDir });
    const garbage = join(workDir, "garbage.onnx");
    writeFileSync(garbage, "not a graph");
    layout.files = layout.files.map(([key, file]) => [
      key,
      key === "0:1" ? { ...file, path: garbage } : file,
    ]);
    const store = await ExpertThreads.start(layout, 1);
    const h = checkpoint.config.hiddenSize;
    const input = () => Float32Array.from({ length: 2 * h }, (_, i) => Math.sin(i));
    const good = await store.run(0, 0, input(), 2);
    expect(good.length).toBe(2 * h);

    const error = await store.run(0, 1, input(), 2).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InternalError);
    expect(String(error)).toMatch(/0:1.*could not be loaded/);
    expect(store.isResident(0, 1)).toBe(false);
    await expect(store.run(0, 99, input(), 2)).rejects.toThrow(/0:99/);

    expect(maxAbsDiff(await store.run(0, 0, input(), 2), good)).toBe(0);
    expect((await store.run(0, 2, input(), 2)).length).toBe(2 * h);
    await store.release();
  });
});
