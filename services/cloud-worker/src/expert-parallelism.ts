/**
 * Expert parallelism on a cloud worker. The worker runs its sessions' attention and
 * routers (a host-routed segment) and each chosen expert where the expert map places it:
 * in-process when the map gives this worker a replica (or there is no map), otherwise on
 * another worker over Experts/Run, picking among replicas by the map's traffic shares.
 * A replica that fails is skipped for a while and the next one tried; with none left the
 * worker loads the expert itself, so a lost host costs time, not tokens: with the fp32
 * codec an expert's answer is the same bytes wherever it ran.
 *
 * On a new map the worker loads the experts it gained at once and frees those it lost
 * after a handover period, serving both meanwhile, so workers still routing by the older
 * map are answered. It serves another worker's call for an expert it holds or is assigned;
 * any other is refused (FAILED_PRECONDITION), and the caller moves on. Over mutual TLS the
 * worker calls the others with its own certificate (server and client authentication).
 */
import { type ExpertMapRecord, replicasOf } from "@tandem/cluster";
import {
  channelCredentials,
  type ClientTlsFiles,
  errorOfStatus,
  loadTandemProtos,
  type ExpertsClient,
} from "@tandem/proto";
import { InvalidArgumentError, type Logger, UnavailableError } from "@tandem/common";
import {
  type CodecName,
  codecToWire,
  type ExpertStore,
  type ExpertRunner,
  getCodec,
  type HiddenStateCodec,
} from "@tandem/runtime";
import { type ExpertHost, maxExpertRequestBytes } from "./experts-service.ts";

export interface ExpertParallelismOptions {
  /** Codec of expert calls between workers. @default "fp32" (lossless: outputs equal the single-process model's) */
  codec?: CodecName;
  /** Longest wait for another worker's answer before the next replica is tried. @default 2000 */
  deadlineMs?: number;
  /** How long experts a new map took away are still served (and held). @default 3000 */
  handoverMs?: number;
  /** How long a replica that failed a call is passed over. @default 2000 */
  retryAfterMs?: number;
  /** Mutual TLS to the other workers' Experts, with this worker's own certificate. @default plaintext */
  tls?: ClientTlsFiles;
}

export const DEFAULT_EXPERT_PARALLELISM_OPTIONS: Required<Omit<ExpertParallelismOptions, "tls">> = {
  codec: "fp32",
  deadlineMs: 2000,
  handoverMs: 3000,
  retryAfterMs: 2000,
};

/** The worker and model facts expert calls must agree on. */
export interface ExpertParallelIdentity {
  workerId: string;
  weightsHash: string;
  hiddenSize: number;
  /** First layer of the worker's segment: expert-map ids count from it. */
  split: number;
  numLayers: number;
  numExperts: number;
}

export interface ExpertParallelismCounters {
  /** Expert runs in this process, and calls answered by other workers. */
  localRuns: number;
  remoteCalls: number;
  /** Calls to another worker that failed (each then tried elsewhere). */
  failedCalls: number;
  /** Runs made here because no replica answered. */
  fallbacks: number;
  /** Payload bytes of the answered calls: the rows sent, and the outputs received. */
  bytesSent: number;
  bytesReceived: number;
}

export class ExpertParallelism {
  private local?: ExpertStore;
  private map?: ExpertMapRecord;
  private readonly options: Required<Omit<ExpertParallelismOptions, "tls">> &
    Pick<ExpertParallelismOptions, "tls">;
  private readonly codec: HiddenStateCodec;
  private readonly clients = new Map<string, ExpertsClient>();
  /** node id → when it may be tried again after a failed call. */
  private readonly downUntil = new Map<string, number>();
  /** `${mapId}:${nodeId}` → rows sent there, for the smooth weighted choice of replicas. */
  private readonly sentRows = new Map<string, number>();
  private readonly handovers = new Set<NodeJS.Timeout>();
  readonly counters: ExpertParallelismCounters = {
    localRuns: 0,
    remoteCalls: 0,
    failedCalls: 0,
    fallbacks: 0,
    bytesSent: 0,
    bytesReceived: 0,
  };

  constructor(
    private readonly identity: ExpertParallelIdentity,
    options: ExpertParallelismOptions,
    private readonly log: Logger,
  ) {
    this.options = { ...DEFAULT_EXPERT_PARALLELISM_OPTIONS, ...options };
    if (!(this.options.deadlineMs > 0))
      throw new InvalidArgumentError("expertDeadlineMs", `must be > 0, got ${this.options.deadlineMs}`);
    this.codec = getCodec(this.options.codec);
  }

  /** For HostRoutedMoeOptions.expertRunner: where the model's experts run. */
  readonly runnerFor = (local: ExpertStore): ExpertRunner => {
    this.local = local;
    return (layer, expert, input, rows) => this.run(layer, expert, input, rows);
  };

  /** The expert map's id of an expert of the worker's layers. */
  mapId(layer: number, expert: number): number {
    return (layer - this.identity.split) * this.identity.numExperts + expert;
  }

  /** What the Experts service answers from. */
  host(): ExpertHost {
    const { workerId, weightsHash, hiddenSize, split, numLayers, numExperts } = this.identity;
    return {
      workerId,
      weightsHash,
      hiddenSize,
      fromLayer: split,
      toLayer: numLayers,
      numExperts,
      serves: (layer, expert) => this.serves(layer, expert),
      run: (layer, expert, input, rows) => this.localCache().run(layer, expert, input, rows),
    };
  }

  /** The experts loaded here, by expert-map id: what the heartbeat reports. */
  heldExperts(): number[] {
    return (this.local?.residentExperts() ?? [])
      .map(([layer, expert]) => this.mapId(layer, expert))
      .sort((a, b) => a - b);
  }

  /** A new expert map: load what it gives this worker, free what it took after the handover. */
  onExpertMap(map: ExpertMapRecord, assigned: Map<number, number>): void {
    this.map = map;
    const local = this.local;
    if (!local) return;
    const { split, numExperts } = this.identity;
    const layerOf = (id: number) => [split + Math.floor(id / numExperts), id % numExperts] as const;
    for (const id of assigned.keys()) {
      const [layer, expert] = layerOf(id);
      if (layer >= this.identity.numLayers) continue;
      local
        .hold(layer, expert)
        .catch((error: Error) => this.log.warn({ layer, expert, err: error.message }, "expert load failed"));
    }
    const lost = local
      .residentExperts()
      .filter(([layer, expert]) => !assigned.has(this.mapId(layer, expert)));
    if (lost.length === 0) return;
    const timer = setTimeout(() => {
      this.handovers.delete(timer);
      for (const [layer, expert] of lost) {
        // A later map may have given it back meanwhile.
        if (this.assignedHere(layer, expert)) continue;
        local.drop(layer, expert).catch(() => undefined);
      }
      this.log.info({ freed: lost.length }, "experts handed over to other workers freed");
    }, this.options.handoverMs);
    timer.unref();
    this.handovers.add(timer);
  }

  close(): void {
    for (const timer of this.handovers) clearTimeout(timer);
    this.handovers.clear();
    for (const client of this.clients.values()) client.close();
    this.clients.clear();
  }

  private localCache(): ExpertStore {
    if (!this.local) throw new Error("expert parallelism used before its model was loaded");
    return this.local;
  }

  /** No map: every expert is this worker's. With one: those it assigns here, and those still held. */
  private serves(layer: number, expert: number): boolean {
    return !this.map || this.assignedHere(layer, expert) || this.localCache().isResident(layer, expert);
  }

  private assignedHere(layer: number, expert: number): boolean {
    const holders = this.map?.experts[String(this.mapId(layer, expert))];
    return holders?.includes(this.identity.workerId) ?? false;
  }

  private async run(layer: number, expert: number, input: Float32Array, rows: number): Promise<Float32Array> {
    const local = this.localCache();
    const replicas = this.map ? replicasOf(this.map, this.mapId(layer, expert)) : [];
    if (replicas.length === 0 || replicas.some((r) => r.nodeId === this.identity.workerId)) {
      this.counters.localRuns++;
      return local.run(layer, expert, input, rows);
    }
    for (const replica of this.byShare(this.mapId(layer, expert), replicas)) {
      try {
        const output = await this.call(replica.endpoint, layer, expert, input, rows);
        this.counters.remoteCalls++;
        const key = `${this.mapId(layer, expert)}:${replica.nodeId}`;
        this.sentRows.set(key, (this.sentRows.get(key) ?? 0) + rows);
        return output;
      } catch (error) {
        this.counters.failedCalls++;
        this.downUntil.set(replica.nodeId, Date.now() + this.options.retryAfterMs);
        this.log.warn(
          { layer, expert, worker: replica.nodeId, err: (error as Error).message },
          "expert call failed: trying the next replica",
        );
      }
    }
    // No replica answered: the expert runs here (loaded on first use).
    this.counters.fallbacks++;
    this.counters.localRuns++;
    return local.run(layer, expert, input, rows);
  }

  /**
   * The replicas to try, in order: those not recently failed, the one furthest below its
   * share of the rows sent so far first (smooth weighted round robin, deterministic).
   */
  private byShare(
    mapId: number,
    replicas: { nodeId: string; endpoint?: string; share: number }[],
  ): { nodeId: string; endpoint: string }[] {
    const now = Date.now();
    const usable = replicas.filter(
      (r): r is { nodeId: string; endpoint: string; share: number } =>
        r.endpoint !== undefined && (this.downUntil.get(r.nodeId) ?? 0) <= now,
    );
    const total = usable.reduce((sum, r) => sum + (this.sentRows.get(`${mapId}:${r.nodeId}`) ?? 0), 0) + 1;
    const deficit = (r: { nodeId: string; share: number }) =>
      (this.sentRows.get(`${mapId}:${r.nodeId}`) ?? 0) / total - r.share;
    return usable.sort((a, b) => deficit(a) - deficit(b) || a.nodeId.localeCompare(b.nodeId));
  }

  private call(
    endpoint: string,
    layer: number,
    expert: number,
    input: Float32Array,
    rows: number,
  ): Promise<Float32Array> {
    const { hiddenSize, weightsHash } = this.identity;
    const client = this.clientOf(endpoint);
    const payload = this.codec.encode(input, rows, hiddenSize);
    return new Promise((resolve, reject) => {
      client.Run(
        {
          weightsHash,
          layer,
          expert,
          rows,
          hiddenSize,
          codec: codecToWire(this.codec.name),
          payload: Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength),
        },
        { deadline: Date.now() + this.options.deadlineMs },
        (error, reply) => {
          if (error) return reject(errorOfStatus(error, endpoint));
          // A peer's answer is checked like any input: a bad one is that replica failing,
          // never an exception thrown out of this callback.
          const bytes = reply!.payload as Buffer;
          let output: Float32Array;
          try {
            output = this.codec.decode(bytes, rows, hiddenSize);
          } catch (decodeError) {
            return reject(
              new UnavailableError(
                `${endpoint} answered an invalid expert output: ${(decodeError as Error).message}`,
              ),
            );
          }
          this.counters.bytesSent += payload.byteLength;
          this.counters.bytesReceived += bytes.length;
          resolve(output);
        },
      );
    });
  }

  private clientOf(endpoint: string): ExpertsClient {
    let client = this.clients.get(endpoint);
    if (!client) {
      const bytes = maxExpertRequestBytes(this.identity.hiddenSize);
      client = new (loadTandemProtos().tandem.v1.Experts)(endpoint, channelCredentials(this.options.tls), {
        "grpc.max_send_message_length": bytes,
        "grpc.max_receive_message_length": bytes,
      });
      this.clients.set(endpoint, client);
    }
    return client;
  }
}
