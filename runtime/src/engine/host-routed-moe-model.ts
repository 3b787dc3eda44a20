/**
 * An MoE segment whose experts run outside its graphs (moeExecution `host`): a chain of one
 * graph per layer, each ending at its router, with the chosen experts run between them from
 * an ExpertCache under a memory budget, and graphs of no layers for the exits and the head.
 * It runs as a SegmentModel does (SegmentSessions drives either), so an edge agent holds an
 * MoE model bigger than its memory: attention, routers and the experts it used lately.
 *
 *   ids/hidden ─► [layer f … router] ─► experts ─► + ─► [layer f+1 … router] ─► experts ─► + ─► … ─► [exits, head]
 *                        │ residual ──────────────────┘
 *
 * The combine adds each chosen expert's weighted output in ascending expert order, rounded
 * to fp32 at each step as the in-graph sparse block's ScatterND does, so the output equals
 * the single graph's (within 1e-4: the expert's MatMuls run in a graph of their own).
 */
import { InvalidArgumentError } from "@tandem/common";
import type { ModelConfig } from "../checkpoint/model-config.ts";
import type { Checkpoint } from "../checkpoint/model-weights.ts";
import { klDivergenceRows } from "../numeric/kl-divergence.ts";
import {
  attendingAdapterLayers,
  attendingExits,
  headBits,
  segmentExits,
  segmentSpec,
  type SegmentSpec,
  validateSegmentSpec,
} from "../graph/segment-spec.ts";
import { ExpertCache, type ExpertCacheOptions, type ExpertStore } from "./expert-cache.ts";
import { RouterPredictor } from "./expert-predictor.ts";
import { ExpertThreads } from "./expert-threads.ts";
import {
  type ExitOutput,
  type MoeRouting,
  SegmentModel,
  type SegmentModelOptions,
  type SegmentRunInput,
  type SegmentRunner,
  type SegmentRunOutput,
} from "./segment-model.ts";

/** Runs one expert on rows of its input ([rows, hidden] → [rows, hidden], unweighted). */
export type ExpertRunner = (
  layer: number,
  expert: number,
  input: Float32Array,
  rows: number,
) => Promise<Float32Array>;

export interface HostRoutedMoeOptions extends SegmentModelOptions {
  /** The expert cache: budget, per-expert formats. @default every expert resident once used */
  experts?: ExpertCacheOptions;
  /**
   * Where experts run, given the local cache: e.g. on the workers an expert map places
   * them (expert parallelism). @default the local cache
   */
  expertRunner?: (local: ExpertStore) => ExpertRunner;
}

export class HostRoutedMoeModel implements SegmentRunner {
  readonly config: ModelConfig;
  readonly weightsHash: string;
  readonly exitLayers: number[];

  private constructor(
    readonly spec: SegmentSpec,
    checkpoint: Checkpoint,
    /** One per layer of the segment, in order. */
    private readonly layers: SegmentModel[],
    /** Per exit layer (the final head's is numLayers): the graph that evaluates it. */
    private readonly heads: Map<number, SegmentModel>,
    readonly experts: ExpertStore,
    private readonly runExpert: ExpertRunner,
    /** With expert threads: guesses each next layer's experts, which load meanwhile. */
    private readonly predictor: RouterPredictor | undefined,
  ) {
    this.config = checkpoint.config;
    this.weightsHash = checkpoint.weightsHash;
    this.exitLayers = segmentExits(spec, checkpoint.config).map((e) => e.afterLayer);
  }

  static async load(
    checkpoint: Checkpoint,
    spec: SegmentSpec,
    options: HostRoutedMoeOptions = {},
  ): Promise<HostRoutedMoeModel> {
    validateSegmentSpec(spec, checkpoint.config);
    if (spec.moeExecution !== "host")
      throw new InvalidArgumentError(
        "moeExecution",
        `a host-routed model needs "host", got ${spec.moeExecution}`,
      );
    const piece = (partial: Partial<SegmentSpec> & Pick<SegmentSpec, "fromLayer" | "toLayer">) =>
      segmentSpec({
        moeExecution: "host",
        weightFormat: spec.weightFormat,
        quantBlockSize: spec.quantBlockSize,
        positions: spec.positions,
        logits: spec.logits,
        ...partial,
      });
    if (
      attendingExits(spec, checkpoint.config, attendingAdapterLayers(checkpoint.weights.exitAdapters))
        .length > 0
    )
      throw new InvalidArgumentError(
        "exit_adapters",
        "an exit adapter that attends needs its exit in the graph of the layers below it; a host-routed MoE model runs its exits apart",
      );
    // One session per layer and per expert, each with its own thread pool: none may spin.
    options = { ...options, spinning: false };
    const layers: SegmentModel[] = [];
    const heads = new Map<number, SegmentModel>();
    let experts: ExpertStore | undefined;
    try {
      for (let layer = spec.fromLayer; layer < spec.toLayer; layer++)
        layers.push(
          await SegmentModel.load(checkpoint, piece({ fromLayer: layer, toLayer: layer + 1 }), options),
        );
      // Each exit is a graph of its own, so the KL divergence between consecutive early exits
      // is computed here from their logits (run()), not in a graph.
      // (The final head reports no KL, so it needs no logits for one.)
      const exits = segmentExits(spec, checkpoint.config);
      const early = (at: number) => at < checkpoint.config.numLayers;
      const klFromLogits = exits.filter((e) => early(e.afterLayer)).length > 1;
      for (const exit of exits) {
        const at = exit.afterLayer;
        const logits = spec.logits || (klFromLogits && early(at));
        heads.set(
          at,
          await SegmentModel.load(
            checkpoint,
            // A head piece has exits only: it takes the whole spec's head bits (int4: 8 for
            // the final head by default), not an exits-only piece's default.
            piece({ fromLayer: at, toLayer: at, exits: [exit], logits, int4HeadBits: headBits(spec) }),
            options,
          ),
        );
      }
      const layerNumbers = Array.from(
        { length: spec.toLayer - spec.fromLayer },
        (_, i) => spec.fromLayer + i,
      );
      const expertOptions: ExpertCacheOptions = {
        threads: options.threads,
        cacheDir: options.cacheDir,
        ...options.experts,
      };
      const layout = await ExpertCache.layout(
        checkpoint,
        layerNumbers,
        spec.weightFormat,
        spec.quantBlockSize,
        expertOptions,
      );
      // Threads help only when experts must be loaded while decoding: with room for all of
      // them, each run's round trip to a thread (~0.15 ms here) would be all they add.
      const allBytes = layout.files.reduce((sum, [, file]) => sum + file.bytes, 0);
      const expertThreads = layout.budgetBytes < allBytes ? (expertOptions.expertThreads ?? 0) : 0;
      experts =
        expertThreads > 0 ? await ExpertThreads.start(layout, expertThreads) : new ExpertCache(layout);
      const predictor = expertThreads > 0 ? new RouterPredictor(checkpoint, layerNumbers) : undefined;
      const runner: ExpertRunner =
        options.expertRunner?.(experts) ??
        ((layer, expert, input, rows) => experts!.run(layer, expert, input, rows));
      return new HostRoutedMoeModel(spec, checkpoint, layers, heads, experts, runner, predictor);
    } catch (error) {
      await Promise.all([...layers, ...heads.values()].map((m) => m.release()));
      await experts?.release();
      throw error;
    }
  }

  get layerCount(): number {
    return this.spec.toLayer - this.spec.fromLayer;
  }

  /** Its layers' caches only: no exit of it attends (load refuses one). */
  get kvEntryCount(): number {
    return this.layerCount;
  }

  async run(input: SegmentRunInput): Promise<SegmentRunOutput> {
    const { spec } = this;
    const { batch, seq, kv, pastLengths, active } = input;
    let hidden = input.hidden;
    const taps = new Map<number, Float32Array>();
    const exits: ExitOutput[] = [];
    for (let i = 0; i < this.layers.length; i++) {
      const out = await this.layers[i].run({
        batch,
        seq,
        ids: i === 0 ? input.ids : undefined,
        hidden: i === 0 && input.ids ? undefined : hidden,
        pastLengths,
        kv: { rows: kv.rows, capacity: kv.capacity, layers: [kv.layers[i]] },
        active,
      });
      hidden = await this.combine(out.moe!, batch, seq, active);
      const after = spec.fromLayer + i + 1;
      if (this.predictor?.covers(after))
        this.experts.prefetch(after, this.predictor.predict(after, hidden, activeRows(batch, seq, active)));
      if (spec.hiddenTaps.includes(after)) taps.set(after, hidden);
      const head = this.heads.get(after);
      if (head) {
        const headOut = await head.run({
          batch,
          seq,
          headPositions: input.headPositions,
          hidden,
          pastLengths,
          kv: { rows: kv.rows, capacity: kv.capacity, layers: [] },
          active,
        });
        exits.push(...headOut.exits);
      }
    }
    return { hidden: spec.outputHidden ? hidden : undefined, taps, exits: this.withKlPrevious(exits) };
  }

  /** Each early exit's kl_previous, as one graph would give it; logits only when the spec asks. */
  private withKlPrevious(exits: ExitOutput[]): ExitOutput[] {
    return exits.map((exit, i) => {
      const previous = exits[i - 1] as ExitOutput | undefined;
      const klPrevious =
        previous?.logits && exit.logits && exit.afterLayer < this.config.numLayers
          ? klDivergenceRows(exit.logits, previous.logits, this.config.vocabSize)
          : undefined;
      return { ...exit, klPrevious, logits: this.spec.logits ? exit.logits : undefined };
    });
  }

  /**
   * residual + Σ weight · expert(input) over each position's chosen experts: each expert
   * runs once on the rows routed to it (rows of inactive batch rows are left out).
   */
  private async combine(
    moe: MoeRouting,
    batch: number,
    seq: number,
    active: boolean[] | undefined,
  ): Promise<Float32Array> {
    const h = this.config.hiddenSize;
    const positions = batch * seq;
    const k = moe.choices.length / positions;
    const routed = new Map<number, { rows: number[]; weights: number[] }>();
    for (let row = 0; row < positions; row++) {
      if (active?.[Math.floor(row / seq)] === false) continue;
      for (let j = 0; j < k; j++) {
        const expert = Number(moe.choices[row * k + j]);
        let entry = routed.get(expert);
        if (!entry) routed.set(expert, (entry = { rows: [], weights: [] }));
        entry.rows.push(row);
        entry.weights.push(moe.weights[row * k + j]);
      }
    }
    const mixed = new Float32Array(positions * h);
    const experts = [...routed.keys()].sort((a, b) => a - b);
    // All at once (remote experts answer in parallel), combined in ascending order.
    const outputs = await Promise.all(
      experts.map((expert) => {
        const { rows } = routed.get(expert)!;
        const input = new Float32Array(rows.length * h);
        rows.forEach((row, r) => input.set(moe.input.subarray(row * h, (row + 1) * h), r * h));
        return this.runExpert(moe.layer, expert, input, rows.length);
      }),
    );
    for (const [i, expert] of experts.entries()) {
      const { rows, weights } = routed.get(expert)!;
      const output = outputs[i];
      rows.forEach((row, r) => {
        const weight = weights[r];
        const base = row * h;
        const outBase = r * h;
        // Rounded to fp32 before the add, as the graph's Mul then ScatterND add.
        for (let d = 0; d < h; d++) mixed[base + d] += Math.fround(weight * output[outBase + d]);
      });
    }
    const hidden = new Float32Array(positions * h);
    for (let i = 0; i < hidden.length; i++) hidden[i] = moe.residual[i] + mixed[i];
    return hidden;
  }

  takeExpertCounts(): number[] | undefined {
    return this.layers.flatMap((layer) => layer.takeExpertCounts() ?? []);
  }

  async release(): Promise<void> {
    await Promise.all([...this.layers, ...this.heads.values()].map((m) => m.release()));
    await this.experts.release();
  }
}

/** The rows ([batch·seq]) of the batch rows that run this step. */
function activeRows(batch: number, seq: number, active: boolean[] | undefined): number[] {
  const rows: number[] = [];
  for (let b = 0; b < batch; b++) {
    if (active?.[b] === false) continue;
    for (let t = 0; t < seq; t++) rows.push(b * seq + t);
  }
  return rows;
}
