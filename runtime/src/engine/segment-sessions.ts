/**
 * Sessions over one segment: each keeps the KV cache of the segment's layers for the
 * positions it has seen. A forward appends a chunk (prompt prefill, one decoded token,
 * or a context-sync run of hidden states); a batched step advances many sessions by
 * one token in a single runtime call (what a cloud worker does with concurrent edges).
 *
 * A run writes a session's new positions after the ones it holds, and its length moves
 * only when the run succeeds, so a failed or rejected call leaves the session as it was.
 *
 * Each session's cache is a KV slot of its own (kv-slot.ts). Sessions that take a batched
 * step together share one slot, a row each, until something else touches one of them: the
 * same sessions' next batched step runs on it as it is, where copying every session's cache
 * into and out of a batch tensor would cost as much memory traffic as the weights at long
 * contexts. Releasing one of them breaks the batch, so its row is freed when it goes.
 */
import { InvalidArgumentError, SessionNotFoundError } from "@tandem/common";
import {
  allocateKvSlot,
  copyKvRow,
  kvCapacity,
  type KvShape,
  type KvSlot,
  kvRowBytes,
  kvSlotBytes,
  shrinkKvCapacity,
} from "./kv-slot.ts";
import type { ExitOutput, SegmentModel } from "./segment-model.ts";

export type SegmentInput = { ids: number[] } | { hidden: Float32Array; count: number };

export interface ExitResult {
  afterLayer: number;
  /** One entry per evaluated position (only the last one unless the spec says "all"). */
  token: number[];
  prob: number[];
  margin: number[];
  entropy: number[];
  logits?: Float32Array;
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
}

interface SessionState {
  length: number;
  /** The session's own cache (one row); undefined before its first forward and while `resident` is set. */
  slot?: KvSlot;
  /** Tail of the queue of calls on this session: calls on one session run in order. */
  busy: Promise<unknown>;
  /** The batch whose padded KV holds this session's cache, if it last ran in one. */
  resident?: ResidentBatch;
}

/** The shared cache of sessions that last stepped together. */
interface ResidentBatch {
  /** Session ids in row order. */
  ids: string[];
  /** Row r holds session ids[r]'s first length positions. */
  slot: KvSlot;
}

export class SegmentSessions {
  private readonly sessions = new Map<string, SessionState>();
  private readonly maxChunkTokens: number;
  private readonly kvShape: KvShape;

  constructor(
    readonly model: SegmentModel,
    options: SegmentSessionsOptions = {},
  ) {
    this.maxChunkTokens = options.maxChunkTokens ?? 4096;
    this.kvShape = {
      layers: model.layerCount,
      kvHeads: model.config.numKvHeads,
      headDim: model.config.headDim,
    };
  }

  open(id: string): void {
    if (this.sessions.has(id)) throw new InvalidArgumentError("sessionId", `session "${id}" is already open`);
    this.sessions.set(id, { length: 0, busy: Promise.resolve() });
  }

  has(id: string): boolean {
    return this.sessions.has(id);
  }

  /** Positions the session's KV holds. */
  length(id: string): number {
    return this.state(id).length;
  }

  /**
   * Bytes of memory the session's KV takes: its slot, room included, or its row of the
   * slot it shares with a batch.
   */
  kvBytes(id: string): number {
    const state = this.state(id);
    const slot = state.resident?.slot ?? state.slot;
    return slot ? kvRowBytes(slot, this.kvShape) : 0;
  }

  /**
   * Bytes of memory the KV caches of all sessions take: every slot once, a shared one
   * whole. It equals the sum of kvBytes over the sessions while every row of a shared
   * slot belongs to a session still open, and counts a row left behind otherwise (a
   * session released while a batched step of its batch was running).
   */
  totalKvBytes(): number {
    const slots = new Set<KvSlot>();
    for (const state of this.sessions.values()) {
      const slot = state.resident?.slot ?? state.slot;
      if (slot) slots.add(slot);
    }
    let bytes = 0;
    for (const slot of slots) bytes += kvSlotBytes(slot, this.kvShape);
    return bytes;
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
    await state.busy;
    if (!Number.isInteger(length) || length < 0 || length > state.length) {
      throw new InvalidArgumentError("length", `must be an integer in [0, ${state.length}], got ${length}`);
    }
    // The positions kept stay where they are, in the session's slot or its batch row,
    // unless that leaves the slot more than a block of room (shrinkKvCapacity).
    state.length = length;
    this.shrinkAfterTruncate(state);
  }

  /**
   * Closes the session. A session that shares a batch slot leaves its row there until the
   * batch next changes (its partners' next step forms a new batch, copying each once), so
   * an ordinary close copies nothing. With `freeNow` the batch breaks at once instead (its
   * partners get slots of their own) and the shared slot is given back: for a context
   * manager evicting to stay under its budget, at the cost of one more copy per partner.
   */
  release(id: string, options: { freeNow?: boolean } = {}): boolean {
    const state = this.sessions.get(id);
    if (!state) return false;
    this.sessions.delete(id);
    if (options.freeNow) this.detach(state.resident);
    return true;
  }

  /** Runs a chunk of new positions through the segment for one session. */
  async forward(id: string, input: SegmentInput): Promise<SegmentStep> {
    const state = this.state(id);
    const count = this.validateInput(input, state.length);
    const run = state.busy.then(async () => {
      const { config } = this.model;
      // Checked again now: calls queued ahead of this one may have grown the session.
      this.checkRoom(state.length, count);
      this.detach(state.resident);
      const output = await this.model.run({
        batch: 1,
        seq: count,
        ids: "ids" in input ? BigInt64Array.from(input.ids, BigInt) : undefined,
        hidden: "hidden" in input ? input.hidden : undefined,
        pastLengths: [state.length],
        kv: this.ownSlotFor(state, state.length + count),
      });
      const start = state.length;
      state.length += count;
      return {
        start,
        count,
        hidden: output.hidden,
        taps: output.taps,
        exits: output.exits.map((e) => exitRow(e, 0, this.exitPositions(count), config.vocabSize)),
      };
    });
    state.busy = run.catch(() => undefined);
    return run;
  }

  /**
   * Advances several distinct sessions by one position each in one runtime call. Rows
   * with shorter pasts are right-padded; results come back in the order of `items`.
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
    // Wait for calls already queued on these sessions, then hold them for this batch.
    const ready = Promise.all(states.map((s) => s.busy));
    const run = ready.then(() => this.runBatch(items, states));
    for (const state of states) state.busy = run.catch(() => undefined);
    return run;
  }

  private async runBatch(
    items: { id: string; input: SegmentInput }[],
    states: SessionState[],
  ): Promise<SegmentStep[]> {
    const { config } = this.model;
    const batch = items.length;
    const hiddenSize = config.hiddenSize;
    // Checked again now: calls queued ahead of this batch may have grown its sessions.
    for (const state of states) this.checkRoom(state.length, 1);
    // Rows in the order of the resident batch when these are exactly its sessions.
    const resident = states[0].resident;
    const reuse =
      resident !== undefined &&
      resident.ids.length === batch &&
      states.every((state) => state.resident === resident);
    const order = reuse
      ? items
          .map((_, i) => i)
          .sort((x, y) => resident.ids.indexOf(items[x].id) - resident.ids.indexOf(items[y].id))
      : items.map((_, i) => i);
    const rowItems = order.map((i) => items[i]);
    const rowStates = order.map((i) => states[i]);
    const pastLengths = rowStates.map((s) => s.length);
    const needed = Math.max(...pastLengths) + 1;
    let next: ResidentBatch;
    if (reuse) {
      next = resident;
      if (resident.slot.capacity < needed) resident.slot = this.copyRows(resident.slot, pastLengths, needed);
    } else {
      // Each row straight from where its cache is, its own slot or its row of a batch it
      // leaves, so it is copied once; the batches left are broken up after the run.
      const slot = allocateKvSlot(this.kvShape, batch, kvCapacity(needed, config.maxPositions));
      rowStates.forEach((state, row) => {
        if (state.resident) {
          const from = state.resident.ids.indexOf(rowItems[row].id);
          copyKvRow(state.resident.slot, from, slot, row, state.length, this.kvShape);
        } else if (state.slot) {
          copyKvRow(state.slot, 0, slot, row, state.length, this.kvShape);
        }
      });
      next = { ids: rowItems.map((item) => item.id), slot };
    }
    const first = rowItems[0].input;
    const output = await this.model.run({
      batch,
      seq: 1,
      ids:
        "ids" in first
          ? BigInt64Array.from(rowItems, (item) => BigInt((item.input as { ids: number[] }).ids[0]))
          : undefined,
      hidden:
        "hidden" in first
          ? concatRows(
              rowItems.map((item) => (item.input as { hidden: Float32Array }).hidden),
              hiddenSize,
            )
          : undefined,
      pastLengths,
      kv: next.slot,
    });

    const leftBatches = new Set<ResidentBatch>();
    for (const state of rowStates)
      if (state.resident && state.resident !== next) leftBatches.add(state.resident);
    const steps = rowStates.map((state, row): SegmentStep => {
      const start = state.length;
      state.length += 1;
      state.resident = next;
      state.slot = undefined;
      return {
        start,
        count: 1,
        hidden: output.hidden?.slice(row * hiddenSize, (row + 1) * hiddenSize),
        taps: new Map(
          [...output.taps].map(([k, v]) => [k, v.slice(row * hiddenSize, (row + 1) * hiddenSize)]),
        ),
        exits: output.exits.map((e) => exitRow(e, row, 1, config.vocabSize)),
      };
    });
    // Their other sessions get slots of their own (these ones are no longer resident there).
    for (const left of leftBatches) this.detach(left);
    // Back in the caller's order.
    const byCaller = new Array<SegmentStep>(steps.length);
    order.forEach((callerIndex, row) => (byCaller[callerIndex] = steps[row]));
    return byCaller;
  }

  /**
   * Gives every session still resident in `batch` a slot of its own again (a batch is
   * broken once one of its sessions runs alone or joins another batch).
   */
  private detach(batch: ResidentBatch | undefined): void {
    if (!batch) return;
    const { maxPositions } = this.model.config;
    batch.ids.forEach((id, row) => {
      const member = this.sessions.get(id);
      if (!member || member.resident !== batch) return;
      member.slot = allocateKvSlot(this.kvShape, 1, kvCapacity(member.length + 1, maxPositions));
      copyKvRow(batch.slot, row, member.slot, 0, member.length, this.kvShape);
      member.resident = undefined;
    });
  }

  /**
   * Copies a truncated session's positions into a smaller slot when its slot has more
   * than a block of room left. A session in a batch shrinks the batch's slot, every row
   * keeping its positions, as growing it does; only when the batch's longest row is
   * short enough, since a shorter row's padding up to the longest is what batching costs.
   */
  private shrinkAfterTruncate(state: SessionState): void {
    const { maxPositions } = this.model.config;
    const batch = state.resident;
    if (batch) {
      const lengths = batch.ids.map((id) => this.residentLength(id, batch));
      const capacity = shrinkKvCapacity(batch.slot.capacity, Math.max(...lengths), maxPositions);
      if (capacity !== undefined) batch.slot = this.copyRows(batch.slot, lengths, capacity);
    } else if (state.slot) {
      const capacity = shrinkKvCapacity(state.slot.capacity, state.length, maxPositions);
      if (capacity !== undefined) state.slot = this.copyRows(state.slot, [state.length], capacity);
    }
  }

  /** Positions of `id` held in `batch`: 0 for a row no session of the batch holds any more. */
  private residentLength(id: string, batch: ResidentBatch): number {
    const member = this.sessions.get(id);
    return member?.resident === batch ? member.length : 0;
  }

  /** The session's own slot, grown first if it cannot hold `needed` positions. */
  private ownSlotFor(state: SessionState, needed: number): KvSlot {
    if (!state.slot) {
      state.slot = allocateKvSlot(this.kvShape, 1, kvCapacity(needed, this.model.config.maxPositions));
    } else if (state.slot.capacity < needed) {
      state.slot = this.copyRows(state.slot, [state.length], needed);
    }
    return state.slot;
  }

  /** A copy of `slot` with room for `needed` positions, row r keeping its first lengths[r]. */
  private copyRows(slot: KvSlot, lengths: number[], needed: number): KvSlot {
    const grown = allocateKvSlot(this.kvShape, slot.rows, kvCapacity(needed, this.model.config.maxPositions));
    lengths.forEach((length, row) => copyKvRow(slot, row, grown, row, length, this.kvShape));
    return grown;
  }

  private exitPositions(count: number): number {
    return this.model.spec.positions === "all" ? count : 1;
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

function exitRow(exit: ExitOutput, row: number, positions: number, vocab: number): ExitResult {
  const from = row * positions;
  const to = from + positions;
  return {
    afterLayer: exit.afterLayer,
    token: Array.from(exit.token.subarray(from, to)),
    prob: Array.from(exit.prob.subarray(from, to)),
    margin: Array.from(exit.margin.subarray(from, to)),
    entropy: Array.from(exit.entropy.subarray(from, to)),
    logits: exit.logits?.slice(from * vocab, to * vocab),
  };
}

/** Stacks one [width] row per session into a [rows, width] batch input (a batched step's hidden states). */
function concatRows(rows: Float32Array[], width: number): Float32Array {
  const out = new Float32Array(rows.length * width);
  rows.forEach((row, i) => out.set(row, i * width));
  return out;
}
