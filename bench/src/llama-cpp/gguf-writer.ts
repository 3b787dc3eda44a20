/**
 * Writes a Tandem Llama checkpoint as a GGUF file llama.cpp runs, with the same weights:
 * what llama.cpp's own convert_hf_to_gguf.py (and llama-quantize, for Q4_0) would write,
 * so llama.cpp's speed on it is a fair anchor for Tandem's engine on the checkpoint.
 *
 * Architecture "llama", tensors named as llama.cpp names them:
 *
 *   token_embd.weight                      model.embed_tokens.weight
 *   blk.N.attn_norm.weight                 model.layers.N.input_layernorm.weight
 *   blk.N.attn_q.weight / attn_k.weight    …self_attn.q_proj / k_proj, rows permuted (below)
 *   blk.N.attn_v.weight / attn_output      …self_attn.v_proj / o_proj
 *   blk.N.ffn_norm.weight                  …post_attention_layernorm
 *   blk.N.ffn_gate / ffn_up / ffn_down     …mlp.gate_proj / up_proj / down_proj
 *   output_norm.weight                     model.norm.weight
 *   output.weight                          lm_head.weight (absent when tied: llama.cpp
 *                                          then reads the LM head from token_embd)
 *
 * RoPE: transformers rotates the pairs (i, i + headDim/2) of each head; llama.cpp's llama
 * architecture rotates adjacent pairs (2i, 2i + 1). Like the converter's
 * `LlamaModel.permute`, the rows of each q and k head are reordered so that row 2i + j of
 * the head is transformers' row j·headDim/2 + i; then llama.cpp computes exactly
 * transformers' attention scores.
 *
 * Rope scaling: `linear` as llama.rope.scaling.*; Llama 3's `llama3` as the tensor
 * rope_freqs.weight (one divisor per rotary frequency), as the converter writes it.
 *
 * Tensor types by file type: norms stay F32 always. In a Q8_0 file every matrix is Q8_0
 * (as the converter's --outtype q8_0 and llama-quantize Q8_0 both do). In a Q4_0 file the
 * matrices are Q4_0 except the LM head (output.weight, or token_embd when tied), which
 * llama-quantize raises to Q6_K (Q8_0 when the row length is not a multiple of 256);
 * Q6_K is not written here, so the LM head is Q8_0 — `pure` writes it as Q4_0 too, like
 * llama-quantize --pure. A matrix whose rows are not whole blocks of 32 stays F32.
 */
import { readFile } from "node:fs/promises";
import { basename } from "node:path";
import { CheckpointError, UnsupportedError } from "@tandem/common";
import {
  type Checkpoint,
  type ModelConfig,
  rotaryInverseFrequencies,
  type WeightTensor,
} from "@tandem/runtime";
import { encodeValues, fitsRows, type GgmlTypeName } from "./ggml-blocks.ts";
import {
  bool,
  f32,
  GGUF_ALIGNMENT,
  type GgufTensor,
  type GgufValue,
  int32s,
  str,
  strings,
  u32,
  writeGgufFile,
} from "./gguf-file.ts";

/** Bumped whenever what the writer puts in a file changes, so cached copies are written anew. */
export const GGUF_WRITER_VERSION = 2;

/** What the matrices of a file are stored as (general.file_type). */
export type GgufFileType = "F32" | "Q8_0" | "Q4_0";
export const GGUF_FILE_TYPES: readonly GgufFileType[] = ["F32", "Q8_0", "Q4_0"];

/** llama.cpp's enum llama_ftype for each file type. */
const LLAMA_FILE_TYPE: Record<GgufFileType, number> = { F32: 0, Q4_0: 2, Q8_0: 7 };

/** GGML_QNT_VERSION: the version of the quantized block layouts. */
const QUANTIZATION_VERSION = 2;

/** tokenizer.ggml.token_type values (llama_token_type). */
export const TOKEN_TYPE = { NORMAL: 1, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5 } as const;

/** Values converted per chunk while streaming a matrix (~4 MB of fp32). */
const CHUNK_VALUES = 1 << 20;

export interface GgufWriteOptions {
  fileType: GgufFileType;
  /** Store the LM head in the file type too (llama-quantize --pure). @default false */
  pure?: boolean;
}

export interface GgufWriteSummary {
  path: string;
  fileType: GgufFileType;
  /** Every tensor written, in file order, with its type. */
  tensors: { name: string; ne: number[]; type: GgmlTypeName }[];
}

/**
 * Writes `checkpoint` (Llama family, with a byte-level BPE tokenizer.json) to `path` as a
 * GGUF v3 file of `options.fileType`. Throws UnsupportedError naming what it cannot write.
 */
export async function writeCheckpointGguf(
  checkpoint: Checkpoint,
  path: string,
  options: GgufWriteOptions,
): Promise<GgufWriteSummary> {
  const { config } = checkpoint;
  checkWritable(config);
  const vocabulary = await readVocabulary(checkpoint, config.vocabSize);
  const tensors = llamaTensors(checkpoint, options);
  await writeGgufFile(path, [...llamaMetadata(checkpoint, options.fileType), ...vocabulary], tensors);
  return {
    path,
    fileType: options.fileType,
    tensors: tensors.map(({ name, ne, type }) => ({ name, ne: [...ne], type })),
  };
}

/** Refuses, by name, what llama.cpp's llama architecture would compute differently. */
function checkWritable(config: ModelConfig): void {
  // Mistral's dense models are llama in llama.cpp (the converter maps both to LlamaModel).
  if (config.architecture !== "llama" && config.architecture !== "mistral")
    throw new UnsupportedError(
      `GGUF export: architecture ${config.architecture} is not written; only the Llama family (llama, mistral)`,
    );
  if (config.attentionBias)
    throw new UnsupportedError("GGUF export: attention biases (attention_bias) are not written");
  // Linear and llama3 are the scalings ModelConfig admits; both are written (llama3 as
  // rope_freqs). A new one must be added here before it is exported.
  const scaling = config.ropeScaling?.type;
  if (scaling && scaling !== "linear" && scaling !== "llama3")
    throw new UnsupportedError(`GGUF export: rope_scaling ${scaling as string} is not written`);
}

function llamaMetadata(checkpoint: Checkpoint, fileType: GgufFileType): [string, GgufValue][] {
  const c = checkpoint.config;
  const metadata: [string, GgufValue][] = [
    ["general.architecture", str("llama")],
    ["general.type", str("model")],
    ["general.name", str(basename(checkpoint.dir))],
    ["general.file_type", u32(LLAMA_FILE_TYPE[fileType])],
    ["general.quantization_version", u32(QUANTIZATION_VERSION)],
    ["general.alignment", u32(GGUF_ALIGNMENT)],
    ["llama.vocab_size", u32(c.vocabSize)],
    ["llama.context_length", u32(c.maxPositions)],
    ["llama.embedding_length", u32(c.hiddenSize)],
    ["llama.block_count", u32(c.numLayers)],
    ["llama.feed_forward_length", u32(c.intermediateSize)],
    ["llama.attention.head_count", u32(c.numHeads)],
    ["llama.attention.head_count_kv", u32(c.numKvHeads)],
    // Written always: llama.cpp otherwise assumes hidden / heads, which config.json's
    // head_dim may contradict.
    ["llama.attention.key_length", u32(c.headDim)],
    ["llama.attention.value_length", u32(c.headDim)],
    ["llama.attention.layer_norm_rms_epsilon", f32(c.rmsNormEps)],
    ["llama.rope.freq_base", f32(c.ropeTheta)],
    ["llama.rope.dimension_count", u32(c.headDim)],
  ];
  if (c.ropeScaling?.type === "linear")
    metadata.push(
      ["llama.rope.scaling.type", str("linear")],
      ["llama.rope.scaling.factor", f32(c.ropeScaling.factor)],
    );
  return metadata;
}

interface TokenizerJson {
  added_tokens?: { id: number; content: string; special?: boolean }[];
  pre_tokenizer?: { type?: string; pretokenizers?: { type?: string }[] } | null;
  model?: { type?: string; vocab?: Record<string, number>; merges?: (string | [string, string])[] };
}

/**
 * The tokenizer.ggml.* keys: GPT-2 style byte-level BPE ("gpt2", pre-tokenizer "gpt-2", which
 * is GPT-2's split regex as in transformers' ByteLevel use_regex), the tokens by id padded to
 * the model's vocabulary with "[PAD<id>]" tokens of type UNUSED, as the converter pads.
 */
async function readVocabulary(checkpoint: Checkpoint, vocabSize: number): Promise<[string, GgufValue][]> {
  const path = checkpoint.tokenizerPath;
  if (!path) throw new UnsupportedError(`GGUF export: ${checkpoint.dir} has no tokenizer.json`);
  const json = JSON.parse(await readFile(path, "utf8")) as TokenizerJson;
  const model = json.model;
  const preTokenizers = [json.pre_tokenizer, ...(json.pre_tokenizer?.pretokenizers ?? [])];
  if (model?.type !== "BPE" || !model.vocab || !preTokenizers.some((p) => p?.type === "ByteLevel"))
    throw new UnsupportedError(`GGUF export: ${path} is not a byte-level BPE tokenizer (GPT-2 style)`);

  const tokens: string[] = Array.from({ length: vocabSize }, (_, id) => `[PAD${id}]`);
  const types: number[] = new Array<number>(vocabSize).fill(TOKEN_TYPE.UNUSED);
  const place = (content: string, id: number, type: number) => {
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize)
      throw new CheckpointError(
        path,
        `token ${JSON.stringify(content)} has id ${id}, outside vocab_size ${vocabSize}`,
      );
    tokens[id] = content;
    types[id] = type;
  };
  for (const [content, id] of Object.entries(model.vocab)) place(content, id, TOKEN_TYPE.NORMAL);
  for (const added of json.added_tokens ?? [])
    place(added.content, added.id, added.special ? TOKEN_TYPE.CONTROL : TOKEN_TYPE.USER_DEFINED);
  const merges = (model.merges ?? []).map((m) => (typeof m === "string" ? m : m.join(" ")));

  const c = checkpoint.config;
  const entries: [string, GgufValue][] = [
    ["tokenizer.ggml.model", str("gpt2")],
    ["tokenizer.ggml.pre", str("gpt-2")],
    ["tokenizer.ggml.tokens", strings(tokens)],
    ["tokenizer.ggml.token_type", int32s(types)],
    ["tokenizer.ggml.merges", strings(merges)],
  ];
  if (c.bosTokenId !== undefined) entries.push(["tokenizer.ggml.bos_token_id", u32(c.bosTokenId)]);
  if (c.eosTokenId?.length) entries.push(["tokenizer.ggml.eos_token_id", u32(c.eosTokenId[0])]);
  // tokenizer.json adds no BOS (no post-processor); token ids are passed as they are.
  entries.push(["tokenizer.ggml.add_bos_token", bool(false)]);
  return entries;
}

/** What a matrix is for, which decides its type in a quantized file. */
type MatrixRole = "lm-head" | "embedding" | "linear";

function matrixType(options: GgufWriteOptions, role: MatrixRole, rowLength: number): GgmlTypeName {
  const { fileType } = options;
  let type: GgmlTypeName = fileType;
  // llama-quantize raises the LM head of a Q4_0 file to Q6_K; Q8_0 is the nearest written here.
  if (fileType === "Q4_0" && role === "lm-head" && !options.pure) type = "Q8_0";
  return fitsRows(type, rowLength) ? type : "F32";
}

function llamaTensors(checkpoint: Checkpoint, options: GgufWriteOptions): GgufTensor[] {
  const { config } = checkpoint;
  const w = checkpoint.weights;
  const tied = config.tieWordEmbeddings;
  const tensors: GgufTensor[] = [];
  if (config.ropeScaling?.type === "llama3") tensors.push(ropeFrequencyFactors(config));
  tensors.push(
    matrix(
      "token_embd.weight",
      w.embedTokens,
      matrixType(options, tied ? "lm-head" : "embedding", config.hiddenSize),
    ),
  );
  const linear = (name: string, t: WeightTensor, heads?: number) =>
    matrix(name, t, matrixType(options, "linear", t.shape[1]), heads);
  for (const [i, layer] of w.layers.entries()) {
    if (!layer.gateProj || !layer.upProj || !layer.downProj)
      throw new UnsupportedError(
        `GGUF export: layer ${i} has no dense MLP (mixture of experts is not written)`,
      );
    const p = `blk.${i}`;
    tensors.push(
      vector(`${p}.attn_norm.weight`, layer.inputNorm),
      linear(`${p}.attn_q.weight`, layer.qProj, config.numHeads),
      linear(`${p}.attn_k.weight`, layer.kProj, config.numKvHeads),
      linear(`${p}.attn_v.weight`, layer.vProj),
      linear(`${p}.attn_output.weight`, layer.oProj),
      vector(`${p}.ffn_norm.weight`, layer.postAttentionNorm),
      linear(`${p}.ffn_gate.weight`, layer.gateProj),
      linear(`${p}.ffn_up.weight`, layer.upProj),
      linear(`${p}.ffn_down.weight`, layer.downProj),
    );
  }
  tensors.push(vector("output_norm.weight", w.finalNorm));
  if (!tied)
    tensors.push(matrix("output.weight", w.lmHead, matrixType(options, "lm-head", config.hiddenSize)));
  return tensors;
}

/**
 * Llama 3's rope scaling as llama.cpp takes it: rope_freqs.weight, one divisor per rotary
 * frequency (llama.cpp rotates by position · base frequency ÷ divisor), as the converter's
 * generate_extra_tensors writes it — here each base frequency over the scaled one that
 * Tandem's engine rotates by, so the two engines turn by the same angles.
 */
function ropeFrequencyFactors(config: ModelConfig): GgufTensor {
  const base = rotaryInverseFrequencies({ ...config, ropeScaling: undefined });
  const scaled = rotaryInverseFrequencies(config);
  const factors = base.map((frequency, i) => frequency / scaled[i]);
  return {
    name: "rope_freqs.weight",
    ne: [factors.length],
    type: "F32",
    *chunks() {
      yield encodeValues("F32", factors);
    },
  };
}

/** A 1-D weight (a norm), F32. */
function vector(name: string, t: WeightTensor): GgufTensor {
  return {
    name,
    ne: [t.shape[0]],
    type: "F32",
    *chunks() {
      yield encodeValues("F32", t.data);
      t.release?.();
    },
  };
}

/**
 * A [rows, cols] weight, streamed in chunks of whole rows (of whole heads when `heads` is
 * given: those rows are permuted for llama.cpp's RoPE layout).
 */
function matrix(name: string, t: WeightTensor, type: GgmlTypeName, heads?: number): GgufTensor {
  const [rows, cols] = t.shape;
  const group = heads ? rows / heads : 1;
  if (heads && !(Number.isInteger(group) && group % 2 === 0))
    throw new UnsupportedError(`GGUF export: ${t.name} has ${rows} rows, not ${heads} heads of an even size`);
  const rowsPerChunk = Math.max(1, Math.floor(CHUNK_VALUES / cols / group)) * group;
  return {
    name,
    ne: [cols, rows],
    type,
    *chunks() {
      for (let begin = 0; begin < rows; begin += rowsPerChunk) {
        const end = Math.min(rows, begin + rowsPerChunk);
        const values = t.rows ? t.rows(begin, end) : t.data.subarray(begin * cols, end * cols);
        yield encodeValues(type, heads ? interleaveRopeHalves(values, cols, group) : values);
      }
      t.release?.();
    },
  };
}

/**
 * Rows of whole heads of `headDim` rows each, reordered for llama.cpp's adjacent-pair RoPE:
 * row 2i + j of a head is row j·headDim/2 + i of the input (the converter's permute:
 * reshape each head to (2, headDim/2), swap the two axes).
 */
export function interleaveRopeHalves(values: Float32Array, cols: number, headDim: number): Float32Array {
  const rows = values.length / cols;
  const half = headDim / 2;
  const out = new Float32Array(values.length);
  for (let head = 0; head < rows; head += headDim)
    for (let i = 0; i < half; i++)
      for (let j = 0; j < 2; j++) {
        const from = (head + j * half + i) * cols;
        out.set(values.subarray(from, from + cols), (head + 2 * i + j) * cols);
      }
  return out;
}
