/**
 * Experts held and run by threads of their own, under one memory budget, least recently
 * used out (as ExpertCache), for a device whose experts do not all fit in memory.
 *
 * onnxruntime-node loads and runs a session synchronously in the thread that asks, so in
 * ExpertCache a load stops everything. Here each expert's session lives in one of a few
 * worker threads (expert-host-worker.ts) and this class, in the main thread, keeps the
 * policy: which experts are loaded, in which thread, which to drop. That buys two things:
 *
 * - the experts a step misses load in parallel, one per thread (a token routed to k
 *   experts that are all on disk waits for about one load, not k);
 * - `prefetch`: the model predicts the next layer's experts (expert-predictor.ts) and they
 *   load while the main thread runs that layer's attention and router (EdgeMoE's and
 *   ExpertFlow's idea). A wrong guess costs a thread's time, so a prefetch loads at most
 *   half the budget, and never in place of the predicted layer's own experts.
 *
 * A thread works through its commands in the order they were sent, so a run sent after a
 * load finds its session and a drop sent after a run waits for it: the main thread never
 * waits for a load before sending the run that needs it.
 */
import { createRequire } from "node:module";
import { extname } from "node:path";
import { pathToFileURL } from "node:url";
import { Worker } from "node:worker_threads";
import { InternalError } from "@tandem/common";
import type { ExpertCacheLayout, ExpertCacheStats, ExpertFile, ExpertStore } from "./expert-cache.ts";
import { evictionOrder, layersOf } from "./expert-eviction.ts";
import { expertKey, expertPairs, layerOfKey } from "./expert-key.ts";

/** What the main thread asks of an expert thread. */
export type ExpertHostCommand =
  | { id: number; kind: "load"; key: string; path: string; threads: number }
  | { id: number; kind: "run"; key: string; input: Float32Array; rows: number; hidden: number }
  | { id: number; kind: "drop"; key: string }
  | { id: number; kind: "release" };

/** An expert thread's answer to the command with the same id. */
export type ExpertHostReply =
  | { id: number; kind: "done" }
  | { id: number; kind: "output"; output: Float32Array }
  | { id: number; kind: "error"; message: string };

interface HostThread {
  index: number;
  worker: Worker;
  /** Commands sent and not answered yet. */
  queued: number;
  /** Loads among them: a thread's time goes to loads, so new loads go where they are fewest. */
  loading: number;
  /** Set when the thread has stopped; nothing is sent to it again. */
  failure?: Error;
}

interface ResidentExpert {
  thread: HostThread;
  bytes: number;
  /** Loaded by a prefetch and not run since. */
  prefetched: boolean;
  /** Settles when the thread has answered the load. */
  load: Promise<void>;
}

interface PendingCommand {
  thread: HostThread;
  resolve(reply: ExpertHostReply): void;
  reject(error: Error): void;
}

/** The share of the budget one prefetch may load: the rest keeps experts in use. */
const PREFETCH_BUDGET_SHARE = 0.5;

/**
 * A worker running the host program beside this module, in the same form: the compiled
 * build, a program's bundle (bundle-programs.mjs writes the host next to it), or the
 * TypeScript sources under the tests, loaded through tsx (registered in the thread first:
 * a worker does not take `--import` hooks from its execArgv).
 */
function startHostWorker(): Worker {
  const extension = extname(new URL(import.meta.url).pathname);
  const url = new URL(`./expert-host-worker${extension}`, import.meta.url);
  if (extension !== ".ts") return new Worker(url);
  // tsx's ES module API (its CommonJS one misplaces the hooks when imported), found beside
  // the path `require` resolves.
  const tsx = createRequire(import.meta.url)
    .resolve("tsx/esm/api")
    .replace(/\.cjs$/, ".mjs");
  const bootstrap = `import(${JSON.stringify(pathToFileURL(tsx).href)}).then((tsx) => { tsx.register(); return import(${JSON.stringify(url.href)}); });`;
  return new Worker(bootstrap, { eval: true, execArgv: [...process.execArgv, "--conditions=development"] });
}

export class ExpertThreads implements ExpertStore {
  /** Loaded experts in least-recently-used-first order (a Map keeps insertion order). */
  private readonly resident = new Map<string, ResidentExpert>();
  private residentBytes = 0;
  private readonly pending = new Map<number, PendingCommand>();
  private nextId = 1;
  private readonly counters = { hits: 0, misses: 0, evictions: 0, prefetches: 0, prefetchHits: 0 };
  private readonly files: Map<string, ExpertFile>;
  private readonly allExpertBytes: number;
  /** The layers of the experts, in the order a step runs them. */
  private readonly layers: number[];

  private constructor(
    private readonly layout: ExpertCacheLayout,
    private readonly threads: HostThread[],
  ) {
    this.files = new Map(layout.files);
    this.layers = layersOf(this.files.keys());
    this.allExpertBytes = [...this.files.values()].reduce((sum, file) => sum + file.bytes, 0);
    for (const thread of threads) {
      thread.worker.on("message", (reply: ExpertHostReply) => this.answer(thread, reply));
      thread.worker.on("error", (error) => this.stop(thread, error));
      thread.worker.on("exit", (code) =>
        this.stop(thread, new InternalError(`expert thread ${thread.index} exited (code ${code})`)),
      );
      thread.worker.unref();
    }
  }

  /** Starts `count` threads (≥ 1) for the experts of `layout`; loads none of them. */
  static async start(layout: ExpertCacheLayout, count: number): Promise<ExpertThreads> {
    if (!(Number.isInteger(count) && count >= 1))
      throw new InternalError(`expert threads: need at least one, got ${count}`);
    const workers = Array.from({ length: count }, startHostWorker);
    try {
      await Promise.all(
        workers.map(
          (worker) =>
            new Promise<void>((resolve, reject) => {
              worker.once("online", resolve);
              worker.once("error", reject);
            }),
        ),
      );
    } catch (error) {
      await Promise.all(workers.map((w) => w.terminate()));
      throw new InternalError(`expert threads did not start: ${(error as Error).message}`);
    }
    const threads = workers.map((worker, index) => ({ index, worker, queued: 0, loading: 0 }));
    return new ExpertThreads(layout, threads);
  }

  run(layer: number, expert: number, input: Float32Array, rows: number): Promise<Float32Array> {
    try {
      return this.runNow(layer, expert, input, rows);
    } catch (error) {
      return Promise.reject(error as Error);
    }
  }

  private runNow(layer: number, expert: number, input: Float32Array, rows: number): Promise<Float32Array> {
    const key = expertKey(layer, expert);
    let held = this.resident.get(key);
    if (held) {
      this.counters.hits++;
      if (held.prefetched) this.counters.prefetchHits++;
      held.prefetched = false;
      this.resident.delete(key);
      this.resident.set(key, held);
    } else {
      held = this.load(key, false);
      this.counters.misses++;
    }
    // The input moves to the thread when it owns its whole buffer (the model's are made
    // for the call); a view into a larger buffer is copied.
    const own = input.byteOffset === 0 && input.byteLength === input.buffer.byteLength;
    const sent = own ? input : input.slice();
    return this.send(held.thread, { kind: "run", key, input: sent, rows, hidden: this.layout.hiddenSize }, [
      sent.buffer as ArrayBuffer,
    ]).then((reply) => (reply as { output: Float32Array }).output);
  }

  /**
   * Loads the predicted experts of `layer` that are not loaded, most likely first, into free
   * budget or in place of the experts whose layer the step reaches last (the layer just
   * run first), never of `layer`'s own: a wrong guess must not push out the expert the
   * router then chooses. Stops at the first that finds no room.
   */
  prefetch(layer: number, experts: readonly number[]): void {
    const predicted = new Set(experts.map((expert) => expertKey(layer, expert)));
    let bytes = 0;
    for (const key of predicted) {
      const held = this.resident.get(key);
      if (held) {
        // Most recently used now: the next run of the layer wants it.
        this.resident.delete(key);
        this.resident.set(key, held);
        continue;
      }
      const file = this.files.get(key);
      if (!file) return;
      if (bytes + file.bytes > PREFETCH_BUDGET_SHARE * this.layout.budgetBytes) return;
      while (this.residentBytes + file.bytes > this.layout.budgetBytes) {
        const others = [...this.resident.keys()].filter((other) => layerOfKey(other) !== layer);
        const victimKey = evictionOrder(others, layer, this.layers)[0];
        if (victimKey === undefined) return;
        this.counters.evictions++;
        void this.unload(victimKey, this.resident.get(victimKey)!).catch(() => undefined);
      }
      bytes += file.bytes;
      this.counters.prefetches++;
      this.load(key, true);
    }
  }

  async hold(layer: number, expert: number): Promise<void> {
    const key = expertKey(layer, expert);
    if (this.resident.has(key)) return;
    await this.load(key, false).load;
  }

  async drop(layer: number, expert: number): Promise<void> {
    const key = expertKey(layer, expert);
    const held = this.resident.get(key);
    if (!held) return;
    await this.unload(key, held);
  }

  residentExperts(): [number, number][] {
    return expertPairs(this.resident.keys());
  }

  isResident(layer: number, expert: number): boolean {
    return this.resident.has(expertKey(layer, expert));
  }

  stats(): ExpertCacheStats {
    return {
      ...this.counters,
      residentBytes: this.residentBytes,
      budgetBytes: this.layout.budgetBytes,
      allExpertBytes: this.allExpertBytes,
    };
  }

  async release(): Promise<void> {
    this.resident.clear();
    this.residentBytes = 0;
    await Promise.all(
      this.threads
        .filter((thread) => !thread.failure)
        .map((thread) => this.send(thread, { kind: "release" }).catch(() => undefined)),
    );
    await Promise.all(this.threads.map((thread) => thread.worker.terminate()));
  }

  /**
   * Makes room, then sends the load to the live thread with the fewest loads queued (then
   * the fewest commands): the expert counts as loaded from now on, since every later
   * command for it goes to that thread after the load.
   */
  private load(key: string, prefetched: boolean): ResidentExpert {
    const file = this.fileOf(key);
    while (this.residentBytes + file.bytes > this.layout.budgetBytes && this.resident.size > 0) {
      const victimKey = this.resident.keys().next().value!;
      this.counters.evictions++;
      // Its runs sent before still run: the thread takes the drop after them.
      void this.unload(victimKey, this.resident.get(victimKey)!).catch(() => undefined);
    }
    const thread = this.liveThreads().sort((a, b) => a.loading - b.loading || a.queued - b.queued)[0];
    thread.loading++;
    const load = this.send(thread, { kind: "load", key, path: file.path, threads: this.layout.threads })
      .then(() => undefined)
      .finally(() => thread.loading--);
    const held: ResidentExpert = { thread, bytes: file.bytes, prefetched, load };
    this.resident.set(key, held);
    this.residentBytes += file.bytes;
    // A load that failed leaves nothing behind; the run sent after it fails with it.
    load.catch(() => {
      if (this.resident.get(key) === held) {
        this.resident.delete(key);
        this.residentBytes -= held.bytes;
      }
    });
    return held;
  }

  private async unload(key: string, held: ResidentExpert): Promise<void> {
    if (this.resident.get(key) === held) {
      this.resident.delete(key);
      this.residentBytes -= held.bytes;
    }
    if (!held.thread.failure) await this.send(held.thread, { kind: "drop", key });
  }

  private liveThreads(): HostThread[] {
    const live = this.threads.filter((thread) => !thread.failure);
    if (live.length === 0)
      throw new InternalError(`expert threads stopped: ${this.threads[0].failure?.message}`);
    return live;
  }

  private fileOf(key: string): ExpertFile {
    const file = this.files.get(key);
    if (!file) throw new InternalError(`expert ${key} (layer:expert) is not in this cache`);
    return file;
  }

  private send(
    thread: HostThread,
    command: DistributiveOmit<ExpertHostCommand, "id">,
    transfer: ArrayBuffer[] = [],
  ): Promise<ExpertHostReply> {
    if (thread.failure) return Promise.reject(thread.failure);
    const id = this.nextId++;
    return new Promise<ExpertHostReply>((resolve, reject) => {
      this.pending.set(id, { thread, resolve, reject });
      // A thread with work keeps the process alive; an idle one does not.
      if (thread.queued++ === 0) thread.worker.ref();
      thread.worker.postMessage({ ...command, id }, transfer);
    });
  }

  private answer(thread: HostThread, reply: ExpertHostReply): void {
    const pending = this.pending.get(reply.id);
    if (!pending) return;
    this.pending.delete(reply.id);
    if (--thread.queued === 0) thread.worker.unref();
    if (reply.kind === "error")
      pending.reject(new InternalError(`expert thread ${thread.index}: ${reply.message}`));
    else pending.resolve(reply);
  }

  /** A thread that failed or exited: its commands fail, its experts count as not loaded. */
  private stop(thread: HostThread, error: Error): void {
    if (thread.failure) return;
    thread.failure = error;
    for (const [id, pending] of this.pending)
      if (pending.thread === thread) {
        this.pending.delete(id);
        pending.reject(error);
      }
    for (const [key, held] of this.resident)
      if (held.thread === thread) {
        this.resident.delete(key);
        this.residentBytes -= held.bytes;
      }
  }
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
