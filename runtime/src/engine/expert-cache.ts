/**
 * The experts of host-routed MoE layers (EdgeMoE-style offload): each expert is a graph of
 * its own on disk (graph-cache.ts, built once), loaded into an ONNX Runtime session when a
 * token is routed to it and kept under a memory budget, least recently used first out. A
 * device runs an MoE model whose experts do not all fit: what it holds is the router,
 * attention and the experts it used lately.
 *
 * An expert's bytes are its weights file's size in its format, what its session holds
 * (ONNX Runtime's prepacked copy of fp32 weights replaces the file's, it does not add to
 * it once the file is closed). Loads and runs are synchronous inside onnxruntime-node: in
 * this class a load costs the step that needs it. With `expertThreads`, a host-routed model
 * keeps its experts in ExpertThreads instead, where they load in parallel and ahead of need.
 */
import { statSync } from "node:fs";
import { join, dirname } from "node:path";
import { InternalError, InvalidArgumentError, type Logger } from "@tandem/common";
import * as ort from "onnxruntime-node";
import type { Checkpoint } from "../checkpoint/model-weights.ts";
import { ensureExpertGraph, SEGMENT_WEIGHTS_FILE } from "../graph/graph-cache.ts";
import { GRAPH_IO } from "../graph/graph-io-names.ts";
import { expertKey, expertPairs } from "./expert-key.ts";
import { createExpertSession } from "./expert-session.ts";
import { DEFAULT_WEIGHT_FORMAT, WEIGHT_FORMATS, type WeightFormat } from "../graph/segment-spec.ts";

/**
 * glibc raises its mmap threshold to the size of each mmapped block a process frees, so
 * after the first expert is dropped the next ones are allocated in the heap, and a dropped
 * expert's memory stays in the process (measured: 8 experts of 3 MB dropped, RSS unchanged).
 * A fixed threshold, set in the environment before the process starts, keeps large blocks
 * mmapped and returned when freed. At 128 KB it also mapped and unmapped blocks of every
 * run afresh: a dense Llama-3.2-1B-shaped int4 model (two threads, huge pages) faulted in
 * ~12,000 pages per 128-token prefill and ~200 per decode step, and prefilled in 876–931 ms
 * against 733–749 without it. At 512 KB its runs fault no more pages than without it
 * (after the first prefill, 1–20 per prefill against 0–359 without, 0–1 per decode step
 * in both; 110M alike) and prefill in 738–744 ms, while an expert's weights still go
 * back when dropped where its matrices are 512 KB or more (Qwen3-30B-A3B's 768 × 2048 in
 * int4 is 0.8 MB; Granite-3.0-1B-A400M's 512 × 1024 is 0.25 MB and stays in the heap, for
 * the experts loaded after it to reuse). It is set only for processes that drop experts
 * (the chart's expertParallel workers; the edge's systemd unit has it commented out for
 * expertBudgetMb).
 */
export const FREED_MEMORY_ENV = { name: "MALLOC_MMAP_THRESHOLD_", value: "524288" } as const;

/**
 * Warns, for a program about to drop experts, when they would not give their memory back
 * (FREED_MEMORY_ENV unset); `howToSet` says where a deployment sets it.
 */
export function warnUnlessFreedMemoryReturned(
  log: Logger,
  howToSet: string,
  env: NodeJS.ProcessEnv = process.env,
): void {
  if (env[FREED_MEMORY_ENV.name] !== undefined) return;
  log.warn(
    { env: `${FREED_MEMORY_ENV.name}=${FREED_MEMORY_ENV.value}` },
    `experts this process drops will stay in its memory: start it with this variable (${howToSet})`,
  );
}

export interface ExpertCacheOptions {
  /**
   * Bytes of expert weights kept loaded; beyond it the least recently used experts are
   * dropped (with expertThreads, a prefetch drops by expert-eviction.ts). Must hold a layer's k experts. @default Infinity (every expert stays once loaded)
   */
  budgetBytes?: number;
  /** Each expert's weight format (e.g. by activation frequency). @default the segment's format */
  formatOf?: (layer: number, expert: number) => WeightFormat;
  /** Threads ONNX Runtime uses inside an expert's operators. @default 1 */
  threads?: number;
  /** Where built graphs are cached. @default defaultGraphCacheDir() */
  cacheDir?: string;
  /**
   * Threads of their own that hold and run the experts (ExpertThreads): a step's missing
   * experts load in parallel, and a host-routed model's predictions of its next layer's
   * experts load ahead of need. 0: the experts load and run in the calling thread, and a
   * load stops it. A host-routed model whose budget holds all its experts uses none.
   * @default 0
   */
  expertThreads?: number;
}

export interface ExpertCacheStats {
  /** Expert runs whose expert was loaded already. */
  hits: number;
  /** Expert runs that had to load their expert first. */
  misses: number;
  evictions: number;
  residentBytes: number;
  budgetBytes: number;
  /** Bytes of every expert of the cached layers, in their formats. */
  allExpertBytes: number;
  /** Experts loaded ahead of need (prefetch). */
  prefetches: number;
  /** Runs that found their expert loaded by a prefetch and not run since: correct predictions. */
  prefetchHits: number;
}

/**
 * What a model asks of its experts, wherever they live: in this thread (ExpertCache) or in
 * a thread of their own (ExpertThread). `residentExperts`, `isResident` and `stats` answer
 * at once, from the last state the store saw.
 */
export interface ExpertStore {
  /** The expert's output, unweighted, for `rows` rows of its input ([rows, hidden]). */
  run(layer: number, expert: number, input: Float32Array, rows: number): Promise<Float32Array>;
  /**
   * A hint that these experts of `layer` will be run soon, most likely first: a store that
   * can load them without delaying the caller does; the others ignore it.
   */
  prefetch(layer: number, experts: readonly number[]): void;
  /** Loads the expert now if it is not loaded (making room as a run would). */
  hold(layer: number, expert: number): Promise<void>;
  /** Unloads the expert if it is loaded; a later run loads it again. */
  drop(layer: number, expert: number): Promise<void>;
  /** The loaded experts, as [layer, expert] pairs, least recently used first. */
  residentExperts(): [number, number][];
  isResident(layer: number, expert: number): boolean;
  stats(): ExpertCacheStats;
  release(): Promise<void>;
}

export interface ExpertFile {
  path: string;
  bytes: number;
}

/** Everything an ExpertCache is made from: plain data, so another thread can make one too. */
export interface ExpertCacheLayout {
  /** Each expert's graph, by `layer:expert`. */
  files: [string, ExpertFile][];
  hiddenSize: number;
  budgetBytes: number;
  threads: number;
}

export class ExpertCache implements ExpertStore {
  /** Loaded experts in least-recently-used-first order (a Map keeps insertion order). */
  private readonly resident = new Map<string, ort.InferenceSession>();
  private residentBytes = 0;
  private tail: Promise<void> = Promise.resolve();
  private readonly counters = { hits: 0, misses: 0, evictions: 0, prefetches: 0, prefetchHits: 0 };
  /** Bytes of every expert the cache may load, in their formats. */
  private readonly allExpertBytes: number;
  private readonly files: Map<string, ExpertFile>;
  private readonly hiddenSize: number;
  private readonly budgetBytes: number;
  private readonly threads: number;

  /** A cache of graphs built already (ExpertCache.layout): loads none of them. */
  constructor(layout: ExpertCacheLayout) {
    this.files = new Map(layout.files);
    this.hiddenSize = layout.hiddenSize;
    this.budgetBytes = layout.budgetBytes;
    this.threads = layout.threads;
    this.allExpertBytes = [...this.files.values()].reduce((sum, file) => sum + file.bytes, 0);
  }

  /**
   * Builds (once, on disk) the graphs of every expert of `layers` and loads none of them.
   * Throws InvalidArgumentError when the budget cannot hold the k experts a token needs.
   */
  static async open(
    checkpoint: Checkpoint,
    layers: number[],
    defaultFormat: WeightFormat = DEFAULT_WEIGHT_FORMAT,
    quantBlockSize: number | undefined,
    options: ExpertCacheOptions = {},
  ): Promise<ExpertCache> {
    return new ExpertCache(
      await ExpertCache.layout(checkpoint, layers, defaultFormat, quantBlockSize, options),
    );
  }

  /**
   * Builds (once, on disk) the graphs of every expert of `layers`, and says what a cache of
   * them is made from. Throws InvalidArgumentError when the budget cannot hold the k
   * experts a token needs.
   */
  static async layout(
    checkpoint: Checkpoint,
    layers: number[],
    defaultFormat: WeightFormat = DEFAULT_WEIGHT_FORMAT,
    quantBlockSize: number | undefined,
    options: ExpertCacheOptions = {},
  ): Promise<ExpertCacheLayout> {
    const { numExperts, numExpertsPerToken } = checkpoint.config;
    if (!numExperts) throw new InternalError("an expert cache needs an MoE model");
    const budgetBytes = options.budgetBytes ?? Infinity;
    if (!(budgetBytes > 0)) throw new InvalidArgumentError("budgetBytes", `must be > 0, got ${budgetBytes}`);
    const files = new Map<string, ExpertFile>();
    for (const layer of layers) {
      for (let expert = 0; expert < numExperts; expert++) {
        const weightFormat = options.formatOf?.(layer, expert) ?? defaultFormat;
        if (!WEIGHT_FORMATS.includes(weightFormat))
          throw new InvalidArgumentError(
            "formatOf",
            `expert ${layer}:${expert}: unknown format ${weightFormat}`,
          );
        const path = await ensureExpertGraph(
          checkpoint,
          { layer, expert, weightFormat, quantBlockSize },
          options.cacheDir,
        );
        const bytes = statSync(join(dirname(path), SEGMENT_WEIGHTS_FILE)).size;
        files.set(expertKey(layer, expert), { path, bytes });
      }
    }
    const k = numExpertsPerToken ?? 2;
    const largest = [...files.values()].map((f) => f.bytes).sort((a, b) => b - a);
    const needed = largest.slice(0, k).reduce((a, b) => a + b, 0);
    if (budgetBytes < needed)
      throw new InvalidArgumentError(
        "budgetBytes",
        `must hold the ${k} experts a token is routed to (${needed} bytes), got ${budgetBytes}`,
      );
    return {
      files: [...files],
      hiddenSize: checkpoint.config.hiddenSize,
      budgetBytes,
      threads: options.threads ?? 1,
    };
  }

  /** The expert's output, unweighted, for `rows` rows of its input ([rows, hidden]). */
  run(layer: number, expert: number, input: Float32Array, rows: number): Promise<Float32Array> {
    return this.serialized(async () => {
      const session = await this.acquire(layer, expert);
      const results = await session.run({
        [GRAPH_IO.expertIn]: new ort.Tensor("float32", input, [rows, this.hiddenSize]),
      });
      return results[GRAPH_IO.expertOut].data as Float32Array;
    });
  }

  /**
   * Ignored: in this thread a load ahead of need would delay the caller as much as the load
   * at need (ExpertThreads act on it).
   */
  prefetch(): void {
    return;
  }

  /**
   * Loads the expert now if it is not loaded (as a run would, making room the same way):
   * a worker taking up the experts an expert map gives it before tokens arrive for them.
   */
  hold(layer: number, expert: number): Promise<void> {
    return this.serialized(async () => {
      if (!this.resident.has(expertKey(layer, expert))) await this.load(layer, expert);
    });
  }

  /** Unloads the expert if it is loaded; a later run loads it again. */
  drop(layer: number, expert: number): Promise<void> {
    return this.serialized(async () => {
      const key = expertKey(layer, expert);
      const session = this.resident.get(key);
      if (!session) return;
      this.resident.delete(key);
      this.residentBytes -= this.fileOf(layer, expert).bytes;
      await session.release();
    });
  }

  /** The loaded experts, as [layer, expert] pairs, least recently used first. */
  residentExperts(): [number, number][] {
    return expertPairs(this.resident.keys());
  }

  /** Whether the expert is loaded now. */
  isResident(layer: number, expert: number): boolean {
    return this.resident.has(expertKey(layer, expert));
  }

  stats(): ExpertCacheStats {
    return {
      ...this.counters,
      residentBytes: this.residentBytes,
      budgetBytes: this.budgetBytes,
      allExpertBytes: this.allExpertBytes,
    };
  }

  release(): Promise<void> {
    return this.serialized(() => this.releaseNow());
  }

  /**
   * Runs `operation` after every one before it: a load or an eviction between another
   * caller's lookup and its run would release a session under it.
   */
  private serialized<T>(operation: () => Promise<T>): Promise<T> {
    const result = this.tail.then(operation);
    this.tail = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }

  private async releaseNow(): Promise<void> {
    const sessions = [...this.resident.values()];
    this.resident.clear();
    this.residentBytes = 0;
    await Promise.all(sessions.map((s) => s.release()));
  }

  private fileOf(layer: number, expert: number): ExpertFile {
    const file = this.files.get(expertKey(layer, expert));
    if (!file) throw new InternalError(`expert ${expert} of layer ${layer} is not in this cache`);
    return file;
  }

  /** The expert's session, loaded (after making room) if it is not; now most recently used. */
  private async acquire(layer: number, expert: number): Promise<ort.InferenceSession> {
    const key = expertKey(layer, expert);
    const loaded = this.resident.get(key);
    if (loaded) {
      this.counters.hits++;
      this.resident.delete(key);
      this.resident.set(key, loaded);
      return loaded;
    }
    this.counters.misses++;
    return this.load(layer, expert);
  }

  /** Loads an expert that is not resident, evicting the least recently used to make room. */
  private async load(layer: number, expert: number): Promise<ort.InferenceSession> {
    const key = expertKey(layer, expert);
    const file = this.fileOf(layer, expert);
    while (this.residentBytes + file.bytes > this.budgetBytes && this.resident.size > 0) {
      const victimKey = this.resident.keys().next().value!;
      const victim = this.resident.get(victimKey)!;
      this.resident.delete(victimKey);
      this.residentBytes -= this.files.get(victimKey)!.bytes;
      this.counters.evictions++;
      await victim.release();
    }
    const session = await createExpertSession(file.path, this.threads);
    this.resident.set(key, session);
    this.residentBytes += file.bytes;
    return session;
  }
}
