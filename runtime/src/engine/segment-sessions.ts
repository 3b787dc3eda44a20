/**
 * Sessions over one segment: each keeps the KV cache of the segment's layers for the
 * positions it has seen. A forward appends a chunk (prompt prefill, one decoded token,
 * or a context-sync run of hidden states); a batched step advances many sessions by
 * one token in a single runtime call (what a cloud worker does with concurrent edges).
 *
 * A run writes a session's new positions after the ones it holds, and its length moves
 * only when the run succeeds, so a failed or rejected call leaves the session as it was.
 *
 * Each session's cache is a row of a KV pool (kv-pool.ts), which it keeps until it is
 * released. With `batchRows` above 1, sessions share pools of that many rows, and a
 * batched step of sessions in one pool runs on their rows where they are: joining or
 * leaving the running batch copies no one's cache. Runs are serialised (ONNX Runtime
 * runs them one at a time on this thread anyway), so a pool is never resized under a
 * run that has its rows.
 */
import { InvalidArgumentError, SessionNotFoundError } from "@tandem/common";
import { KvPool, kvSlotRows } from "./kv-pool.ts";
import { copyKvRow, kvCapacity, type KvShape, kvRowBytes, kvSlotBytes, shrinkKvCapacity } from "./kv-slot.ts";
import type { ExitSignal } from "../exits/exit-policy.ts";
import type { ExitOutput, SegmentRunner } from "./segment-model.ts";

/**
 * A chunk of new positions: token ids (a segment from layer 0) or hidden states. With a
 * spec whose positions are "tail", `headPositions` says how many of the chunk's last
 * positions the exits and head evaluate (default 1).
 */
export type SegmentInput = ({ ids: number[] } | { hidden: Float32Array; count: number }) & {
  headPositions?: number;
};

export interface ExitResult {
  afterLayer: number;
  /** One entry per evaluated position (only the last one unless the spec says "all"). */
  token: number[];
  prob: number[];
  margin: number[];
  entropy: number[];
  /** KL divergence from the graph's nearest earlier exit (absent at its first exit). */
  klPrevious?: number[];
  logits?: Float32Array;
}

/** What `exit` reports at its evaluated position `position`, as an exit policy reads it. */
export function exitSignalAt(exit: ExitResult, position: number): ExitSignal {
  const signal: ExitSignal = {
    afterLayer: exit.afterLayer,
    token: exit.token[position],
    prob: exit.prob[position],
    margin: exit.margin[position],
    entropy: exit.entropy[position],
  };
  if (exit.klPrevious) signal.klPrevious = exit.klPrevious[position];
  return signal;
}

export interface SegmentStep {
  /** Position of the chunk's first token. */
  start: number;
  count: number;
  /** Hidden state after the segment's last layer, [count, hidden] (when the spec outputs it). */
  hidden?: Float32Array;
  taps: Map<number, Float32Array>;
  exits: ExitResult[];
}

export interface SegmentSessionsOptions {
  /** Largest chunk one forward accepts. @default 4096 */
  maxChunkTokens?: number;
  /**
   * Most positions of one session a runtime call takes: a longer forward (a prompt) runs
   * as consecutive calls of this many, whose attention scores (positions × cache) stay
   * small enough for the processor's caches and whose activations stay bounded however
   * long the prompt. The result is the same as one call's. @default 256
   */
  runChunkTokens?: number;
  /**
   * Rows of each KV pool: the most sessions a batched step runs together with no copy of
   * their caches. A pool is allocated whole, so 1 (a slot per session) suits a device
   * with one session; a cloud worker uses its batch size. @default 1
   */
  batchRows?: number;
}

export const DEFAULT_SEGMENT_SESSIONS_OPTIONS = {
  maxChunkTokens: 4096,
  runChunkTokens: 256,
  batchRows: 1,
} as const;

interface SessionState {
  id: string;
  length: number;
  /** The pool and row holding the session's cache; undefined before its first forward. */
  pool?: KvPool;
  row: number;
}

export class SegmentSessions {
  private readonly sessions = new Map<string, SessionState>();
  private readonly pools: KvPool[] = [];
  private readonly maxChunkTokens: number;
  private readonly runChunkTokens: number;
  private readonly batchRows: number;
  private readonly kvShape: KvShape;
  /** Tail of the queue of runs: calls run one at a time, in the order they were made. */
  private tail: Promise<unknown> = Promise.resolve();

  constructor(
    readonly model: SegmentRunner,
    options: SegmentSessionsOptions = {},
  ) {
    this.maxChunkTokens = options.maxChunkTokens ?? DEFAULT_SEGMENT_SESSIONS_OPTIONS.maxChunkTokens;
    this.runChunkTokens = options.runChunkTokens ?? DEFAULT_SEGMENT_SESSIONS_OPTIONS.runChunkTokens;
    this.batchRows = options.batchRows ?? DEFAULT_SEGMENT_SESSIONS_OPTIONS.batchRows;
    if (!Number.isInteger(this.batchRows) || this.batchRows < 1)
      throw new InvalidArgumentError("batchRows", `must be a positive integer, got ${this.batchRows}`);
    if (!Number.isInteger(this.runChunkTokens) || this.runChunkTokens < 1)
      throw new InvalidArgumentError(
        "runChunkTokens",
        `must be a positive integer, got ${this.runChunkTokens}`,
      );
    this.kvShape = {
      layers: model.kvEntryCount,
      kvHeads: model.config.numKvHeads,
      headDim: model.config.headDim,
    };
  }

  open(id: string): void {
    if (this.sessions.has(id)) throw new InvalidArgumentError("sessionId", `session "${id}" is already open`);
    this.sessions.set(id, { id, length: 0, row: -1 });
  }

  has(id: string): boolean {
    return this.sessions.has(id);
  }

  /** Positions the session's KV holds. */
  length(id: string): number {
    return this.state(id).length;
  }

  /**
   * Which sessions can step together in one runtime call: those with the same group.
   * Undefined for a session with no cache yet (it joins a pool on its first forward).
   */
  batchGroup(id: string): object | undefined {
    return this.state(id).pool;
  }

  /** Bytes of memory the session's KV takes: its row of its pool, room included. */
  kvBytes(id: string): number {
    const { pool } = this.state(id);
    return pool ? kvRowBytes(pool.slot, this.kvShape) : 0;
  }

  /**
   * Bytes of memory the KV caches take: every pool whole, free rows included, since a
   * pool is allocated whole (what a context manager's budget is about).
   */
  totalKvBytes(): number {
    return this.pools.reduce((bytes, pool) => bytes + kvSlotBytes(pool.slot, this.kvShape), 0);
  }

  get sessionIds(): string[] {
    return [...this.sessions.keys()];
  }

  /**
   * Drops positions from `length` on, so the next forward starts there. A worker that
   * receives a frame starting before its context's end recomputes from that frame.
   */
  async truncate(id: string, length: number): Promise<void> {
    const state = this.state(id);
    return this.enqueue(() => {
      if (!Number.isInteger(length) || length < 0 || length > state.length) {
        throw new InvalidArgumentError("length", `must be an integer in [0, ${state.length}], got ${length}`);
      }
      // The positions kept stay where they are, unless that leaves the pool more than a
      // block of room beyond its longest row (shrinkKvCapacity).
      state.length = length;
      if (state.pool) this.shrink(state.pool);
    });
  }

  /**
   * Closes the session: its row is free for the next session to join, with no copy, and
   * a pool left empty is freed. With `freeNow` (a context manager evicting to stay under
   * its budget) the memory is given back where rows can move: the least occupied pool is
   * emptied into the others' free rows and freed, and the released one shrinks to its
   * longest row — copies, made in the queue of calls (settled() waits for them).
   */
  release(id: string, options: { freeNow?: boolean } = {}): boolean {
    const state = this.sessions.get(id);
    if (!state) return false;
    this.sessions.delete(id);
    const { pool } = state;
    if (!pool) return true;
    pool.members[state.row] = undefined;
    if (pool.occupied === 0) this.pools.splice(this.pools.indexOf(pool), 1);
    else if (options.freeNow) void this.enqueue(() => this.compact(pool));
    return true;
  }

  /** Resolves once every call made so far has run, a freeNow release's copies included. */
  async settled(): Promise<void> {
    await this.tail;
  }

  /** Runs a chunk of new positions through the segment for one session. */
  async forward(id: string, input: SegmentInput): Promise<SegmentStep> {
    const state = this.state(id);
    const count = this.validateInput(input, state.length);
    return this.enqueue(async () => {
      this.checkOpen([state]);
      // Checked again now: calls queued ahead of this one may have grown the session.
      this.checkRoom(state.length, count);
      this.place(state, state.length + count);
      const start = state.length;
      const headPositions = input.headPositions ?? 1;
      const steps: SegmentStep[] = [];
      try {
        for (const [from, to] of runChunks(count, this.runChunkTokens, headPositions)) {
          const last = to === count;
          const [step] = await this.runRows(
            state.pool!,
            state.row,
            state.row,
            new Map([[state.row, sliceInput(input, from, to, this.model.config.hiddenSize)]]),
            to - from,
            last ? headPositions : 1,
          );
          steps.push(step!);
        }
      } catch (error) {
        // A call that fails part-way leaves the session as it was before it.
        state.length = start;
        throw error;
      }
      return joinSteps(steps, this.model.spec.positions === "all");
    });
  }

  /**
   * Advances several distinct sessions by one position each; results come back in the
   * order of `items`. Sessions of one pool run in one runtime call, on a contiguous range
   * of its rows (rows between them run a dummy input); sessions of different pools in one
   * call per pool.
   */
  async forwardBatch(items: { id: string; input: SegmentInput }[]): Promise<SegmentStep[]> {
    if (items.length === 0) return [];
    const ids = new Set(items.map((item) => item.id));
    if (ids.size !== items.length)
      throw new InvalidArgumentError("items", "a session appears twice in one batch");
    const states = items.map((item) => this.state(item.id));
    items.forEach((item, row) => {
      if (this.validateInput(item.input, states[row].length) !== 1) {
        throw new InvalidArgumentError(
          "items.input",
          `batched steps take one position per session (session "${item.id}")`,
        );
      }
    });
    return this.enqueue(async () => {
      this.checkOpen(states);
      // Checked again now: calls queued ahead of this batch may have grown its sessions.
      for (const state of states) this.checkRoom(state.length, 1);
      for (const state of states) this.place(state, state.length + 1);
      const results = new Array<SegmentStep>(items.length);
      const byPool = new Map<KvPool, number[]>();
      states.forEach((state, i) => byPool.set(state.pool!, [...(byPool.get(state.pool!) ?? []), i]));
      for (const [pool, members] of byPool) {
        const inputs = new Map(members.map((i) => [states[i].row, items[i].input]));
        for (const [first, last] of this.rowRanges(pool, [...inputs.keys()])) {
          const steps = await this.runRows(pool, first, last, inputs, 1);
          for (const i of members) {
            const { row } = states[i];
            if (row >= first && row <= last) results[i] = steps[row - first]!;
          }
        }
      }
      return results;
    });
  }

  /**
   * Runs rows [first, last] of a pool: rows with an input advance by `seq` positions, the
   * others run a dummy input (seq must be 1 then) whose keys land past their length.
   * Returns each row's step, undefined for a dummy row.
   */
  private async runRows(
    pool: KvPool,
    first: number,
    last: number,
    inputs: Map<number, SegmentInput>,
    seq: number,
    headPositions = 1,
  ): Promise<(SegmentStep | undefined)[]> {
    const { config } = this.model;
    const rows = last - first + 1;
    const hiddenSize = config.hiddenSize;
    const rowStates = Array.from({ length: rows }, (_, r) => this.memberState(pool, first + r));
    const pastLengths = rowStates.map((state) => state?.length ?? 0);
    const needed = Math.max(...pastLengths) + seq;
    if (pool.capacity < needed) this.resize(pool, kvCapacity(needed, config.maxPositions));
    const rowInputs = Array.from({ length: rows }, (_, r) => inputs.get(first + r));
    const takesIds = this.model.spec.fromLayer === 0;
    const output = await this.model.run({
      batch: rows,
      seq,
      ids: takesIds
        ? BigInt64Array.from({ length: rows * seq }, (_, i) => {
            const input = rowInputs[Math.floor(i / seq)] as { ids: number[] } | undefined;
            return BigInt(input ? input.ids[i % seq] : 0);
          })
        : undefined,
      hidden: takesIds
        ? undefined
        : concatRows(
            rowInputs.map((input) => (input as { hidden: Float32Array } | undefined)?.hidden),
            seq * hiddenSize,
          ),
      pastLengths,
      headPositions,
      kv: kvSlotRows(pool.slot, first, rows),
      active: rowInputs.map((input) => input !== undefined),
    });
    const width = seq * hiddenSize;
    return rowInputs.map((input, r): SegmentStep | undefined => {
      if (!input) return undefined;
      const state = rowStates[r]!;
      const start = state.length;
      state.length += seq;
      return {
        start,
        count: seq,
        hidden: output.hidden?.slice(r * width, (r + 1) * width),
        taps: new Map([...output.taps].map(([k, v]) => [k, v.slice(r * width, (r + 1) * width)])),
        exits: output.exits.map((e) =>
          exitRow(e, r, this.exitPositions(seq, headPositions), config.vocabSize),
        ),
      };
    });
  }

  /**
   * Contiguous ranges of a pool's rows covering `rows` in as few runs as possible: a row
   * between two is run along (a dummy step) unless it is full to the model's limit, where
   * a dummy key would have no room; such a row splits the range.
   */
  private rowRanges(pool: KvPool, rows: number[]): [number, number][] {
    const sorted = [...rows].sort((a, b) => a - b);
    const { maxPositions } = this.model.config;
    const ranges: [number, number][] = [];
    let first = sorted[0];
    let last = sorted[0];
    for (const row of sorted.slice(1)) {
      let gapFits = true;
      for (let between = last + 1; between < row; between++)
        if ((this.memberState(pool, between)?.length ?? 0) >= maxPositions) gapFits = false;
      if (gapFits) last = row;
      else {
        ranges.push([first, last]);
        first = last = row;
      }
    }
    ranges.push([first, last]);
    return ranges;
  }

  /**
   * Gives a session without a cache a row — in the pool with a free row whose capacity
   * fits it most closely, or a new pool — and grows its pool to hold `needed` positions.
   */
  private place(state: SessionState, needed: number): void {
    const limit = this.model.config.maxPositions;
    if (!state.pool) {
      const open = this.pools.filter((pool) => pool.freeRow() !== undefined);
      const fitting = open.filter((pool) => pool.capacity >= needed).sort((a, b) => a.capacity - b.capacity);
      let pool = fitting[0] ?? open.sort((a, b) => b.capacity - a.capacity)[0];
      if (!pool) {
        pool = new KvPool(this.kvShape, this.batchRows, kvCapacity(needed, limit));
        this.pools.push(pool);
      }
      state.pool = pool;
      state.row = pool.freeRow()!;
      pool.members[state.row] = state.id;
    }
    if (state.pool.capacity < needed) this.resize(state.pool, kvCapacity(needed, limit));
  }

  /**
   * Frees a pool's worth of memory after a release where rows can move: empties the
   * least occupied pool into free rows of the others that hold its sessions' positions,
   * longest session first into the smallest room that takes it, or moves nothing when
   * they do not all fit; then shrinks `released` to its longest row.
   */
  private compact(released: KvPool): void {
    const [emptied] = [...this.pools].sort((a, b) => a.occupied - b.occupied);
    const movers = emptied.members
      .map((_, row) => this.memberState(emptied, row))
      .filter((state): state is SessionState => state !== undefined)
      .sort((a, b) => b.length - a.length);
    const rooms = this.pools
      .filter((pool) => pool !== emptied)
      .flatMap((pool) => pool.members.flatMap((member, row) => (member === undefined ? [{ pool, row }] : [])))
      .sort((a, b) => a.pool.capacity - b.pool.capacity);
    const moves: { state: SessionState; pool: KvPool; row: number }[] = [];
    for (const state of movers) {
      const room = rooms.findIndex((r) => r.pool.capacity >= state.length);
      if (room < 0) break;
      moves.push({ state, ...rooms.splice(room, 1)[0] });
    }
    if (movers.length > 0 && moves.length === movers.length) {
      for (const { state, pool, row } of moves) {
        copyKvRow(emptied.slot, state.row, pool.slot, row, state.length, this.kvShape);
        pool.members[row] = state.id;
        state.pool = pool;
        state.row = row;
      }
      this.pools.splice(this.pools.indexOf(emptied), 1);
    }
    this.shrink(released);
  }

  /** Shrinks a pool to its longest row when it has more than a block of room beyond it. */
  private shrink(pool: KvPool): void {
    if (!this.pools.includes(pool)) return;
    const longest = Math.max(0, ...pool.members.map((_, row) => this.memberState(pool, row)?.length ?? 0));
    const capacity = shrinkKvCapacity(pool.capacity, longest, this.model.config.maxPositions);
    if (capacity !== undefined) this.resize(pool, capacity);
  }

  private resize(pool: KvPool, capacity: number): void {
    const lengths = pool.members.map((_, row) => this.memberState(pool, row)?.length ?? 0);
    pool.resize(this.kvShape, capacity, lengths);
  }

  /** The open session holding a row of the pool, or undefined for a free row. */
  private memberState(pool: KvPool, row: number): SessionState | undefined {
    const id = pool.members[row];
    return id === undefined ? undefined : this.sessions.get(id);
  }

  /** Queues a call behind every call made before it; a failed one does not stop the queue. */
  private enqueue<T>(call: () => T | Promise<T>): Promise<T> {
    const run = this.tail.then(call);
    this.tail = run.catch(() => undefined);
    return run;
  }

  /** A session released while its call waited in the queue fails that call. */
  private checkOpen(states: SessionState[]): void {
    for (const state of states)
      if (this.sessions.get(state.id) !== state) throw new SessionNotFoundError(state.id);
  }

  private exitPositions(count: number, headPositions: number): number {
    const { positions } = this.model.spec;
    return positions === "all" ? count : positions === "tail" ? headPositions : 1;
  }

  private state(id: string): SessionState {
    const state = this.sessions.get(id);
    if (!state) throw new SessionNotFoundError(id);
    return state;
  }

  /** Returns the number of new positions; throws InvalidArgumentError naming the bad field. */
  private validateInput(input: SegmentInput, pastLength: number): number {
    const { config, spec } = this.model;
    let count: number;
    if ("ids" in input) {
      if (spec.fromLayer !== 0)
        throw new InvalidArgumentError(
          "ids",
          `segment starts at layer ${spec.fromLayer}: send hidden states`,
        );
      count = input.ids.length;
      input.ids.forEach((id, i) => {
        if (!Number.isInteger(id) || id < 0 || id >= config.vocabSize) {
          throw new InvalidArgumentError(
            `ids[${i}]`,
            `must be a token id in [0, ${config.vocabSize}), got ${id}`,
          );
        }
      });
    } else {
      if (spec.fromLayer === 0)
        throw new InvalidArgumentError("hidden", "segment starts at layer 0: send token ids");
      count = input.count;
      if (!Number.isInteger(count) || count < 1)
        throw new InvalidArgumentError("count", `must be a positive integer, got ${count}`);
      if (input.hidden.length !== count * config.hiddenSize) {
        throw new InvalidArgumentError(
          "hidden",
          `has ${input.hidden.length} values, expected ${count} × ${config.hiddenSize}`,
        );
      }
    }
    if (count < 1) throw new InvalidArgumentError("ids", "must not be empty");
    if (input.headPositions !== undefined) {
      if (spec.positions !== "tail")
        throw new InvalidArgumentError(
          "headPositions",
          `the segment evaluates its head at positions "${spec.positions}", not a tail of its choosing`,
        );
      if (!Number.isInteger(input.headPositions) || input.headPositions < 1 || input.headPositions > count)
        throw new InvalidArgumentError(
          "headPositions",
          `must be an integer in [1, ${count}], got ${input.headPositions}`,
        );
    }
    if (count > this.maxChunkTokens)
      throw new InvalidArgumentError(
        "count",
        `${count} positions exceed the chunk limit ${this.maxChunkTokens}`,
      );
    this.checkRoom(pastLength, count);
    return count;
  }

  /** Throws InvalidArgumentError("count") when `count` more positions would pass the model's limit. */
  private checkRoom(pastLength: number, count: number): void {
    const { maxPositions } = this.model.config;
    if (pastLength + count > maxPositions) {
      throw new InvalidArgumentError(
        "count",
        `session would reach ${pastLength + count} positions, the model allows ${maxPositions}`,
      );
    }
  }
}

/**
 * [from, to) ranges of at most `size` positions covering `count`, except the last, which
 * holds at least `tailPositions` (the positions the exits evaluate must be in one call).
 */
export function runChunks(count: number, size: number, tailPositions: number): [number, number][] {
  const lastStart = Math.max(0, count - Math.max(tailPositions, ((count - 1) % size) + 1));
  const chunks: [number, number][] = [];
  for (let from = 0; from < lastStart; from += size) chunks.push([from, Math.min(from + size, lastStart)]);
  chunks.push([lastStart, count]);
  return chunks;
}

function sliceInput(input: SegmentInput, from: number, to: number, hiddenSize: number): SegmentInput {
  if (from === 0 && to === inputLength(input)) return input;
  return "ids" in input
    ? { ids: input.ids.slice(from, to) }
    : { hidden: input.hidden.subarray(from * hiddenSize, to * hiddenSize), count: to - from };
}

function inputLength(input: SegmentInput): number {
  return "ids" in input ? input.ids.length : input.count;
}

/**
 * One step for consecutive runs of a session: hidden states and taps joined; the exits of
 * every position when the spec evaluates all, else the last run's (which held the tail).
 */
function joinSteps(steps: SegmentStep[], allPositions: boolean): SegmentStep {
  if (steps.length === 1) return steps[0];
  const last = steps[steps.length - 1];
  const join = (parts: (Float32Array | undefined)[]): Float32Array | undefined =>
    parts.every((part) => part) ? concatFloat32(parts as Float32Array[]) : undefined;
  return {
    start: steps[0].start,
    count: steps.reduce((sum, step) => sum + step.count, 0),
    hidden: join(steps.map((step) => step.hidden)),
    taps: new Map([...last.taps.keys()].map((k) => [k, join(steps.map((step) => step.taps.get(k)))!])),
    exits: !allPositions
      ? last.exits
      : last.exits.map((exit, e): ExitResult => {
          const parts = steps.map((step) => step.exits[e]);
          return {
            afterLayer: exit.afterLayer,
            token: parts.flatMap((part) => part.token),
            prob: parts.flatMap((part) => part.prob),
            margin: parts.flatMap((part) => part.margin),
            entropy: parts.flatMap((part) => part.entropy),
            klPrevious: exit.klPrevious && parts.flatMap((part) => part.klPrevious!),
            logits: exit.logits && concatFloat32(parts.map((part) => part.logits!)),
          };
        }),
  };
}

function concatFloat32(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

function exitRow(exit: ExitOutput, row: number, positions: number, vocab: number): ExitResult {
  const from = row * positions;
  const to = from + positions;
  return {
    afterLayer: exit.afterLayer,
    token: Array.from(exit.token.subarray(from, to)),
    prob: Array.from(exit.prob.subarray(from, to)),
    margin: Array.from(exit.margin.subarray(from, to)),
    entropy: Array.from(exit.entropy.subarray(from, to)),
    klPrevious: exit.klPrevious && Array.from(exit.klPrevious.subarray(from, to)),
    logits: exit.logits?.slice(from * vocab, to * vocab),
  };
}

/**
 * Stacks one [width] row per session into a [rows, width] batch input (a batched step's
 * hidden states); a missing row (a dummy step) stays zero.
 */
function concatRows(rows: (Float32Array | undefined)[], width: number): Float32Array {
  if (rows.length === 1 && rows[0]) return rows[0];
  const out = new Float32Array(rows.length * width);
  rows.forEach((row, i) => row && out.set(row, i * width));
  return out;
}
