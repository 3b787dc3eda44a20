/**
 * llama.cpp, through node-llama-cpp's prebuilt CPU build, as the runtime benchmark's speed
 * anchor: loads a GGUF file on the CPU with a given number of threads and runs token ids
 * through it greedily, timing prefill and decode the way runtime.bench.ts times Tandem's
 * engine (warm-up first; prefill = the prompt in one call up to the first generated token;
 * decode = one call per further token).
 *
 * node-llama-cpp is no dependency of any workspace: tools/llama-cpp/ensure-node-llama-cpp.sh
 * installs it into the repository's .cache and this module imports it from there by path,
 * so only the few calls used here are typed (NodeLlamaCpp below).
 */
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { REPO_ROOT } from "../bench-paths.ts";
import { type PrefillDecodeTiming, timePrefillDecode } from "../prefill-decode-timing.ts";

export const ENSURE_NODE_LLAMA_CPP = join(REPO_ROOT, "tools", "llama-cpp", "ensure-node-llama-cpp.sh");

/** Installs node-llama-cpp when missing (npm registry only) and returns its package directory. */
export function ensureNodeLlamaCpp(): string {
  return execFileSync("bash", [ENSURE_NODE_LLAMA_CPP], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
  }).trim();
}

/** The slice of node-llama-cpp 3.22's API used here. */
interface NodeLlamaCpp {
  getLlama(options: {
    gpu: false;
    /** "never": use the prebuilt binary or fail; never download llama.cpp or compile it. */
    build: "never";
    maxThreads: number;
    logLevel: "error" | "warn" | "info";
    progressLogs: false;
  }): Promise<Llama>;
}
interface Llama {
  loadModel(options: { modelPath: string; gpuLayers: 0 }): Promise<LlamaModel>;
  dispose(): Promise<void>;
}
interface LlamaModel {
  createContext(options: {
    contextSize: number;
    batchSize: number;
    sequences: 1;
    threads: { ideal: number; min: number };
    flashAttention?: boolean;
    experimentalKvCacheKeyType?: KvCacheType;
    experimentalKvCacheValueType?: KvCacheType;
  }): Promise<LlamaContext>;
  /** The GGUF's metadata, keys split at dots. */
  readonly fileInfo: { metadata: { llama?: { vocab_size?: number } } };
  dispose(): Promise<void>;
}
interface LlamaContext {
  getSequence(): LlamaContextSequence;
  readonly flashAttention: boolean | "auto";
  dispose(): Promise<void>;
}
type EvaluateItem =
  | number
  | [
      token: number,
      options: { generateNext: { token: true; logits?: true; options: { temperature: 0; topK: 0 } } },
    ];
interface LlamaContextSequence {
  controlledEvaluate(
    input: EvaluateItem[],
  ): Promise<({ next: { token?: number | null; logits?: Map<number, number> } } | undefined)[]>;
  clearHistory(): Promise<void>;
}

/** The KV cache's element type: llama.cpp's default is F16. */
export type KvCacheType = "F16" | "F32";

export interface LlamaCppOptions {
  ggufPath: string;
  threads: number;
  /** Positions the context holds (prompt and generated tokens). */
  contextSize: number;
  /** @default "F16" (llama.cpp's default) */
  kvCacheType?: KvCacheType;
  /** @default node-llama-cpp's "auto" (llama.cpp decides) */
  flashAttention?: boolean;
  /** node-llama-cpp's package directory. @default ensureNodeLlamaCpp() */
  packageDir?: string;
}

/** One greedy step's result. */
export interface LlamaCppStep {
  token: number;
  /** The logits the token was chosen from, when asked for: [vocab]. */
  logits?: Float32Array;
}

/** A GGUF model loaded into llama.cpp with one context of one sequence, run greedily. */
export class LlamaCppModel {
  private constructor(
    private readonly llama: Llama,
    private readonly model: LlamaModel,
    private readonly context: LlamaContext,
    private readonly sequence: LlamaContextSequence,
    readonly vocabSize: number,
    /** Milliseconds from importing node-llama-cpp to a ready context. */
    readonly loadMs: number,
  ) {}

  static async open(options: LlamaCppOptions): Promise<LlamaCppModel> {
    const packageDir = options.packageDir ?? ensureNodeLlamaCpp();
    const start = performance.now();
    const { getLlama } = (await import(
      pathToFileURL(join(packageDir, "dist", "index.js")).href
    )) as NodeLlamaCpp;
    const llama = await getLlama({
      gpu: false,
      build: "never",
      maxThreads: options.threads,
      logLevel: "error",
      progressLogs: false,
    });
    const model = await llama.loadModel({ modelPath: options.ggufPath, gpuLayers: 0 });
    const kv = options.kvCacheType ?? "F16";
    const context = await model.createContext({
      contextSize: options.contextSize,
      // The whole prompt in one batch, as Tandem's prefill runs it in one forward.
      batchSize: options.contextSize,
      sequences: 1,
      threads: { ideal: options.threads, min: options.threads },
      ...(options.flashAttention !== undefined ? { flashAttention: options.flashAttention } : {}),
      experimentalKvCacheKeyType: kv,
      experimentalKvCacheValueType: kv,
    });
    const vocabSize = model.fileInfo.metadata.llama?.vocab_size;
    if (vocabSize === undefined) throw new Error(`${options.ggufPath}: no llama.vocab_size in its metadata`);
    return new LlamaCppModel(
      llama,
      model,
      context,
      context.getSequence(),
      vocabSize,
      performance.now() - start,
    );
  }

  /** Whether the context uses flash attention ("auto": llama.cpp decides per device). */
  get flashAttention(): boolean | "auto" {
    return this.context.flashAttention;
  }

  /** Runs `ids` after what the sequence holds and returns the greedy next token. */
  async next(ids: readonly number[], options: { logits?: boolean } = {}): Promise<LlamaCppStep> {
    if (ids.length === 0) throw new RangeError("next() needs at least one token id");
    const last = ids.length - 1;
    // temperature 0 is greedy (argmax); topK 0 keeps every logit in what is returned.
    const generate = {
      token: true as const,
      ...(options.logits ? { logits: true as const } : {}),
      options: { temperature: 0 as const, topK: 0 as const },
    };
    const input: EvaluateItem[] = ids.map((id, i) => (i === last ? [id, { generateNext: generate }] : id));
    const output = (await this.sequence.controlledEvaluate(input))[last];
    const token = output?.next.token;
    if (token === undefined || token === null) throw new Error("llama.cpp returned no token");
    return { token, logits: output?.next.logits ? this.denseLogits(output.next.logits) : undefined };
  }

  /**
   * Teacher forcing: runs `ids` after what the sequence holds, in one batch, and returns the
   * greedy next token at every position (what the model would say after each prefix).
   */
  async greedyAtEveryPosition(ids: readonly number[]): Promise<number[]> {
    const generate = { token: true as const, options: { temperature: 0 as const, topK: 0 as const } };
    const outputs = await this.sequence.controlledEvaluate(ids.map((id) => [id, { generateNext: generate }]));
    return outputs.map((output, i) => {
      const token = output?.next.token;
      if (token === undefined || token === null) throw new Error(`llama.cpp returned no token at ${i}`);
      return token;
    });
  }

  /** Empties the sequence: the next call starts at position 0. */
  async reset(): Promise<void> {
    await this.sequence.clearHistory();
  }

  async close(): Promise<void> {
    await this.context.dispose();
    await this.model.dispose();
    await this.llama.dispose();
  }

  private denseLogits(sparse: Map<number, number>): Float32Array {
    if (sparse.size !== this.vocabSize)
      throw new Error(
        `llama.cpp returned ${sparse.size} logits, expected the vocabulary's ${this.vocabSize}`,
      );
    const dense = new Float32Array(this.vocabSize);
    for (const [token, logit] of sparse) dense[token] = logit;
    return dense;
  }
}

/** Greedy tokens after `prompt`: the first from the prompt's last position, then `count - 1` more. */
export async function llamaCppGreedy(
  model: LlamaCppModel,
  prompt: readonly number[],
  count: number,
): Promise<{ tokens: number[]; firstLogits: Float32Array }> {
  await model.reset();
  const first = await model.next(prompt, { logits: true });
  const tokens = [first.token];
  while (tokens.length < count) tokens.push((await model.next([tokens[tokens.length - 1]])).token);
  return { tokens, firstLogits: first.logits! };
}

export interface LlamaCppMeasurement extends PrefillDecodeTiming {
  engine: "llama.cpp";
  threads: number;
  model_load_ms: number;
  rss_mb: number;
  kv_cache_type: KvCacheType;
  flash_attention: boolean | "auto";
}

/**
 * Times one case as runtime.bench.ts times Tandem's (prefill-decode-timing.ts): a warm-up
 * of the whole prompt and one decode step, then `rounds` of the prompt in one call and
 * `decodeTokens` single-token calls, the cache cleared before each.
 * Run it in a process of its own: llama.cpp's thread pool and memory then are the case's.
 */
export async function measureLlamaCpp(
  options: Omit<LlamaCppOptions, "contextSize"> & {
    promptTokens: number;
    /** The prompt's token ids for a vocabulary of `vocabSize`. */
    prompt: (vocabSize: number) => readonly number[];
    decodeTokens: number;
    /** Timed rounds after the warm-up. @default 3 */
    rounds?: number;
  },
): Promise<LlamaCppMeasurement> {
  const { decodeTokens } = options;
  const model = await LlamaCppModel.open({
    ...options,
    contextSize: options.promptTokens + decodeTokens + 1,
  });
  try {
    const prompt = options.prompt(model.vocabSize);
    if (prompt.length !== options.promptTokens)
      throw new RangeError(
        `the prompt has ${prompt.length} tokens, not promptTokens ${options.promptTokens}`,
      );
    const timing = await timePrefillDecode(
      {
        reset: () => model.reset(),
        prefill: async (ids) => (await model.next(ids)).token,
        decode: async (token) => (await model.next([token])).token,
      },
      { prompt, decodeTokens, rounds: options.rounds },
    );
    return {
      engine: "llama.cpp",
      threads: options.threads,
      ...timing,
      model_load_ms: model.loadMs,
      rss_mb: process.memoryUsage().rss / 2 ** 20,
      kv_cache_type: options.kvCacheType ?? "F16",
      flash_attention: model.flashAttention,
    };
  } finally {
    await model.close();
  }
}
