/**
 * How the cloud's agreement with the full model falls with the bits a hidden state gets
 * on the wire: rotated uniform quantizers of 4 to 8 bits per value (int4-rotated's
 * recipe — the randomized Hadamard rotation, then symmetric absmax per group of 32 with
 * one fp16 scale per group, 0.5 bits per value more), teacher forced on the held-out
 * windows at each split, next to the shipped codecs.
 *
 * It answers whether a better int4 could reach issue 14's 99.5%: the tokens that flip
 * are near-ties, so agreement tracks the error, and the error halves per bit. A codec of
 * ≤ 0.6 bytes per value has 4.8 bits to spend.
 */
import {
  CODEC_NAMES,
  getCodec,
  HadamardRotation,
  SegmentModel,
  SegmentSessions,
  segmentSpec,
} from "@tandem/runtime";
import type { Context } from "./collab-context.ts";

const GROUP = 32;
export const BITS = [4, 5, 6, 7, 8] as const;

/** Rotate, quantize to `bits` per value in groups of GROUP, dequantize, rotate back. */
function roundTrip(
  rotation: HadamardRotation,
  hidden: Float32Array,
  count: number,
  bits: number,
): Float32Array {
  const y = rotation.rotate(hidden, count);
  const levels = 2 ** (bits - 1) - 1;
  for (let start = 0; start < y.length; start += GROUP) {
    const end = Math.min(start + GROUP, y.length);
    let absmax = 0;
    for (let i = start; i < end; i++) absmax = Math.max(absmax, Math.abs(y[i]));
    const scale = Math.fround(absmax / levels);
    if (scale === 0) continue;
    for (let i = start; i < end; i++) y[i] = Math.round(y[i] / scale) * scale;
  }
  return rotation.unrotateInPlace(y, count);
}

export interface CodecBitsRow {
  codec: string;
  bits_per_value: number;
  bytes_per_value: number;
  agreement: number;
}

/** Agreement per quantizer at the context's split, over its held-out windows. */
export async function codecBits(
  ctx: Context,
): Promise<{ split: number; positions: number; rows: CodecBitsRow[] }> {
  const { checkpoint, split } = ctx;
  const hiddenSize = checkpoint.config.hiddenSize;
  const lower = new SegmentSessions(
    await SegmentModel.load(
      checkpoint,
      segmentSpec({ fromLayer: 0, toLayer: split, outputHidden: true, positions: "all" }),
    ),
  );
  const upper = new SegmentSessions(
    await SegmentModel.load(
      checkpoint,
      segmentSpec({
        fromLayer: split,
        toLayer: checkpoint.config.numLayers,
        finalHead: true,
        positions: "all",
      }),
    ),
  );
  const rotation = new HadamardRotation(hiddenSize);
  const quantizers: {
    codec: string;
    bits: number;
    bytes: number;
    apply: (h: Float32Array, n: number) => Float32Array;
  }[] = [
    ...BITS.map((bits) => ({
      codec: `rotated int${bits}, groups of ${GROUP}`,
      bits: bits + 16 / GROUP,
      bytes: (bits + 16 / GROUP) / 8,
      apply: (h: Float32Array, n: number) => roundTrip(rotation, h, n, bits),
    })),
    ...CODEC_NAMES.map((name) => {
      const codec = getCodec(name);
      const bytes = codec.encodedBytes(1, hiddenSize) / hiddenSize;
      return {
        codec: name,
        bits: bytes * 8,
        bytes,
        apply: (h: Float32Array, n: number) => codec.decode(codec.encode(h, n, hiddenSize), n, hiddenSize),
      };
    }),
  ];
  const agree = quantizers.map(() => 0);
  let positions = 0;
  const tokensOf = async (hidden: Float32Array, count: number) => {
    upper.open("w");
    const token = (await upper.forward("w", { hidden, count })).exits[0].token;
    upper.release("w");
    return token;
  };
  for (const window of ctx.windows) {
    lower.open("w");
    const hidden = (await lower.forward("w", { ids: window })).hidden!;
    lower.release("w");
    const full = await tokensOf(hidden, window.length);
    for (const [i, q] of quantizers.entries()) {
      const tokens = await tokensOf(q.apply(hidden, window.length), window.length);
      agree[i] += tokens.filter((t, p) => t === full[p]).length;
    }
    positions += window.length;
  }
  await lower.model.release();
  await upper.model.release();
  return {
    split,
    positions,
    rows: quantizers.map((q, i) => ({
      codec: q.codec,
      bits_per_value: q.bits,
      bytes_per_value: q.bytes,
      agreement: agree[i] / positions,
    })),
  };
}
